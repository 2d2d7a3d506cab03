"""The model of a network: layers composed into a `Network`, a `Loss` and the training `Dynamics`.

    net = serial(Dense(1.5, 0.1), Elementwise("relu"), Dense(1.5, 0.1), parameterization=NTK())
    net = mlp(spec.architecture)                # the spec's MLP shorthand, the same object

Each layer kind defines in one place its finite-width forward map, its kernel map (a SymPy
expression, lowered to JAX) and its term of the NTK; `dmft.kernels`, `dmft.sampler`, the DMFT
solvers and `dmft derive` all take the network from here (docs/architecture.md).
"""

from ._dynamics import SGD, Dynamics, GradientDescent, GradientFlow
from ._layers import (
    STATE_SYMBOLS,
    Dense,
    Elementwise,
    KernelMap,
    KernelState,
    Residual,
    lower_kernel_map,
)
from ._loss import MSE, CrossEntropy, Loss, loss_from_name
from ._network import Network, as_network, mlp, serial
from ._parameterization import NTK, MuP, Parameterization

__all__ = [
    "MSE",
    "NTK",
    "SGD",
    "STATE_SYMBOLS",
    "CrossEntropy",
    "Dense",
    "Dynamics",
    "Elementwise",
    "GradientDescent",
    "GradientFlow",
    "KernelMap",
    "KernelState",
    "Loss",
    "MuP",
    "Network",
    "Parameterization",
    "Residual",
    "as_network",
    "loss_from_name",
    "lower_kernel_map",
    "mlp",
    "serial",
]
