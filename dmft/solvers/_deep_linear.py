"""Deep linear networks (φ = identity, any L): the exact Gaussian closure, time-marched.

With φ = id every field is linear in the Gaussian sources (u^ℓ, r^ℓ), so the single-site process
closes on covariances and responses: no sampling. On a grid t_k the fields of layer ℓ are
(derivations/dmft.md eq:deep_linear_fields, derivations/deep_linear_gd_residual.md §1)

    h^ℓ_k = u^ℓ_k + Σ_{s<k} C^ℓ_{ks} z^ℓ_s,     C^ℓ_{ks} = ∂h^{ℓ-1}_k/∂r^{ℓ-1}_s + (γ0/P) w_{ks} Φ^{ℓ-1}_{ks} Δ̃_s
    z^ℓ_k = r^ℓ_k + Σ_{s<k} D^ℓ_{ks}·h^ℓ_s,     D^ℓ_{ks} = ∂z^{ℓ+1}_k/∂u^{ℓ+1}_s + (γ0/P) w_{ks} G^{ℓ+1}_{ks} Δ̃_s

for a strictly causal weight matrix w: the exact infinite-width limit of the discrete rule
W_k = W_0 + Σ_{s<k} w_{ks} U_s, with the output read from the exact identity
f_k = γ0⁻¹ Cov(z^L_k, h^L_k) and Δ̃ = ω ⊙ Δ. One explicit march over k (forward sweep over layers
for h, backward sweep for z, then f_k) solves the closure exactly: no outer loop, no damping.

Rules: ``training.optimizer = "gd"`` is w_{ks} = η0 (exact GD at N = ∞), ``"sgd"`` the same with
the batch weights ω of `dmft.network`. Gradient flow: by default the two-step Adams–Bashforth
weights (second order) on a graded grid whose nodes include every spec time; ``extrapolate =
False`` is the Euler (GD-with-step-dt) march, first order; ``extrapolate = True`` its Richardson
combination of dt and dt/2, second order, on a uniform grid with 4-point Lagrange interpolation.

Several outputs (MSE, y_train (P, C); derivations/multi_output_dmft.md §6): the backward fields
z^ℓ_c carry the output index, so C, D, the responses and G^ℓ run over (time, output) pairs,
G^{L+1}_{kc,sd} = δ_cd, the forward drive is Σ_d Δ̃_d z_d and Δ (P, C) comes from the loss object.
`f_train` is then (T, P, C); `ntk` and `g_L{l}` are the output averages of the diagonal blocks.

Cost: the march never forms ∂h/∂u and runs in the input basis (Φ^ℓ = B Φ̂^ℓ Bᵀ, R = rank Φ^0 <=
Q points): O(L T³ R²) time and L (TR)² memory for T grid points (derivations §2). Residual
blocks (``architecture.residual_scale``) use a joint-source march over all layers of a neuron,
O(L² T³ R³) time and O(L² (TR)²) memory (derivations §4). With C outputs a plain step costs
O(T²C(R² + C²)) per layer (linear in C for C ≲ R, cubic for C ≫ R); the residual march's joint
covariance grows with R + C, its work as (R + C)³.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._divergence import check_not_diverged
from .._errors import InputError, SolveError
from .._options import check_bool, check_positive, options_from_table
from .._precision import require_float64
from .._progress import StepTicker
from ..spec import Spec
from ._common import (
    LOSS,
    check_layers,
    first_bad_time,
    gib,
    lagrange_matrix,
    layer_ntk,
    lazy_time_scale,
    network_of,
    new_bar,
)
from ._dmft import check_mup, input_kernel, is_identity_activation
from ._solution import Solution, diagnostics

#: The grid step may be enlarged to fit ``max_memory_gb`` only up to this fraction of the time
#: scale P/λ_max(K0) of the lazy dynamics: beyond it the first-order march (gradient descent
#: with step dt) no longer resolves the fastest mode, and the answer would be meaningless.
MAX_STEP_OVER_TIME_SCALE = 0.5


@dataclasses.dataclass(frozen=True)
class DeepLinearDMFT:
    """Exact DMFT of a deep linear μP network by causal time-marching of the Gaussian closure.

    Attributes:
        dt: grid step of gradient flow (the horizon is split into ceil(t_max/dt) equal steps).
            If the grid would need more than ``max_memory_gb`` the step is enlarged to fit, with
            a warning, as long as it stays below half the time scale P/λ_max(K0) of the dynamics
            (else InputError). Unused for ``training.optimizer = "gd"`` / ``"sgd"``, whose grid
            is the steps of the learning rate η0.
        extrapolate: the flow scheme. None (default): the two-step Adams–Bashforth march, second
            order, one march. True: the first-order (gradient-descent) march at dt and dt/2,
            Richardson-combined (second order, about 9× the work). False: the first-order march
            alone, which is exact infinite-width gradient descent with step dt.
        max_memory_gb: memory budget of the (TQ)² kernels.
    """

    dt: float = 0.025
    extrapolate: bool | None = None
    max_memory_gb: float = 2.0

    optimizers = ("flow", "gd", "sgd")
    losses = ("mse",)  # the tested loss; cross-entropy is refused (derivations/multi_output_dmft.md §6)
    multi_output = True  # C outputs: backward fields over (time, output) pairs
    residual = True  # residual blocks (docs/conventions.md §2c): the joint-source march

    def __post_init__(self):
        object.__setattr__(self, "dt", check_positive("dt", self.dt))
        object.__setattr__(self, "max_memory_gb", check_positive("max_memory_gb", self.max_memory_gb))
        if self.extrapolate is not None:
            check_bool("extrapolate", self.extrapolate)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> DeepLinearDMFT:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "deep_linear")

    @property
    def order(self) -> int:
        """Convergence order in dt of the flow result at fixed t."""
        return 1 if self.extrapolate is False else 2

    @property
    def scheme(self) -> str:
        """"adams" (two-step Adams–Bashforth), "richardson" or "euler"."""
        return {None: "adams", True: "richardson", False: "euler"}[self.extrapolate]

    def solve(self, spec: Spec) -> Solution:
        """March the closure to the last spec time; interpolate to the spec times (flow) or read
        the saved steps (gd, sgd). The solution carries the loss and the data, so its losses,
        sharpness and accuracies are those of `Solution`, as for the other solvers."""
        solution = self._solve(spec)
        return dataclasses.replace(solution, loss=LOSS, data=spec.data)

    def _solve(self, spec: Spec) -> Solution:
        """`solve` without the loss and data attached."""
        require_float64("the deep_linear DMFT")
        check_mup(spec, self)
        if not is_identity_activation(spec.architecture.activation):
            raise InputError(
                "solver.method = 'deep_linear' needs architecture.activation = \"linear\" "
                f"(φ = identity), got {spec.architecture.activation!r}; use 'two_layer' (L = 1) or "
                "'monte_carlo'"
            )
        if spec.training.optimizer != "flow":
            return self._solve_discrete(spec)
        start = time.perf_counter()
        arch, data = spec.architecture, spec.data
        num_layers, num_train = arch.hidden_layers, data.num_train
        num_points = num_train + data.num_test
        times = np.asarray(spec.training.times, dtype=np.float64)
        t_max = float(times[-1])
        kx_np = input_kernel(spec)
        # the march's point dimension (derivations §2), widened for the C-output arrays
        rank = kernel_width(input_basis(kx_np).shape[1], data.num_outputs)
        if self.extrapolate is None:
            scale = lazy_time_scale(network_of(spec), kx_np[:num_train, :num_train])
            grid = graded_grid(times, self.dt, scale, max_points=self._max_points(rank, num_layers))
            if grid is not None:
                return self._solve_graded(spec, kx_np, grid, start)
        steps = self._steps(t_max, rank, num_layers, spec, kx_np[:num_train, :num_train])
        dt = t_max / steps if steps else 0.0

        grids = [steps] + ([2 * steps] if self.extrapolate and steps else [])
        make_weights = adams_weights if self.extrapolate is None else euler_weights
        runs = []
        bar = new_bar(sum(n + 1 for n in grids), "deep_linear DMFT (time steps)")
        ticker = StepTicker.for_solve(bar)
        try:
            for n in grids:
                runs.append(_run(spec, kx_np, make_weights(n + 1, t_max / n if n else 0.0),
                                 _omega(n + 1, num_train, num_points), ticker))
        finally:
            bar.close()
        for n, run in zip(grids, runs):
            bad = first_bad_time(np.arange(n + 1) * (t_max / n if n else 0.0), *run)
            if bad is not None:
                hint = "decrease solver.dt"
                if dt > self.dt * (1 + 1e-9):
                    hint = (f"dt was enlarged from solver.dt = {self.dt:g} to fit solver.max_memory_gb "
                            f"= {self.max_memory_gb:g}: raise it or shorten training.times")
                raise SolveError(f"deep_linear DMFT diverged at t = {bad:g} (grid step "
                                 f"{t_max / n:g}); {hint}", time=bad)
        if len(runs) == 2:  # Richardson: 2 x_{dt/2} − x_{dt} on the coarse grid
            coarse, fine = runs
            values = jax.tree_util.tree_map(lambda c, f: 2.0 * f[::2] - c, coarse, fine)
            # |f_{dt/2} − f_dt| estimates the first-order error of f_{dt/2}
            richardson_difference = float(np.max(np.abs(fine[0][::2] - coarse[0])))
        else:
            values = runs[0]
            richardson_difference = None
        weights = lagrange_matrix(steps + 1, dt, times)
        f, ntk, phis, gs = (np.tensordot(weights, v, axes=(1, 0)) for v in values)

        return Solution.from_augmented(
            times, f, ntk, num_train,
            phi=tuple(phis[:, layer] for layer in range(num_layers)),
            g=tuple(gs[:, layer] for layer in range(num_layers)),
            diagnostics=diagnostics(
                "deep_linear", self, start,
                dt=dt, steps=steps, grids=grids, order=self.order, scheme=self.scheme,
                richardson_difference=richardson_difference,
                interpolation="4-point Lagrange on the uniform grid",
            ),
        )

    def _max_points(self, rank: int, num_layers: int) -> int:
        """The most grid points whose L (T·rank)² kernels fit in ``max_memory_gb``."""
        return int(math.sqrt(self.max_memory_gb * 2**30 / (8 * num_layers)) / rank)

    def _solve_graded(self, spec: Spec, kx_np: np.ndarray, grid: tuple, start: float) -> Solution:
        """The Adams march on the graded grid (`graded_grid`), whose nodes include every spec
        time: no interpolation."""
        nodes, saved = grid
        data = spec.data
        num_layers, num_train = spec.architecture.hidden_layers, data.num_train
        check_layers("deep_linear", num_layers,
                     f"{nodes.shape[0]} grid points × rank Φ^0 = {input_basis(kx_np).shape[1]}")
        bar = new_bar(nodes.shape[0], "deep_linear DMFT (time steps)")
        ticker = StepTicker.for_solve(bar)
        try:
            f, ntk, phis, gs = _run(spec, kx_np, adams_weights_on(nodes),
                                    _omega(nodes.shape[0], num_train, num_train + data.num_test),
                                    ticker)
        finally:
            bar.close()
        bad = first_bad_time(nodes, f, ntk, phis, gs)
        if bad is not None:
            raise SolveError(f"deep_linear DMFT diverged at t = {bad:g} (largest grid step "
                             f"{np.max(np.diff(nodes)):g}); decrease solver.dt", time=bad)
        return Solution.from_augmented(
            np.asarray(spec.training.times, dtype=np.float64), f[saved], ntk[saved], num_train,
            phi=tuple(phis[saved, layer] for layer in range(num_layers)),
            g=tuple(gs[saved, layer] for layer in range(num_layers)),
            diagnostics=diagnostics(
                "deep_linear", self, start, dt=self.dt, steps=nodes.shape[0] - 1,
                grids=[nodes.shape[0] - 1], order=self.order, scheme=self.scheme,
                largest_step=float(np.max(np.diff(nodes))) if nodes.shape[0] > 1 else 0.0,
                richardson_difference=None, interpolation="none: the spec times are grid nodes",
            ),
        )

    def _solve_discrete(self, spec: Spec) -> Solution:
        """Exact infinite-width GD / SGD: the march with w_{ks} = η0 (s < k) on the steps and
        the step-k error signal ω_k ⊙ Δ_k (batch weights of `dmft.network`'s dynamics)."""
        start = time.perf_counter()
        data, training = spec.data, spec.training
        num_layers, num_train = spec.architecture.hidden_layers, data.num_train
        num_points = num_train + data.num_test
        eta = float(training.learning_rate)
        saved = np.asarray(training.steps, dtype=np.int64)
        num_grid = int(saved[-1]) + 1
        kx_np = input_kernel(spec)
        self._check_cost(num_grid, kernel_width(input_basis(kx_np).shape[1], data.num_outputs),
                         num_layers)
        omega = np.zeros((num_grid, num_points))
        omega[:, :num_train] = training.dynamics.batch_weights(num_train, num_grid)
        bar = new_bar(num_grid, f"deep_linear DMFT ({training.optimizer} steps)")
        ticker = StepTicker.for_solve(bar)
        try:
            f, ntk, phis, gs = _run(spec, kx_np, euler_weights(num_grid, eta), omega, ticker)
        finally:
            bar.close()
        y = _target_rows(spec) if data.num_outputs > 1 else _target_rows(spec)[:, 0]
        rows = data.num_outputs > 1
        with np.errstate(invalid="ignore", over="ignore"):  # a diverged run overflows here
            losses = np.array([float(LOSS.value(f_k[:num_train], y, rows=rows)) for f_k in f])
            check_not_diverged(losses, eta * np.arange(num_grid),
                               float(LOSS.value(np.zeros_like(y), y, rows=rows)),
                               "the deep_linear DMFT", steps=np.arange(num_grid))
        bad = first_bad_time(eta * np.arange(num_grid), f, ntk, phis, gs)
        if bad is not None:  # finite losses but overflowing kernels
            step = round(bad / eta)
            raise SolveError(f"the deep_linear DMFT diverged at step {step} (t = {bad:g}); "
                             "lower training.learning_rate", time=bad, step=step)
        return Solution.from_augmented(
            np.asarray(training.times, dtype=np.float64), f[saved], ntk[saved], num_train,
            phi=tuple(phis[saved, layer] for layer in range(num_layers)),
            g=tuple(gs[saved, layer] for layer in range(num_layers)),
            diagnostics=diagnostics("deep_linear", self, start, dt=eta, steps=num_grid - 1,
                                    grids=[num_grid - 1], order=None, scheme=training.optimizer,
                                    interpolation="none: the saved times are steps"),
        )

    def _check_cost(self, num_grid: int, num_points: int, num_layers: int) -> None:
        """InputError when the (TQ)² kernels of `num_grid` points exceed the memory budget."""
        need = 8.0 * num_layers * (num_grid * num_points) ** 2
        check_layers("deep_linear", num_layers,
                     f"≈ {gib(need)} for {num_grid} grid points × rank Φ^0 = {num_points}")
        if need > self.max_memory_gb * 2**30:
            raise InputError(
                f"training.times: {num_grid - 1} steps of training.learning_rate need ≈ {gib(need)} "
                f"for the deep_linear closure, more than solver.max_memory_gb = "
                f"{self.max_memory_gb:g}; save fewer steps or raise solver.max_memory_gb")

    def _steps(self, t_max: float, num_points: int, num_layers: int, spec: Spec,
               kx_train: np.ndarray) -> int:
        """Number of coarse steps: ceil(t_max/dt), reduced to fit the memory budget as long as
        the step stays a sane fraction of the time scale of the dynamics (else InputError)."""
        finest = 2 if self.extrapolate else 1
        arrays = num_layers  # Φ^1..Φ^L, each (TQ)²
        steps = max(1, math.ceil(t_max / self.dt - 1e-9)) if t_max else 0
        grid_points = (finest * steps + 1) * num_points
        check_layers("deep_linear", num_layers,
                     f"≈ {gib(8.0 * arrays * grid_points**2)} and ≈ "
                     f"{5 * num_layers * grid_points**3 / num_points:.2g} "
                     f"flops for {finest * steps + 1} grid points × rank Φ^0 = {num_points}")
        if t_max == 0:
            return 0
        limit = self.max_memory_gb * 2**30 / (8 * arrays)
        max_points = int(math.sqrt(limit) / num_points)  # T_finest·Q <= sqrt(limit)
        max_steps = (max_points - 1) // finest
        if max_steps < 1:
            raise InputError(
                f"solver.max_memory_gb = {self.max_memory_gb:g} is too small for the deep_linear "
                f"closure with rank Φ^0 = {num_points} (P + P_test points)"
            )
        if steps > max_steps:
            dt = t_max / max_steps
            scale = lazy_time_scale(network_of(spec), kx_train)
            if dt > MAX_STEP_OVER_TIME_SCALE * scale:
                raise InputError(
                    f"training.times ends at t = {t_max:g}: solver.dt = {self.dt:g} needs {steps} "
                    f"steps (≈ {gib(8.0 * arrays * grid_points**2)}), but solver.max_memory_gb = "
                    f"{self.max_memory_gb:g} fits {max_steps}, i.e. dt = {dt:.3g}, more than "
                    f"{MAX_STEP_OVER_TIME_SCALE:g}× the time scale P/λ_max(K0) = {scale:.3g} of the "
                    f"dynamics, which would make the answer meaningless; shorten training.times "
                    f"(to t <= {max_steps * MAX_STEP_OVER_TIME_SCALE * scale:.3g} at this budget) or "
                    "raise solver.max_memory_gb"
                )
            warnings.warn(
                f"deep_linear: dt = {self.dt:g} needs {steps} steps, more than fit in "
                f"solver.max_memory_gb = {self.max_memory_gb:g}; using dt = {dt:.3g}",
                stacklevel=3,
            )
            steps = max_steps
        return steps


def kernel_width(rank: int, num_outputs: int) -> int:
    """Entries per grid point of a (T·width)² array that bounds the march's memory: rank Φ^0 = R
    for one output; R + 2C for C > 1, as (R + 2C)² >= R² + 4RC + 2C², the floats per layer and
    grid point pair of Φ^ℓ, the couplings and responses (T·R × T·C) and G^ℓ, Zr (T·C)²."""
    return rank if num_outputs == 1 else rank + 2 * num_outputs


def _omega(num_grid: int, num_train: int, num_points: int) -> np.ndarray:
    """Error weights of gradient flow: 1 on the training points, 0 on test points."""
    omega = np.zeros((num_grid, num_points))
    omega[:, :num_train] = 1.0
    return omega


def _target_rows(spec: Spec) -> np.ndarray:
    """y_train as rows of C outputs, (P, C), C = 1 too."""
    data = spec.data
    return np.asarray(data.y_train, dtype=np.float64).reshape(data.num_train, data.num_outputs)


def _reported(spec: Spec, kx_np: np.ndarray, basis, f, phis, gs):
    """The reported arrays of one march: f (T, Q) for one output, (T, Q, C) for C > 1;
    Φ^ℓ = B Φ̂^ℓ Bᵀ (T, L, Q, Q); the output averages Ḡ^ℓ = (1/C) Σ_c G^ℓ_{cc} (T, L) and
    K̄ = Σ_{ℓ=0}^{L} Ḡ^{ℓ+1} Φ^ℓ (T, Q, Q), Ḡ^{L+1} = 1: the average (1/C) Σ_c K_{μc,αc} of the
    diagonal output blocks of the NTK over (point, output) pairs (eq:dl_mo_ntk)."""
    num_layers = spec.architecture.hidden_layers
    phis = np.einsum("qa,tlab,pb->tlqp", basis, phis, basis)
    gs = np.trace(gs, axis1=-2, axis2=-1) / gs.shape[-1]
    # K on this grid (before Richardson: K is bilinear)
    ntk = layer_ntk(network_of(spec), kx_np[None], [phis[:, layer] for layer in range(num_layers)],
                    [gs[:, layer, None, None] for layer in range(num_layers)])
    if f.shape[-1] == 1:  # one output: the shapes of docs/conventions.md §5
        f = f[..., 0]
    return f, ntk, phis, gs


def _run(spec: Spec, kx_np: np.ndarray, weights: np.ndarray, omega: np.ndarray, ticker):
    """One march of the plain (non-residual) closure: f (T, Q[, C]), K (T, Q, Q), Φ (T, L, Q, Q),
    G (T, L) as NumPy arrays (`_reported`)."""
    arch = spec.architecture
    num_layers = arch.hidden_layers
    basis = input_basis(kx_np)
    if arch.residual_scale is not None and num_layers > 1:
        return _run_residual(spec, kx_np, basis, weights, omega, ticker)
    f, phis, gs = jax.tree_util.tree_map(np.asarray, _march(
        jnp.asarray(basis), jnp.asarray(_target_rows(spec)),
        jnp.asarray(spec.architecture.gamma0, jnp.float64),
        jnp.asarray(weights), jnp.asarray(omega), num_layers,
        _stages(weights.shape[0], basis.shape[1]), ticker))
    return _reported(spec, kx_np, basis, f, phis, gs)


def residual_branch_scale(arch) -> float:
    """a = α/L^β of the residual branches (docs/conventions.md §2c)."""
    return arch.residual_scale / arch.hidden_layers ** arch.residual_exponent


#: Memory budget of the residual march's propagators and joint source covariance (bytes).
RESIDUAL_MAX_BYTES = 4 * 2**30


def _run_residual(spec, kx_np, basis, weights, omega, ticker, skip: float = 1.0,
                  branch: float | None = None):
    """One march of the residual closure (`_residual_march`); `skip` = 0 with `branch` = 1 is the
    plain network (a cross-check)."""
    arch = spec.architecture
    L, T, R, C = arch.hidden_layers, weights.shape[0], basis.shape[1], spec.data.num_outputs
    size = _source_layout(L, T, R, C)["size"]
    need = 8.0 * (L * T * (R + C) * size + size**2 + 2 * L * (T * R) ** 2 + L * (T * C) ** 2)
    check_layers("deep_linear", L, f"≈ {gib(need)} for the residual closure")
    if need > RESIDUAL_MAX_BYTES:
        raise InputError(
            f"architecture.residual_scale: the residual deep_linear closure with L = {L} layers "
            f"and {T} grid points needs ≈ {gib(need)} (it grows as (L·T)²); raise solver.dt or "
            "shorten training.times")
    a = residual_branch_scale(arch) if branch is None else branch
    f, phis, gs = jax.tree_util.tree_map(np.asarray, _residual_march(
        jnp.asarray(basis), jnp.asarray(_target_rows(spec)), jnp.asarray(arch.gamma0, jnp.float64),
        jnp.asarray(a, jnp.float64), jnp.asarray(weights), jnp.asarray(omega), L, float(skip),
        ticker))
    return _reported(spec, kx_np, basis, f, phis, gs)


def _stages(num_grid: int, num_points: int) -> int:
    """Stages of the march: one for small grids (compile time dominates), four for large ones."""
    return 1 if num_grid * num_points <= 600 else 4


# ----------------------------------------------------------------------------------------------
# Quadrature weights. Every scheme is a strictly causal weight matrix w (T, T): the weights at
# step k are W^ℓ_k = W^ℓ_0 + Σ_{s<k} w_{ks} U^ℓ_s (U_s the step-s gradient-flow velocity), so the
# march is the exact N → ∞ limit of that discrete rule (derivations/deep_linear_gd_residual.md §1).


def euler_weights(num_grid: int, dt: float) -> np.ndarray:
    """w_{ks} = dt for s < k: gradient descent with step dt (first order against the flow)."""
    return dt * np.tril(np.ones((num_grid, num_grid)), -1)


#: Graded grid of the Adams scheme: the step is dt until τ = GRADING_TIMES lazy time scales and
#: dt·t/τ after, up to GRADING_MAX_FACTOR·dt and never beyond GRADING_STABLE_FRACTION of the
#: lazy time scale (two-step Adams–Bashforth is stable for dt·λ < 1; the fraction leaves room
#: for a kernel that grows 4× by feature learning). The error is made in the fast early transient;
#: later steps add little (derivations/deep_linear_gd_residual.md §1).
GRADING_TIMES = 8.0
GRADING_MAX_FACTOR = 4.0
GRADING_STABLE_FRACTION = 0.25


def graded_grid(times, dt: float, scale: float, max_points: int | None = None):
    """Nodes (n,) from t = 0 through every spec time, and the node index of each spec time, or
    None if more than `max_points` nodes would be needed. Between consecutive spec times
    t_i < t_{i+1} the step is uniform, (t_{i+1} − t_i)/ceil((t_{i+1} − t_i)/h(t_i)), with
    h(t) = min(dt·max(1, t/τ), GRADING_MAX_FACTOR·dt, max(dt, GRADING_STABLE_FRACTION·scale)), so
    the grid up to a time never depends on later spec times."""
    times = np.asarray(times, dtype=np.float64)
    tau = GRADING_TIMES * scale
    cap = min(GRADING_MAX_FACTOR * dt, max(dt, GRADING_STABLE_FRACTION * scale))

    def step(t):
        return min(dt * max(1.0, t / tau) if math.isfinite(tau) else cap, cap)

    bounds = np.concatenate([[0.0], times])
    counts = [math.ceil((b - a) / step(a) - 1e-9) if b > a else 0
              for a, b in zip(bounds[:-1], bounds[1:])]
    if max_points is not None and sum(counts) + 1 > max_points:
        return None
    nodes = [np.zeros(1)]
    for a, b, n in zip(bounds[:-1], bounds[1:], counts):
        if n:
            nodes.append(a + (b - a) * np.arange(1, n + 1) / n)
    return np.concatenate(nodes), np.cumsum(counts)


def adams_weights_on(nodes: np.ndarray) -> np.ndarray:
    """Variable-step two-step Adams–Bashforth in Volterra form on `nodes`: step k' (length h,
    previous length h_p) adds ∫ of the linear interpolant through U_{k'−2}, U_{k'−1}, i.e.
    (h + h²/2h_p) U_{k'−1} − (h²/2h_p) U_{k'−2}; the first step is Euler. w = the running sum."""
    num_grid = nodes.shape[0]
    increments = np.zeros((num_grid, num_grid))
    steps = np.diff(nodes)
    for k in range(1, num_grid):
        h = steps[k - 1]
        if k == 1:
            increments[k, 0] = h
            continue
        ratio = h * h / (2.0 * steps[k - 2])
        increments[k, k - 1] = h + ratio
        increments[k, k - 2] = -ratio
    return np.cumsum(increments, axis=0)


def adams_weights(num_grid: int, dt: float) -> np.ndarray:
    """Two-step Adams–Bashforth in Volterra form, second order against the flow:
    W_k = W_{k−1} + dt(3/2 U_{k−1} − 1/2 U_{k−2}) (one Euler step first), i.e.
    w_{k,k−1} = 3/2 dt, w_{k,s} = dt for 0 < s < k − 1, w_{k,0} = dt/2 (k >= 2)."""
    w = euler_weights(num_grid, dt)
    k = np.arange(2, num_grid)
    w[k, k - 1] = 1.5 * dt
    w[k, 0] -= 0.5 * dt
    return w


# ----------------------------------------------------------------------------------------------
# The march. Layouts: arrays indexed [k, μ, ...] with row time k and row point μ; one array per
# layer ℓ = 1..L (Python lists, index i = ℓ − 1, unrolled over the layers). A layer's source u^ℓ
# has `src` entries: layer 1's u^1 ~ N(0, Φ^0) is static (src = Q), layer ℓ >= 2's
# u^ℓ ~ GP(0, Φ^{ℓ-1}) is dynamic (src = T·Q, covariance Ψ = Φ^{ℓ-1} flattened). Per layer:
#   cf[i] (T, Q, T)  C_{k,μ,s}: the coupling of h^ℓ_k to z^ℓ_s (eq:deep_linear_fields),
#   hr[i] (T, Q, T)  ∂h^ℓ_{kμ}/∂r^ℓ_j,   zr[i] (T, T)  ∂z^ℓ_k/∂r^ℓ_j,
#   zu[i] (T, src)   ∂z^ℓ_k/∂u^ℓ,        vz[i] (T, src) Zu Ψ (the source covariance seen by z),
#   phi[i] (T, Q, T, Q) Φ^ℓ,             g[i] (T, T)    G^ℓ (data-independent for φ = id).
# The propagator ∂h/∂u = 1 + C Zu is never formed: every product with it is rewritten through
# C, Zu and Zu Ψ, which makes a step O(T²Q²) instead of O(T²Q³) (derivations §2).


def _row(array, k):
    return jax.lax.dynamic_index_in_dim(array, k, 0, keepdims=False)


def _rows(array, start, count):
    """`count` rows of `array` from row `start` (a traced index): the C output rows of one time."""
    return jax.lax.dynamic_slice_in_dim(array, start, count, axis=0)


def _set_row(array, k, row):
    zero = jnp.zeros((), k.dtype)
    return jax.lax.dynamic_update_slice(array, row[None], (k,) + (zero,) * row.ndim)


def _set_rows(array, start, rows):
    """Rows start..start + len(rows) − 1 of `array` (the C output rows of one time)."""
    zero = jnp.zeros((), start.dtype)
    return jax.lax.dynamic_update_slice(array, rows, (start,) + (zero,) * (rows.ndim - 1))


def _set_symmetric(array, k, row):
    """Row and column k of a symmetric kernel: Φ (T, Q, T, Q) from row [μ, j, ν]."""
    zero = jnp.zeros((), k.dtype)
    array = _set_row(array, k, row)
    return jax.lax.dynamic_update_slice(
        array, jnp.transpose(row, (1, 2, 0))[:, :, None, :], (zero, zero, k, zero))


def _set_block_symmetric(array, start, column):
    """Columns start..start + C − 1 of a symmetric (TC, TC) kernel G and the matching rows, from
    `column` (TC, C)."""
    zero = jnp.zeros((), start.dtype)
    array = jax.lax.dynamic_update_slice(array, column.T, (start, zero))
    return jax.lax.dynamic_update_slice(array, column, (zero, start))


def _pair_mask(past, num_outputs):
    """The causal mask over (time, output) pairs, time-major: s < k for every output."""
    return jnp.repeat(past, num_outputs)


def _forward_layer(c, i, k, kx, dw, past, g_above):
    """Row k of h^ℓ's coupling, response and of Φ^ℓ (eq:deep_linear_fields, eq:dl_mo_fields):
    h^ℓ_k = u^ℓ_k + Σ_{s<k,d} C_{k,sd} z^ℓ_{sd},
    C_{k,sd} = ∂h^{ℓ-1}_k/∂r^{ℓ-1}_{sd} + (γ0/P) w_{ks} Φ^{ℓ-1}_{ks} Δ̃_{sd}
    (`dw` (T, Q, C) = (γ0/P) w_{k·} Δ̃; backward indices are (time, output) pairs, TC of them).
    Returns Y = ∂h^ℓ_k/∂u · Ψ, (Q, src), for the read-out. Cost O(T²Q(Q + C)C) per step."""
    T, Q, C = dw.shape
    if i == 0:  # Φ^0 is static and there is no r^0
        coupling = jnp.einsum("ma,sad->msd", kx, dw).reshape(Q, T * C)
        psi_row = kx  # Ψ_{k·} = Φ^0 for the static source
    else:
        phi_row = _row(c["phi"][i - 1], k)  # (Q, T, Q)
        coupling = (jnp.einsum("msa,sad->msd", phi_row, dw).reshape(Q, T * C)
                    + _row(c["hr"][i - 1], k) * _pair_mask(past, C)[None, :])
        psi_row = phi_row.reshape(Q, T * Q)
        # the new column block k of Zu Ψ (rows s < k; Ψ is now known up to time k)
        c["vz"][i] = jax.lax.dynamic_update_slice(
            c["vz"][i], c["zu"][i] @ psi_row.T, (jnp.zeros((), k.dtype), k * Q))
    c["cf"][i] = _set_row(c["cf"][i], k, coupling)
    hr_row = coupling @ c["zr"][i]  # (Q, TC)
    c["hr"][i] = _set_row(c["hr"][i], k, hr_row)
    y = psi_row + coupling @ c["vz"][i]  # ∂h_k/∂u · Ψ = Ψ_{k·} + C_k Zu Ψ, (Q, src)
    yz = y @ c["zu"][i].T  # (Q, TC)
    if i == 0:  # ∂h_{k'}/∂u = 1 + C_{k'} Zu for every k' <= k
        direct = jnp.broadcast_to(y[:, None, :], (Q, T, Q)) * (jnp.arange(T) <= k)[None, :, None]
    else:
        direct = y.reshape(Q, T, Q)
    # Φ^ℓ_{k,k'} = Y (∂h_{k'}/∂u)ᵀ + Hr_k G^{ℓ+1} Hr_{k'}ᵀ
    row = (direct + jnp.einsum("ms,jns->mjn", yz, c["cf"][i])
           + jnp.einsum("mb,jnb->mjn", hr_row @ g_above, c["hr"][i]))
    c["phi"][i] = _set_symmetric(c["phi"][i], k, row)
    return y


def _backward_layer(c, i, k, kx, dw, past, g_above, num_layers):
    """Rows (k, c), c = 1..C, of z^ℓ's responses and of G^ℓ:
    z^ℓ_{kc} = r^ℓ_{kc} + Σ_{s<k} D_{kc,s}·h^ℓ_s,
    D_{kc,s} = ∂z^{ℓ+1}_{kc}/∂u^{ℓ+1}_s + (γ0/P) w_{ks} Σ_d G^{ℓ+1}_{kc,sd} Δ̃_{sd}.
    Cost O(T²C(Q² + QC + C²)) per step (O(T²Q²) per output at layer ℓ >= 2)."""
    T, Q, C = dw.shape
    start = k * C
    g_rows = _rows(g_above, start, C).reshape(C, T, C)
    coupling = jnp.einsum("csd,sad->csa", g_rows, dw)  # (C, T, Q)
    if i < num_layers - 1:  # the read-out weights have no source: no response above layer L
        coupling = coupling + _rows(c["zu"][i + 1], start, C).reshape(C, T, Q) * past[None, :, None]
    unit = jax.nn.one_hot(start + jnp.arange(C), T * C, dtype=kx.dtype)  # (C, TC)
    zr_rows = unit + jnp.einsum("csa,saj->cj", coupling, c["hr"][i])
    # Zu_k = Σ_s D_ks·∂h_s/∂u = D̂_k + (Σ_s D_ks·C_s) Zu
    through = jnp.einsum("csa,sab->cb", coupling, c["cf"][i])  # (C, TC)
    direct = coupling.sum(axis=1) if i == 0 else coupling.reshape(C, T * Q)
    zu_rows = direct + through @ c["zu"][i]
    c["zr"][i] = _set_rows(c["zr"][i], start, zr_rows)
    c["zu"][i] = _set_rows(c["zu"][i], start, zu_rows)
    if i == 0:
        v_rows = (kx @ zu_rows.T).T
    else:
        v_rows = (c["phi"][i - 1].reshape(T * Q, T * Q) @ zu_rows.T).T
    c["vz"][i] = _set_rows(c["vz"][i], start, v_rows)
    # G^ℓ = Zu Ψ Zuᵀ + Zr G^{ℓ+1} Zrᵀ, columns (k, c)
    column = c["zu"][i] @ v_rows.T + c["zr"][i] @ (zr_rows @ g_above).T  # (TC, C)
    c["g"][i] = _set_block_symmetric(c["g"][i], start, column)


def _make_step(T, kx, basis, y_pad, omega, weights, gamma0, scale, num_layers, ticker):
    """The march step of a stage whose arrays span T grid points: forward sweep ℓ = 1..L,
    backward sweep ℓ = L..1, then the read-out f_{kc} = γ0⁻¹ Cov(z^L_{kc}, h^L_k) and
    Δ̃_k = ω_k ⊙ Δ_k with Δ_k from the loss (rows of C outputs)."""
    C = y_pad.shape[1]
    g_top = jnp.kron(jnp.ones((T, T), kx.dtype), jnp.eye(C, dtype=kx.dtype))  # G^{L+1} = 1 ⊗ I_C

    def g_of(c, i):  # G^{ℓ} for layer index i = ℓ − 1 (i = L: the read-out's G^{L+1})
        return g_top if i == num_layers else c["g"][i]

    def step(k, carry):
        if ticker is not None:
            ticker.tick(k)
        c = {key: list(value) if isinstance(value, list) else value for key, value in carry.items()}
        past = (jnp.arange(T) < k).astype(kx.dtype)
        # (γ0/P) w_{ks} Δ̃_s: zero for s >= k (strict causality) and on test points
        dw = scale * _row(weights, k)[:, None, None] * c["delta"]
        ys = [None] * num_layers
        for i in range(num_layers):
            ys[i] = _forward_layer(c, i, k, kx, dw, past, g_of(c, i + 1))
        for i in reversed(range(num_layers)):
            _backward_layer(c, i, k, kx, dw, past, g_of(c, i + 1), num_layers)
        last = num_layers - 1
        zu_rows, zr_rows = _rows(c["zu"][last], k * C, C), _rows(c["zr"][last], k * C, C)
        f_hat = (ys[last] @ zu_rows.T + (_row(c["hr"][last], k) @ g_top) @ zr_rows.T) / gamma0
        f_k = basis @ f_hat  # (Q, C): back from the input basis to the Q points
        error = LOSS.error_signal(f_k, y_pad, rows=True) * _row(omega, k)[:, None]
        c["delta"] = _set_row(c["delta"], k, basis.T @ error)
        c["f"] = _set_row(c["f"], k, f_k)
        return c

    return step


def _initial_carry(num_layers, Q, num_points, num_outputs, dtype):
    """Zero arrays of one grid point, and per array {axis: entries per grid point} of its time
    axes, along which the stages grow them (a dynamic source axis holds Q entries per point, a
    backward axis C, one per output)."""
    C = num_outputs
    carry = dict(
        cf=[jnp.zeros((1, Q, C), dtype) for _ in range(num_layers)],
        hr=[jnp.zeros((1, Q, C), dtype) for _ in range(num_layers)],
        zr=[jnp.zeros((C, C), dtype) for _ in range(num_layers)],
        zu=[jnp.zeros((C, Q), dtype) for _ in range(num_layers)],
        vz=[jnp.zeros((C, Q), dtype) for _ in range(num_layers)],
        phi=[jnp.zeros((1, Q, 1, Q), dtype) for _ in range(num_layers)],
        g=[jnp.zeros((C, C), dtype) for _ in range(num_layers)],
        delta=jnp.zeros((1, Q, C), dtype),
        f=jnp.zeros((1, num_points, C), dtype),
    )
    dynamic = num_layers - 1
    time_axes = dict(cf=[{0: 1, 2: C}] * num_layers, hr=[{0: 1, 2: C}] * num_layers,
                     zr=[{0: C, 1: C}] * num_layers,
                     zu=[{0: C}] + [{0: C, 1: Q}] * dynamic, vz=[{0: C}] + [{0: C, 1: Q}] * dynamic,
                     phi=[{0: 1, 2: 1}] * num_layers, g=[{0: C, 1: C}] * num_layers,
                     delta={0: 1}, f={0: 1})
    return carry, time_axes


def _grow(carry, time_axes, size):
    """Zero-pad every time axis to `size` grid points (causality: the new rows are still zero)."""
    def pad(array, axes):
        widths = [(0, size * axes[a] - array.shape[a]) if a in axes else (0, 0)
                  for a in range(array.ndim)]
        return jnp.pad(array, widths)
    return {key: [pad(a, ax) for a, ax in zip(value, time_axes[key])] if isinstance(value, list)
            else pad(value, time_axes[key]) for key, value in carry.items()}


@functools.partial(jax.jit, static_argnames=("num_layers", "chunks", "ticker"))
def _march(
    basis: Float[Array, "Q R"],
    y: Float[Array, "P C"],
    gamma0: Float[Array, ""],
    weights: Float[Array, "T T"],
    omega: Float[Array, "T Q"],
    num_layers: int,
    chunks: int = 1,
    ticker: StepTicker | None = None,
):
    """One explicit march on the grid of `weights` (strictly lower triangular, w_{ks} for s < k)
    with error weights `omega` (ω_k on the training points, 0 on test points), in the input basis
    `basis` B (Φ^0 = B Bᵀ, R = rank Φ^0 <= Q): every field is linear in x, so Φ^ℓ = B Φ̂^ℓ Bᵀ and
    the march runs on Φ̂ with Φ̂^0 = 1 and the error signal Bᵀ Δ̃ (derivations §2). `y` holds
    rows of C outputs (C = 1 too): the backward fields carry the output index, so G^ℓ is over
    (time, output) pairs (derivations/multi_output_dmft.md §6). Returns per grid point:
    f (T, Q, C), Φ̂^ℓ(t,t) (T, L, R, R) and G^ℓ_{cd}(t,t) (T, L, C, C). Memory: L T²(R² + 4RC + 2C²)
    floats.

    At step k only the leading (k+1) time rows/columns are non-zero, so the march runs in
    `chunks` stages whose arrays are truncated to the stage's last step (static shapes): the
    O(T²R²)-per-step contractions then cost ≈ T³(1 + 4 + … + chunks²)/chunks³ instead of T³.
    """
    P = y.shape[0]
    Q, R = basis.shape
    num_grid = weights.shape[0]
    dtype = basis.dtype
    kx = jnp.eye(R, dtype=dtype)
    C = y.shape[1]
    y_pad = jnp.zeros((Q, C), dtype).at[:P].set(y)
    carry, time_axes = _initial_carry(num_layers, R, Q, C, dtype)
    bounds = sorted({max(1, -(-num_grid * stage // chunks)) for stage in range(1, chunks + 1)})
    start = 0
    for stop in bounds:
        carry = _grow(carry, time_axes, stop)
        step = _make_step(stop, kx, basis, y_pad, omega[:stop], weights[:stop, :stop], gamma0,
                          gamma0 / P, num_layers, ticker)
        carry = jax.lax.fori_loop(start, stop, step, carry)
        start = stop
    diag = jnp.arange(num_grid)
    phis = jnp.stack([p[diag, :, diag, :] for p in carry["phi"]], axis=1)  # (T, L, R, R)
    gs = jnp.stack([g.reshape(num_grid, C, num_grid, C)[diag, :, diag, :] for g in carry["g"]],
                   axis=1)  # (T, L, C, C)
    return carry["f"], phis, gs


def input_basis(kx: np.ndarray) -> np.ndarray:
    """B (Q, R) with B Bᵀ = Φ^0 and R = rank Φ^0 (eigenvalues below 1e-13 of the largest are
    round-off: dropping them changes nothing beyond it)."""
    values, vectors = np.linalg.eigh(kx)
    keep = values > 1e-13 * max(values[-1], 1e-300)
    if not keep.any():
        keep[-1] = True
    return vectors[:, keep] * np.sqrt(np.maximum(values[keep], 0.0))


# ----------------------------------------------------------------------------------------------
# Residual blocks (docs/conventions.md §2c): h^{ℓ+1} = h^ℓ + a W^ℓ h^ℓ/√N for ℓ = 1..L−1 with
# a = α/L^β. The skip connections make the fields of all layers of one neuron a single process
# (derivations/deep_linear_gd_residual.md §4):
#   h^1     = u^1 + Σ_{s<k} C^0_{ks} g^1_s,                 C^0 = (γ0/P) w Φ^0 Δ̃
#   h^{ℓ+1} = σ h^ℓ + a (u^{ℓ+1} + Σ_{s<k} C^ℓ_{ks} g^{ℓ+1}_s),  C^ℓ = ∂h^ℓ/∂r^ℓ + (aγ0/P) w Φ^ℓ Δ̃
#   g^L     = r^L + Σ_{s<k} D^L_{ks}·h^L_s,                  D^L = (γ0/P) w Δ̃
#   g^ℓ     = σ g^{ℓ+1} + a (r^ℓ + Σ_{s<k} D^ℓ_{ks}·h^ℓ_s),    D^ℓ = ∂g^{ℓ+1}/∂u^{ℓ+1} + (aγ0/P) w G^{ℓ+1} Δ̃
# with σ = 1 (σ = 0, a = 1 is the plain network: a cross-check of the march above). Every field
# row is stored as its propagator onto the joint source vector S = (u^1, u^2..u^L, r^1..r^{L−1},
# r^L) of one neuron, whose covariance Σ_S is block diagonal (I, Φ̂^1..Φ̂^{L−1}, G^2..G^L, 1)
# and filled causally. Cost O(L² T³ R³) time and O(L² (TR)²) memory: meant for moderate L·T.


def _source_layout(num_layers: int, T: int, R: int, C: int = 1) -> dict:
    """Offsets of the source blocks in S: u^1 (R), u^ℓ (T·R, ℓ = 2..L), r^ℓ (T·C, ℓ = 1..L−1,
    time-major (time, output) pairs), r^L (C)."""
    u = {1: 0}
    offset = R
    for layer in range(2, num_layers + 1):
        u[layer] = offset
        offset += T * R
    r = {}
    for layer in range(1, num_layers):
        r[layer] = offset
        offset += T * C
    r[num_layers] = offset
    return {"u": u, "r": r, "size": offset + C}


def _put_block(sigma, offset, k, rows, width):
    """Rows and columns of time k (`width` entries per time) of a source block of the joint
    covariance at `offset`, from `rows` (width, T·width)."""
    start = offset + k * width
    at = jnp.asarray(offset, k.dtype)
    sigma = jax.lax.dynamic_update_slice(sigma, rows, (start, at))
    return jax.lax.dynamic_update_slice(sigma, rows.T, (at, start))


def _residual_forward(c, i, k, lay, dw, sig, rows_below, branch, skip):
    """Propagator row of h^ℓ_k (ℓ = i + 1) onto S, (R, NS), and the Φ^ℓ row:
    h^1 = u^1 + Σ C^0 g^1, h^{ℓ+1} = σ h^ℓ + a (u^{ℓ+1} + Σ_{s<k,d} C^ℓ_{k,sd} g^{ℓ+1}_{sd}).
    Cost O(T R² NS) per step."""
    T, R, C = dw.shape
    NS = lay["size"]
    dtype = dw.dtype
    if i == 0:
        coupling = jnp.transpose(dw, (1, 0, 2)).reshape(R, T * C)  # C^0: Φ̂^0 = 1
        row = jnp.zeros((R, NS), dtype).at[:, :R].set(jnp.eye(R, dtype=dtype))
        row = row + coupling @ c["hg"][0]
    else:
        r_block = jax.lax.dynamic_slice_in_dim(rows_below, lay["r"][i], T * C, axis=1)  # ∂h^ℓ/∂r^ℓ
        past = _pair_mask(jnp.arange(T) < k, C)
        coupling = (r_block * past[None, :]
                    + branch * jnp.einsum("msa,sad->msd", _row(c["phi"][i - 1], k),
                                          dw).reshape(R, T * C))
        source = jax.lax.dynamic_update_slice(
            jnp.zeros((R, NS), dtype), jnp.eye(R, dtype=dtype),
            (jnp.zeros((), k.dtype), lay["u"][i + 1] + k * R))
        row = skip * rows_below + branch * (source + coupling @ c["hg"][i])
    c["hh"][i] = _set_row(c["hh"][i], k, row)
    phi_row = ((row @ sig) @ c["hh"][i].reshape(T * R, NS).T).reshape(R, T, R)
    c["phi"][i] = _set_symmetric(c["phi"][i], k, phi_row)
    return row, phi_row


def _residual_backward(c, i, k, lay, dw, sig, rows_above, branch, skip, num_layers):
    """Propagator rows of g^ℓ_{kc} (ℓ = i + 1, c = 1..C) onto S, (C, NS), and the G^ℓ columns:
    g^L_c = r^L_c + Σ D^L_c·h^L, g^ℓ_c = σ g^{ℓ+1}_c + a (r^ℓ_c + Σ_{s<k} D^ℓ_{kc,s}·h^ℓ_s).
    Cost O(T C (R + C) NS) per step."""
    T, R, C = dw.shape
    NS = lay["size"]
    dtype = dw.dtype
    start = k * C
    if i == num_layers - 1:
        coupling = jnp.transpose(dw, (2, 0, 1))  # D^L (C, T, R), G^{L+1} = 1 ⊗ I_C
        row = jnp.zeros((C, NS), dtype).at[:, NS - C:].set(jnp.eye(C, dtype=dtype))
        row = row + jnp.einsum("csa,san->cn", coupling, c["hh"][i])
    else:
        u_block = jax.lax.dynamic_slice_in_dim(rows_above, lay["u"][i + 2], T * R, axis=1)
        g_rows = _rows(c["g"][i + 1], start, C).reshape(C, T, C)
        coupling = (u_block.reshape(C, T, R) * (jnp.arange(T) < k)[None, :, None]
                    + branch * jnp.einsum("csd,sad->csa", g_rows, dw))
        source = jax.nn.one_hot(lay["r"][i + 1] + start + jnp.arange(C), NS, dtype=dtype)
        row = skip * rows_above + branch * (source + jnp.einsum("csa,san->cn", coupling,
                                                                 c["hh"][i]))
    c["hg"][i] = _set_rows(c["hg"][i], start, row)
    column = c["hg"][i] @ (sig @ row.T)  # (TC, C)
    c["g"][i] = _set_block_symmetric(c["g"][i], start, column)
    return row, column


@functools.partial(jax.jit, static_argnames=("num_layers", "skip", "ticker"))
def _residual_march(basis: Float[Array, "Q R"], y: Float[Array, "P C"], gamma0, branch,
                    weights: Float[Array, "T T"], omega: Float[Array, "T Q"], num_layers: int,
                    skip: float = 1.0, ticker: StepTicker | None = None):
    """The joint-source march of the residual closure (block comment above), C outputs: the
    backward fields g^ℓ_c and sources r^ℓ_c carry the output index. Returns f (T, Q, C),
    Φ̂^ℓ(t,t) (T, L, R, R), G^ℓ_{cd}(t,t) (T, L, C, C). Cost O(L² T³ R (R + C)²) time."""
    P, C = y.shape
    Q, R = basis.shape
    T = weights.shape[0]
    L = num_layers
    dtype = basis.dtype
    lay = _source_layout(L, T, R, C)
    NS = lay["size"]
    y_pad = jnp.zeros((Q, C), dtype).at[:P].set(y)
    sigma0 = jnp.zeros((NS, NS), dtype).at[:R, :R].set(jnp.eye(R, dtype=dtype))
    sigma0 = sigma0.at[NS - C:, NS - C:].set(jnp.eye(C, dtype=dtype))  # r^L ~ N(0, I_C)
    carry = dict(
        hh=[jnp.zeros((T, R, NS), dtype) for _ in range(L)],
        hg=[jnp.zeros((T * C, NS), dtype) for _ in range(L)],
        phi=[jnp.zeros((T, R, T, R), dtype) for _ in range(L)],
        g=[jnp.zeros((T * C, T * C), dtype) for _ in range(L)],
        sigma=sigma0, delta=jnp.zeros((T, R, C), dtype), f=jnp.zeros((T, Q, C), dtype),
    )
    scale = gamma0 / P

    def step(k, c):
        if ticker is not None:
            ticker.tick(k)
        c = {key: list(v) if isinstance(v, list) else v for key, v in c.items()}
        dw = scale * _row(weights, k)[:, None, None] * c["delta"]  # (γ0/P) w_{ks} Δ̂_s, (T, R, C)
        sig = c["sigma"]
        hh_rows = []
        for i in range(L):  # forward: layer ℓ = i + 1
            row, phi_row = _residual_forward(c, i, k, lay, dw, sig, hh_rows[-1] if i else None,
                                             branch, skip)
            hh_rows.append(row)
            if i + 2 <= L:  # Φ^ℓ is the covariance of u^{ℓ+1}
                sig = _put_block(sig, lay["u"][i + 2], k, phi_row.reshape(R, T * R), R)
        hg_rows = [None] * L
        for i in reversed(range(L)):  # backward: layer ℓ = i + 1
            hg_rows[i], column = _residual_backward(c, i, k, lay, dw, sig,
                                                    hg_rows[i + 1] if i < L - 1 else None,
                                                    branch, skip, L)
            if i >= 1:  # G^ℓ is the covariance of r^{ℓ−1}
                sig = _put_block(sig, lay["r"][i], k, column.T, C)
        c["sigma"] = sig
        f_hat = hh_rows[L - 1] @ (sig @ hg_rows[L - 1].T) / gamma0  # (R, C)
        f_k = basis @ f_hat
        error = LOSS.error_signal(f_k, y_pad, rows=True) * _row(omega, k)[:, None]
        c["delta"] = _set_row(c["delta"], k, basis.T @ error)
        c["f"] = _set_row(c["f"], k, f_k)
        return c

    carry = jax.lax.fori_loop(0, T, step, carry)
    diag = jnp.arange(T)
    phis = jnp.stack([p[diag, :, diag, :] for p in carry["phi"]], axis=1)
    gs = jnp.stack([g.reshape(T, C, T, C)[diag, :, diag, :] for g in carry["g"]], axis=1)
    return carry["f"], phis, gs


# ----------------------------------------------------------------------------------------------
# The infinite-depth limit of residual networks


@dataclasses.dataclass(frozen=True)
class DepthLimit:
    """Residual solves at growing depth and their extrapolation to L → ∞ in 1/L.

    Attributes:
        depths: the depths L solved (increasing).
        t: the spec times.
        loss: training loss (len(depths), T) at each depth.
        limit: the extrapolated loss (T,) from the two deepest solves, x∞ = x_L2 + (x_L2 − x_L1)
            L1/(L2 − L1) (the fit x = x∞ + c/L through them).
        error: its error estimate (T,): the distance to the same extrapolation from the
            next-to-deepest pair (NaN with fewer than three depths).
        rate: the observed order p of x_L → x∞ from the last three depths,
            p = log(|x_{L2} − x_{L1}| / |x_{L3} − x_{L2}|) / log(L3/L2) for depths in geometric
            progression (max over times of the differences; NaN with fewer than three depths).
    """

    depths: tuple[int, ...]
    t: np.ndarray
    loss: np.ndarray
    limit: np.ndarray
    error: np.ndarray
    rate: float


def infinite_depth_limit(spec: Spec, depths, method: DeepLinearDMFT | None = None) -> DepthLimit:
    """Solve the residual spec (``architecture.residual_scale`` set) at each of `depths` with the
    deep-linear closure (other keys fixed; the branch scale α/L^β follows L) and extrapolate the
    training loss to L → ∞ in 1/L (`DepthLimit`)."""
    depths = tuple(int(d) for d in depths)
    if spec.architecture.residual_scale is None:
        raise InputError("infinite_depth_limit needs architecture.residual_scale (a residual spec)")
    if len(depths) < 2 or any(b <= a for a, b in zip(depths, depths[1:])) or depths[0] < 2:
        raise InputError(f"infinite_depth_limit: depths must be at least two increasing integers "
                         f">= 2, got {depths}")
    method = method or DeepLinearDMFT()
    losses = []
    for depth in depths:
        arch = dataclasses.replace(spec.architecture, hidden_layers=depth)
        solution = method.solve(dataclasses.replace(spec, architecture=arch))
        losses.append(solution.losses(spec.data.y_train)["loss_train"])  # (T,), any C
    losses = np.array(losses)

    def extrapolate(i, j):
        a, b = depths[i], depths[j]
        return losses[j] + (losses[j] - losses[i]) * a / (b - a)

    limit = extrapolate(-2, -1)
    error = np.abs(limit - extrapolate(-3, -2)) if len(depths) >= 3 else np.full_like(limit, np.nan)
    rate = math.nan
    if len(depths) >= 3:
        first = np.max(np.abs(losses[-2] - losses[-3]))
        second = np.max(np.abs(losses[-1] - losses[-2]))
        if first > 0 and second > 0:
            rate = math.log(first / second) / math.log(depths[-1] / depths[-2])
    return DepthLimit(depths, np.asarray(spec.training.times, dtype=np.float64), losses, limit,
                      error, rate)
