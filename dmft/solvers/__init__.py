"""Infinite-width solvers: lazy kernel gradient flow and the DMFT of the feature-learning limit."""

from __future__ import annotations

from .._precision import require_float64
from ..spec import Spec
from ._deep_linear import DeepLinearDMFT, DepthLimit, infinite_depth_limit
from ._deep_nonlinear import MonteCarloDMFT
from ._dmft import auto_method_name, dmft_methods, method_from_spec, solve_dmft
from ._lazy import ClosedForm, KernelODE, lazy_closed_form, lazy_method_from_table, solve_lazy
from ._solution import Solution
from ._two_layer import TwoLayerDMFT, TwoLayerMoments


def solve(spec: Spec) -> Solution:
    """The infinite-width training dynamics of `spec`: lazy for "ntk", DMFT for "mup".

    Method options come from the spec's ``[solver]`` table. Every method object of this package
    (`ClosedForm`, `KernelODE`, `TwoLayerDMFT`, `TwoLayerMoments`, `DeepLinearDMFT`,
    `MonteCarloDMFT`) is immutable, has ``from_table(table)`` and ``solve(spec) -> Solution``.
    """
    require_float64("dmft.solve")
    if spec.architecture.parameterization == "ntk":
        return solve_lazy(spec)
    return solve_dmft(spec)


__all__ = [
    "ClosedForm",
    "DeepLinearDMFT",
    "DepthLimit",
    "KernelODE",
    "MonteCarloDMFT",
    "Solution",
    "TwoLayerDMFT",
    "TwoLayerMoments",
    "auto_method_name",
    "dmft_methods",
    "infinite_depth_limit",
    "lazy_closed_form",
    "lazy_method_from_table",
    "method_from_spec",
    "solve",
    "solve_dmft",
    "solve_lazy",
]
