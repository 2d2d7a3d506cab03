"""Lazy (kernel) gradient flow: the infinite-width limit of NTK-parameterized training.

With the NTK K frozen at its initialization value and f(0) = 0 (docs/conventions.md §2),

    ∂t f = (1/P) K (y − f)          ⇒  f(t)  = (I − e^{−K t/P}) y
    ∂t f_* = (1/P) K_{*X} (y − f)    ⇒  f_*(t) = K_{*X} K^{-1} (I − e^{−K t/P}) y.

`ClosedForm` evaluates these through the eigendecomposition K = V Λ Vᵀ, using
(1 − e^{−λt/P})/λ = −expm1(−λt/P)/λ (→ t/P as λ → 0) so that singular kernels are handled
exactly. `KernelODE` integrates the same flow with Diffrax, as an independent check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import InputError, SolveError
from .._ode import integrate_flow
from .._options import check_ode_options, check_training_rule, options_from_table
from .._precision import require_float64
from ..kernels import layer_kernels
from ..spec import Spec
from ._common import LOSS
from ._solution import Solution, diagnostics


@dataclasses.dataclass(frozen=True)
class ClosedForm:
    """Exact lazy dynamics from the eigendecomposition of the NTK (``solver.method =
    "closed_form"``, the default)."""

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ClosedForm:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "closed_form")

    def solve(self, spec: Spec) -> Solution:
        """The lazy learning curves of `spec` (its γ0 → 0 limit for a "mup" spec)."""
        return _solve(spec, self, lazy_closed_form)


@dataclasses.dataclass(frozen=True)
class KernelODE:
    """Integrate ∂t f = (1/P) K (y − f) with Diffrax (Tsit5 and an adaptive PID controller)
    (``solver.method = "ode"``)."""

    rtol: float = 1e-12
    atol: float = 1e-12
    max_steps: int = 1_000_000

    def __post_init__(self):
        check_ode_options(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> KernelODE:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "ode")

    def solve(self, spec: Spec) -> Solution:
        """The lazy learning curves of `spec` by the ODE solve."""
        return _solve(spec, self, lambda ntk, ntk_test_train, y, times: _kernel_ode(
            ntk, ntk_test_train, y, times, self.rtol, self.atol, self.max_steps))


LazyMethod = ClosedForm | KernelODE
_METHODS = {"closed_form": ClosedForm, "ode": KernelODE}


def lazy_method_from_table(table: Mapping[str, Any]) -> LazyMethod:
    """The lazy method named by a spec's ``[solver]`` table (``method = "closed_form" | "ode"``)."""
    name = table.get("method", "closed_form")
    if not isinstance(name, str) or name not in _METHODS:
        raise InputError(
            f"solver.method = {name!r} is not a lazy (ntk) method; use one of {sorted(_METHODS)}"
        )
    return _METHODS[name].from_table(table)


@jax.jit
def lazy_closed_form(
    ntk: Float[Array, "P P"],
    ntk_test_train: Float[Array, "Q P"],
    y: Float[Array, " P"],
    times: Float[Array, " T"],
) -> tuple[Float[Array, "T P"], Float[Array, "T Q"]]:
    """f(t) = (I − e^{−Kt/P}) y and f_*(t) = K_{*X} K⁻¹ f(t) at `times`, from the
    eigendecomposition of K (exact for singular K; cost O(P³ + T·P·(P + Q)))."""
    num_train = y.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(ntk)
    eigenvalues = jnp.clip(eigenvalues, 0.0)  # round-off can leave PSD kernels slightly negative
    y_eigen = eigenvectors.T @ y
    rate_t = eigenvalues[None, :] * times[:, None] / num_train  # (T, P)
    decayed = -jnp.expm1(-rate_t)  # 1 − e^{−λt/P}
    f_train = (decayed * y_eigen) @ eigenvectors.T
    safe = jnp.where(eigenvalues > 0, eigenvalues, 1.0)
    integral = jnp.where(eigenvalues > 0, decayed / safe, times[:, None] / num_train)
    f_test = (integral * y_eigen) @ (ntk_test_train @ eigenvectors).T
    return f_train, f_test


def _kernel_ode(ntk, ntk_test_train, y, times, rtol, atol, max_steps):
    num_train = y.shape[0]

    def vector_field(t, state, args):
        f_train, f_test = state
        residual = LOSS.error_signal(f_train, y) / num_train
        return ntk @ residual, ntk_test_train @ residual

    zeros = (jnp.zeros_like(y), jnp.zeros(ntk_test_train.shape[0], y.dtype))
    solution = integrate_flow(vector_field, zeros, times, rtol, atol, max_steps)
    if not diffrax.is_successful(solution.result):
        raise SolveError(f"lazy ODE solve failed: {solution.result}")
    return solution.ys


def solve_lazy(spec: Spec, method: LazyMethod | None = None) -> Solution:
    """Lazy learning curves of `spec`: train/test predictions under the frozen initial NTK.

    For a "mup" spec this is its γ0 → 0 limit. ``method`` defaults to the spec's
    ``[solver]`` table (closed form unless it says ``method = "ode"``); ``solve_lazy(spec, m)`` is
    ``m.solve(spec)``.
    """
    require_float64("dmft.solvers.solve_lazy")
    if method is None:
        method = lazy_method_from_table(spec.solver) if spec.architecture.parameterization == "ntk" \
            else ClosedForm()
    return method.solve(spec)


def _solve(spec: Spec, method: LazyMethod, integrate) -> Solution:
    """The frozen-NTK flow of `spec` by ``integrate(ntk, ntk_test_train, y, times)``."""
    require_float64(f"the lazy solve ({type(method).__name__})")
    check_training_rule(spec, method, f"the lazy method {type(method).__name__}")
    start = time.perf_counter()
    arch, data = spec.architecture, spec.data
    output_layer = arch.hidden_layers + 1
    ntk = layer_kernels(arch, data.x_train, layers=(output_layer,), with_derivative=False).ntk[-1]
    x_test = data.x_test if data.x_test is not None else data.x_train[:0]
    ntk_test_train = layer_kernels(arch, x_test, data.x_train, layers=(output_layer,),
                                   with_derivative=False).ntk[-1] \
        if data.num_test else np.zeros((0, data.num_train))
    times = np.asarray(spec.training.times)
    f_train, f_test = integrate(
        jnp.asarray(ntk), jnp.asarray(ntk_test_train), jnp.asarray(data.y_train), jnp.asarray(times)
    )
    f_train, f_test = np.asarray(f_train), np.asarray(f_test)
    if not (np.all(np.isfinite(f_train)) and np.all(np.isfinite(f_test))):
        raise SolveError("lazy solve produced non-finite predictions (is the NTK finite?)")
    num_times = times.shape[0]
    has_test = data.num_test > 0
    return Solution(
        t=times,
        f_train=f_train,
        ntk=np.broadcast_to(ntk, (num_times, *ntk.shape)),
        f_test=f_test if has_test else None,
        ntk_test_train=np.broadcast_to(ntk_test_train, (num_times, *ntk_test_train.shape))
        if has_test else None,
        diagnostics=diagnostics(type(method).__name__, method, start),
    )
