"""Infinite-width solvers: lazy kernel gradient flow and the DMFT of the feature-learning limit."""

from __future__ import annotations

from .._errors import InputError
from ..spec import Spec
from ._lazy import ClosedForm, KernelODE, lazy_method_from_table, solve_lazy
from ._solution import Solution


def solve(spec: Spec) -> Solution:
    """The infinite-width training dynamics of `spec`: lazy for "ntk", DMFT for "mup".

    Method options come from the spec's ``[solver]`` table.
    """
    if spec.architecture.parameterization == "ntk":
        return solve_lazy(spec)
    if spec.architecture.residual_scale is not None:
        raise InputError(
            "architecture.residual_scale: the residual muP DMFT is derived (dmft derive) but not "
            "solved yet; use parameterization = \"ntk\" for its lazy limit"
        )
    from ._dmft import solve_dmft

    return solve_dmft(spec)


__all__ = ["ClosedForm", "KernelODE", "Solution", "lazy_method_from_table", "solve", "solve_lazy"]
