"""Lazy (kernel) gradient flow: the infinite-width limit of NTK-parameterized training.

With the NTK K frozen at its initialization value and f(0) = 0 (docs/conventions.md §2),

    ∂t f = (1/P) K (y − f)          ⇒  f(t)  = (I − e^{−K t/P}) y
    ∂t f_* = (1/P) K_{*X} (y − f)    ⇒  f_*(t) = K_{*X} K^{-1} (I − e^{−K t/P}) y.

`ClosedForm` evaluates these through the eigendecomposition K = V Λ Vᵀ, using
(1 − e^{−λt/P})/λ = −expm1(−λt/P)/λ (→ t/P as λ → 0) so that singular kernels are handled
exactly. `KernelODE` integrates the same flow with Diffrax, as an independent check.

Discrete rules (docs/conventions.md §2a), step k at t = k·η0, x = η0λ/P per eigenvalue λ:

    GD:   f_k = (I − (I − η0K/P)^k) y,   f_{*,k} = K_{*X} V diag(Σ_{j<k} (1 − x)^j η0/P) Vᵀ y
          with Σ_{j<k} (1 − x)^j η0/P = (1 − (1 − x)^k)/λ → kη0/P as λ → 0 (`lazy_gd_closed_form`);
    SGD:  f_{k+1} = f_k + (η0/P) K (ω_k ⊙ (y − f_k)), likewise f_* with K_{*X}, the exact recursion
          over the steps with the batch weights ω of `dmft.network.SGD` (`lazy_sgd_recursion`).

GD is unstable once η0 λ_max/P > 2 (|1 − x| > 1): the run is then a `SolveError` naming the first
step whose loss passes the divergence threshold of `dmft._divergence`.

Several outputs and cross-entropy (docs/conventions.md §2b). The NTK over (point, output) pairs is
K ⊗ I_C, so with C outputs y and f are (P, C) and every formula above acts on each column:

    MSE:            the closed forms (flow, GD) column by column, each column exactly the scalar
                    problem of that column; SGD by the same recursion on the (P, C) state;
    cross-entropy:  ∂t f = (1/P) K (y − softmax(f)), ∂t f_* = (1/P) K_{*X} (y − softmax(f)) with no
                    closed form: the flow by the Diffrax kernel ODE (`ClosedForm` at the tolerances
                    of `KernelODE`'s defaults), GD and SGD by the exact step recursion
                    f_{k+1} = f_k + (η0/P) K (ω_k ⊙ (y − softmax(f_k))) (ω = 1 for GD).

The reported ``ntk`` is the (T, P, P) scalar kernel K; the full kernel is K ⊗ I_C.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._divergence import DIVERGENCE_FACTOR, check_not_diverged, first_divergent_index
from .._errors import InputError, SolveError
from .._ode import integrate_flow
from .._options import check_ode_options, check_training_rule, options_from_table
from .._precision import require_float64
from ..kernels import layer_kernels
from ..network import loss_from_name
from ..spec import Spec
from ._common import LOSS
from ._solution import Solution, diagnostics


@dataclasses.dataclass(frozen=True)
class ClosedForm:
    """Exact lazy dynamics from the eigendecomposition of the NTK (``solver.method =
    "closed_form"``, the default): for MSE gradient flow and GD in closed form (per output), SGD
    by the exact recursion over its steps; for cross-entropy the flow by the kernel ODE at
    `KernelODE`'s default tolerances and GD / SGD by the exact step recursion (module
    docstring)."""

    optimizers = ("flow", "gd", "sgd")
    losses = ("mse", "cross_entropy")
    multi_output = True

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ClosedForm:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "closed_form")

    def solve(self, spec: Spec) -> Solution:
        """The lazy learning curves of `spec` (its γ0 → 0 limit for a "mup" spec)."""
        dynamics = spec.training.dynamics
        loss = loss_from_name(spec.training.loss)
        if dynamics.name == "flow":
            if loss.name == "cross_entropy":  # no closed form: the kernel ODE, tight tolerances
                ode = KernelODE()
                return _solve(spec, self, lambda ntk, ntk_test_train, y, times: _kernel_ode(
                    ntk, ntk_test_train, y, times, ode.rtol, ode.atol, ode.max_steps, loss))
            return _solve(spec, self, lambda ntk, ntk_test_train, y, times: _by_column(
                lazy_closed_form, ntk, ntk_test_train, y, times))
        steps = np.asarray(spec.training.steps, dtype=np.int64)
        eta = dynamics.learning_rate
        if dynamics.name == "gd" and loss.name == "mse":
            def integrate(ntk, ntk_test_train, y, times):
                f_train, f_test = _by_column(lazy_gd_closed_form, ntk, ntk_test_train, y,
                                             jnp.asarray(steps), eta)
                return f_train, f_test, lambda index: _first_divergent_step(ntk, y, steps, eta,
                                                                            index)
        else:  # SGD, and GD of cross-entropy: the exact step recursion
            def integrate(ntk, ntk_test_train, y, times):
                num_steps = max(int(steps[-1]), 1)
                weights = np.ones((num_steps, y.shape[0])) if dynamics.name == "gd" \
                    else dynamics.batch_weights(y.shape[0], num_steps)
                f_train, f_test, bad = lazy_sgd_recursion(
                    ntk, ntk_test_train, y, jnp.asarray(weights), jnp.asarray(steps), eta, loss)
                rows = y.ndim == 2
                return f_train, f_test, lambda index: (
                    int(bad), float(loss.value(np.asarray(f_train)[-1], np.asarray(y), rows=rows)))
        return _solve(spec, self, integrate)


@dataclasses.dataclass(frozen=True)
class KernelODE:
    """Integrate ∂t f = (1/P) K Δ(f) with Diffrax (Tsit5 and an adaptive PID controller)
    (``solver.method = "ode"``), Δ = y − f for MSE and y − softmax(f) for cross-entropy, f (P, C)
    for C outputs."""

    rtol: float = 1e-12
    atol: float = 1e-12
    max_steps: int = 1_000_000
    optimizers = ("flow",)  # an ODE of the flow: GD and SGD are ClosedForm's
    losses = ("mse", "cross_entropy")
    multi_output = True

    def __post_init__(self):
        check_ode_options(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> KernelODE:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "ode")

    def solve(self, spec: Spec) -> Solution:
        """The lazy learning curves of `spec` by the ODE solve."""
        loss = loss_from_name(spec.training.loss)
        return _solve(spec, self, lambda ntk, ntk_test_train, y, times: _kernel_ode(
            ntk, ntk_test_train, y, times, self.rtol, self.atol, self.max_steps, loss))


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


def _by_column(solve, ntk, ntk_test_train, y, *args):
    """``solve(ntk, ntk_test_train, y, *args)`` for targets (P,), or for each column of (P, C)
    targets separately, stacked on a last output axis: each column is then exactly its scalar
    problem (the NTK over outputs is K ⊗ I_C)."""
    if y.ndim == 1:
        return solve(ntk, ntk_test_train, y, *args)
    columns = [solve(ntk, ntk_test_train, y[:, c], *args) for c in range(y.shape[1])]
    return tuple(jnp.stack(parts, axis=-1) for parts in zip(*columns))


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


def _power_sum(eigenvalues, steps, learning_rate, num_train):
    """(1 − (1 − x)^k, (1 − (1 − x)^k)/λ) for x = η0λ/P, shapes (T, P); the second is
    Σ_{j<k} (1 − x)^j η0/P, equal to kη0/P at λ = 0. Accurate for small x (log1p/expm1) and
    exact in sign for x > 1 ((1 − x)^k alternates)."""
    x = eigenvalues[None, :] * learning_rate / num_train  # (1, P)
    k = steps[:, None].astype(eigenvalues.dtype)  # (T, 1)
    odd = (steps[:, None] % 2) == 1
    small = x < 1.0
    # 0 < x < 1: 1 − (1 − x)^k = −expm1(k log1p(−x)); x > 1: 1 − (−1)^k |1 − x|^k
    log_base = jnp.where(small, jnp.log1p(-jnp.where(small, x, 0.0)),
                         jnp.log(jnp.abs(jnp.where(small, 2.0, x) - 1.0)))
    power = jnp.where(k == 0, 0.0, k * log_base)
    decayed_small = -jnp.expm1(power)
    decayed_large = 1.0 - jnp.where(odd, -1.0, 1.0) * jnp.exp(power)
    decayed = jnp.where(small, decayed_small, decayed_large)
    decayed = jnp.where((x == 1.0) & (k > 0), 1.0, decayed)  # (1 − x)^k = 0 for k >= 1
    safe = jnp.where(eigenvalues > 0, eigenvalues, 1.0)[None, :]
    summed = jnp.where(eigenvalues[None, :] > 0, decayed / safe, k * learning_rate / num_train)
    return decayed, summed


@jax.jit
def lazy_gd_closed_form(
    ntk: Float[Array, "P P"],
    ntk_test_train: Float[Array, "Q P"],
    y: Float[Array, " P"],
    steps: Int[Array, " T"],
    learning_rate: float,
) -> tuple[Float[Array, "T P"], Float[Array, "T Q"]]:
    """Lazy full-batch GD after `steps` steps of η0 = `learning_rate` (module docstring):
    f_k = (I − (I − η0K/P)^k) y and f_{*,k} = K_{*X} Σ_{j<k} (η0/P)(y − f_j), from the
    eigendecomposition of K (exact for singular K; cost O(P³ + T·P·(P + Q)))."""
    num_train = y.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(ntk)
    eigenvalues = jnp.clip(eigenvalues, 0.0)  # round-off can leave PSD kernels slightly negative
    y_eigen = eigenvectors.T @ y
    decayed, summed = _power_sum(eigenvalues, steps, learning_rate, num_train)
    f_train = (decayed * y_eigen) @ eigenvectors.T
    f_test = (summed * y_eigen) @ (ntk_test_train @ eigenvectors).T
    return f_train, f_test


def march_steps(step, state, steps, save, diverged=None):
    """Apply ``state = step(state, k)`` for k = 0, 1, ... and return ``save(state)`` stacked at
    each of the sorted step counts `steps` (T,), under jit: cost O(max steps) calls of `step`.

    With `diverged(state) -> bool` the march stops at the first state that diverged and also
    returns the step count k at which it did (−1 if none); the saves after it repeat that state.
    """
    stop = (lambda state: False) if diverged is None else diverged

    def segment(carry, target):
        def cond(carry):
            _, k, bad = carry
            return (k < target) & (bad < 0)

        def body(carry):
            state, k, bad = carry
            state = step(state, k)
            return state, k + 1, jnp.where(stop(state), k + 1, bad)

        carry = jax.lax.while_loop(cond, body, carry)
        return carry, save(carry[0])

    init = (state, jnp.zeros((), steps.dtype), jnp.where(stop(state), 0, -1).astype(steps.dtype))
    (_, _, bad), saved = jax.lax.scan(segment, init, steps)
    return (saved, bad) if diverged is not None else saved


@functools.partial(jax.jit, static_argnames="loss")
def lazy_sgd_recursion(
    ntk: Float[Array, "P P"],
    ntk_test_train: Float[Array, "Q P"],
    y: Float[Array, " P"],
    weights: Float[Array, "K P"],
    steps: Int[Array, " T"],
    learning_rate: float,
    loss=LOSS,
) -> tuple[Float[Array, "T P"], Float[Array, "T Q"], Int[Array, ""]]:
    """Lazy SGD: f_{k+1} = f_k + (η0/P) K (ω_k ⊙ Δ(f_k)), f_* likewise through K_{*X}, with
    the batch weights ω (K, P) of `dmft.network.SGD.batch_weights` (ones for GD) and the error
    signal Δ of `loss` (y − f for MSE, y − softmax(f) for cross-entropy; y and f (P, C) for C
    outputs); f and f_* after each of `steps` steps, and the first step whose loss passed the
    divergence threshold (−1 if none; the march stops there and later saves repeat it). Exact
    recursion, cost O(K·P·(P + Q)·C)."""
    num_train = y.shape[0]
    scale = learning_rate / num_train
    rows = y.ndim == 2

    def step(state, k):
        f_train, f_test = state
        omega = weights[k][:, None] if rows else weights[k]
        signal = omega * loss.error_signal(f_train, y, rows=rows)
        return f_train + scale * (ntk @ signal), f_test + scale * (ntk_test_train @ signal)

    threshold = DIVERGENCE_FACTOR * jnp.maximum(loss.value(jnp.zeros_like(y), y, rows=rows),
                                                1e-300)

    def diverged(state):
        value = loss.value(state[0], y, rows=rows)
        return ~jnp.isfinite(value) | (value > threshold)

    state = (jnp.zeros_like(y), jnp.zeros((ntk_test_train.shape[0], *y.shape[1:]), y.dtype))
    saved, bad = march_steps(step, state, steps, lambda state: state, diverged)
    return saved[0], saved[1], bad


def _first_divergent_step(ntk, y, steps, learning_rate, index):
    """The first GD step in (steps[index − 1], steps[index]] whose lazy loss passes the divergence
    threshold, and that loss: the closed-form loss per step over the eigenmodes, in chunks."""
    num_train = y.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(ntk))
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    y = np.asarray(y)
    weight = (eigenvectors.T @ y) ** 2 / (2 * num_train)
    if y.ndim == 2:  # C outputs: each column decays by the same modes
        weight = weight.sum(axis=1)
    base = np.abs(1.0 - learning_rate * eigenvalues / num_train)
    reference = LOSS.value(np.zeros_like(y), y, rows=y.ndim == 2)
    first = int(steps[index - 1]) + 1 if index > 0 else 0
    last = int(steps[index])
    for start in range(first, last + 1, 4096):
        k = np.arange(start, min(start + 4096, last + 1))
        with np.errstate(over="ignore", invalid="ignore"):
            losses = (base[None, :] ** (2 * k[:, None]) * weight[None, :]).sum(axis=1)
        hit = first_divergent_index(losses, reference)
        if hit is not None:
            return int(k[hit]), float(losses[hit])
    return last, float("inf")


def _kernel_ode(ntk, ntk_test_train, y, times, rtol, atol, max_steps, loss=LOSS):
    """∂t f = (1/P) K Δ(f), ∂t f_* = (1/P) K_{*X} Δ(f) from f = f_* = 0 with Diffrax; f (P,) or
    (P, C), Δ the error signal of `loss`."""
    num_train = y.shape[0]
    rows = y.ndim == 2

    def vector_field(t, state, args):
        f_train, f_test = state
        residual = loss.error_signal(f_train, y, rows=rows) / num_train
        return ntk @ residual, ntk_test_train @ residual

    zeros = (jnp.zeros_like(y), jnp.zeros((ntk_test_train.shape[0], *y.shape[1:]), y.dtype))
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


def _check_lazy_divergence(spec: Spec, method: LazyMethod, f_train, locate) -> None:
    """SolveError naming the first diverged step and its loss (`dmft._divergence`), where
    ``locate(index)`` gives (step, loss) for the first diverged saved index."""
    y = np.asarray(spec.data.y_train)
    loss, rows = loss_from_name(spec.training.loss), y.ndim == 2
    with np.errstate(over="ignore", invalid="ignore"):
        losses = np.asarray(loss.value(f_train, y, rows=rows))
    reference = float(loss.value(np.zeros_like(y), y, rows=rows))
    index = first_divergent_index(losses, reference)
    if index is None:
        return
    step, loss = locate(index)
    training = spec.training
    check_not_diverged([loss], [step * training.learning_rate], reference,
                       f"the lazy {training.optimizer.upper()} solve ({type(method).__name__})",
                       steps=[step])
    # a saved loss passed the threshold
    raise SolveError(f"the lazy {training.optimizer.upper()} solve diverged by step "
                     f"{training.steps[index]}", step=training.steps[index])


def _solve(spec: Spec, method: LazyMethod, integrate) -> Solution:
    """The frozen-NTK dynamics of `spec` by ``integrate(ntk, ntk_test_train, y, times)``, which
    returns (f_train, f_test) for the flow and (f_train, f_test, locate) for discrete rules
    (`_check_lazy_divergence`)."""
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
    f_train, f_test, *locate = integrate(
        jnp.asarray(ntk), jnp.asarray(ntk_test_train), jnp.asarray(data.y_train), jnp.asarray(times)
    )
    f_train, f_test = np.asarray(f_train), np.asarray(f_test)
    if locate:  # a discrete rule: no stability assumption, a run that blows up is a SolveError
        _check_lazy_divergence(spec, method, f_train, locate[0])
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
        diagnostics=diagnostics(type(method).__name__, method, start, **(
            {"steps": int(spec.training.steps[-1]), "learning_rate": spec.training.learning_rate}
            if locate else {})),
        loss=loss_from_name(spec.training.loss),
        data=data,
    )
