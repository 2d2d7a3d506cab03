"""dmft: wide neural networks from first principles.

From one architecture spec: infinite-width kernels (NNGP, NTK), lazy and feature-learning (DMFT)
learning curves, the equations behind them, and checks against real finite-width networks.

Float64 is not switched on at import; entry points (the CLI, tests, examples) enable it with
``jax.config.update("jax_enable_x64", True)``.
"""

from ._errors import DmftError, InputError, SolveError
from ._progress import set_progress
from .activations import Activation, get_activation, known_activations
from .kernels import LayerKernels, kernels, layer_kernels
from .sampler import compare, sample
from .solvers import Solution, solve, solve_dmft, solve_lazy
from .spec import Architecture, Data, Spec, Training, default_spec, load_spec
from .symbolic import derive, verify
from .sweep import sweep

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Architecture",
    "Data",
    "DmftError",
    "InputError",
    "LayerKernels",
    "Solution",
    "SolveError",
    "Spec",
    "Training",
    "compare",
    "default_spec",
    "derive",
    "get_activation",
    "kernels",
    "known_activations",
    "layer_kernels",
    "load_spec",
    "sample",
    "set_progress",
    "solve",
    "solve_dmft",
    "solve_lazy",
    "sweep",
    "verify",
]
