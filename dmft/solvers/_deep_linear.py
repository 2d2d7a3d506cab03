"""Deep linear networks (φ = identity, any L): the exact Gaussian closure, time-marched.

With φ = id every field is linear in the Gaussian sources (u^ℓ, r^ℓ), so the single-site process
closes on covariances and responses: no sampling. On the grid t_k = k dt the fields of layer ℓ are
(derivations/dmft.md, eq:deep_linear_fields)

    h^ℓ_k = u^ℓ_k + Σ_{s<k} C^ℓ_{ks} z^ℓ_s,     C^ℓ_{ks} = ∂h^{ℓ-1}_k/∂r^{ℓ-1}_s + (γ0 dt/P) Φ^{ℓ-1}_{ks} Δ_s
    z^ℓ_k = r^ℓ_k + Σ_{s<k} D^ℓ_{ks}·h^ℓ_s,     D^ℓ_{ks} = ∂z^{ℓ+1}_k/∂u^{ℓ+1}_s + (γ0 dt/P) G^{ℓ+1}_{ks} Δ_s

which is the exact infinite-width limit of gradient *descent* with step dt (the weights at step k
have seen the updates s < k), with the output read from the exact identity
f_k = γ0⁻¹ Cov(z^L_k, h^L_k). Writing each field through its propagators onto the sources
(h^ℓ_k = Σ_j Hu_{kj} u_j + Hr_{kj} r_j, z^ℓ_k = Σ_j Zu_{kj}·u_j + Zr_{kj} r_j), the responses *are*
the propagators (∂h/∂r = Hr, ∂z/∂u = Zu) and the kernels are Φ^ℓ = Hu Φ^{ℓ-1} Huᵀ + Hr G^{ℓ+1} Hrᵀ,
G^ℓ = Zu Φ^{ℓ-1} Zuᵀ + Zr G^{ℓ+1} Zrᵀ. Everything is strictly causal, so one explicit march over
k (forward sweep over layers for h, backward sweep for z, then f_k) solves the closure exactly: no
outer fixed-point loop, no damping.

Discretisation order: the march is first order in dt against gradient flow (Euler-like steps);
with ``extrapolate=True`` (default) the solve is repeated at dt/2 and combined as
2·x_{dt/2} − x_{dt} (Richardson), which is second order. Values at the spec times are 4-point
Lagrange interpolants of the grid values (interpolation error O(dt⁴), below either order).

Cost: O(L (TQ)³) time and (2L − 1)(TQ)² memory for T grid points and Q = P + P_test points.
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
        dt: grid step (the horizon is split into ceil(t_max/dt) equal steps). If the grid would
            need more than ``max_memory_gb`` the step is enlarged to fit, with a warning, as long
            as it stays below half the time scale P/λ_max(K0) of the dynamics (else InputError).
        extrapolate: Richardson-extrapolate dt and dt/2 (second order) instead of a single
            first-order march.
        max_memory_gb: memory budget of the (TQ)² propagators and kernels.
    """

    dt: float = 0.05
    extrapolate: bool = True
    max_memory_gb: float = 2.0

    def __post_init__(self):
        object.__setattr__(self, "dt", check_positive("dt", self.dt))
        object.__setattr__(self, "max_memory_gb", check_positive("max_memory_gb", self.max_memory_gb))
        check_bool("extrapolate", self.extrapolate)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> DeepLinearDMFT:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "deep_linear")

    @property
    def order(self) -> int:
        """Convergence order in dt of the result at fixed t."""
        return 2 if self.extrapolate else 1

    def solve(self, spec: Spec) -> Solution:
        """March the closure to the last spec time; interpolate to the spec times."""
        require_float64("the deep_linear DMFT")
        check_mup(spec, self)
        if not is_identity_activation(spec.architecture.activation):
            raise InputError(
                "solver.method = 'deep_linear' needs architecture.activation = \"linear\" "
                f"(φ = identity), got {spec.architecture.activation!r}; use 'two_layer' (L = 1) or "
                "'monte_carlo'"
            )
        start = time.perf_counter()
        arch, data = spec.architecture, spec.data
        num_layers, num_train = arch.hidden_layers, data.num_train
        num_points = num_train + data.num_test
        times = np.asarray(spec.training.times, dtype=np.float64)
        t_max = float(times[-1])
        kx_np = input_kernel(spec)
        steps = self._steps(t_max, num_points, num_layers, spec, kx_np[:num_train, :num_train])
        dt = t_max / steps if steps else 0.0
        kx = jnp.asarray(kx_np)
        y = jnp.asarray(data.y_train)
        gamma0 = jnp.asarray(arch.gamma0, kx.dtype)
        network = network_of(spec)

        grids = [steps] + ([2 * steps] if self.extrapolate and steps else [])
        runs = []
        bar = new_bar(sum(n + 1 for n in grids), "deep_linear DMFT (time steps)")
        ticker = StepTicker.for_solve(bar)
        try:
            for n in grids:
                f, phis, gs = jax.tree_util.tree_map(np.asarray, _march(
                    kx, y, gamma0, jnp.asarray(t_max / n if n else 0.0, kx.dtype), n + 1,
                    num_layers, _stages(n + 1, num_points), ticker))
                # K = Σ_{ℓ=0}^{L} G^{ℓ+1} Φ^ℓ on this grid (before Richardson: K is bilinear)
                ntk = layer_ntk(network, kx_np[None], [phis[:, layer] for layer in range(num_layers)],
                                [gs[:, layer, None, None] for layer in range(num_layers)])
                runs.append((f, ntk, phis, gs))
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
                                 f"{t_max / n:g}); {hint}")
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
                dt=dt, steps=steps, grids=grids, order=self.order,
                richardson_difference=richardson_difference,
                interpolation="4-point Lagrange on the uniform grid",
            ),
        )

    def _steps(self, t_max: float, num_points: int, num_layers: int, spec: Spec,
               kx_train: np.ndarray) -> int:
        """Number of coarse steps: ceil(t_max/dt), reduced to fit the memory budget as long as
        the step stays a sane fraction of the time scale of the dynamics (else InputError)."""
        finest = 2 if self.extrapolate else 1
        arrays = 2 * num_layers - 1  # Φ^1..Φ^L and the propagators Hu of layers 2..L, each (TQ)²
        steps = max(1, math.ceil(t_max / self.dt - 1e-9)) if t_max else 0
        grid_points = (finest * steps + 1) * num_points
        check_layers("deep_linear", num_layers,
                     f"≈ {gib(8.0 * arrays * grid_points**2)} and ≈ {num_layers * grid_points**3:.2g} "
                     f"flops for {finest * steps + 1} grid points × Q = {num_points} points")
        if t_max == 0:
            return 0
        limit = self.max_memory_gb * 2**30 / (8 * arrays)
        max_points = int(math.sqrt(limit) / num_points)  # T_finest·Q <= sqrt(limit)
        max_steps = (max_points - 1) // finest
        if max_steps < 1:
            raise InputError(
                f"solver.max_memory_gb = {self.max_memory_gb:g} is too small for the deep_linear "
                f"closure with P + P_test = {num_points} points"
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


def _stages(num_grid: int, num_points: int) -> int:
    """Stages of the march: one for small grids (compile time dominates), four for large ones."""
    return 1 if num_grid * num_points <= 600 else 4


# ----------------------------------------------------------------------------------------------
# The march. Layouts: kernels/propagators indexed [k, μ, (source)] with row time k and row point
# μ; one array per layer ℓ = 1..L (Python lists, index i = ℓ − 1, unrolled over the layers).
# A layer's source u^ℓ has `src` entries: layer 1's u^1 ~ N(0, Φ^0) is static (src = Q, its
# covariance Φ^0 never tiled over time), layer ℓ >= 2's u^ℓ ~ GP(0, Φ^{ℓ-1}) is dynamic
# (src = T·Q, covariance Φ^{ℓ-1} (T, Q, T, Q) flattened). Everything else is the same per layer:
#   hu[i] (T, Q, src) ∂h^ℓ_{kμ}/∂u^ℓ,  zu[i] (T, src) ∂z^ℓ_k/∂u^ℓ,
#   hr[i] (T, Q, T)   ∂h^ℓ_{kμ}/∂r^ℓ_j, zr[i] (T, T)   ∂z^ℓ_k/∂r^ℓ_j,
#   phi[i] (T, Q, T, Q) Φ^ℓ,            g[i] (T, T)     G^ℓ (data-independent for φ = id).


def _row(array, k):
    return jax.lax.dynamic_index_in_dim(array, k, 0, keepdims=False)


def _set_row(array, k, row):
    zero = jnp.zeros((), k.dtype)
    return jax.lax.dynamic_update_slice(array, row[None], (k,) + (zero,) * row.ndim)


def _set_symmetric(array, k, row):
    """Row and column k of a symmetric kernel: Φ (T, Q, T, Q) from row [μ, j, ν], or G (T, T)."""
    zero = jnp.zeros((), k.dtype)
    array = _set_row(array, k, row)
    if array.ndim == 2:
        return jax.lax.dynamic_update_slice(array, row[:, None], (zero, k))
    return jax.lax.dynamic_update_slice(
        array, jnp.transpose(row, (1, 2, 0))[:, :, None, :], (zero, zero, k, zero))


def _flat(array):
    """Merge the trailing (time, point) source axes of a dynamic-source array."""
    return array.reshape(*array.shape[:-2], -1)


def _source_cov(c, kx, i):
    """The covariance of layer i's source: Φ^0 (Q, Q) for layer 1, else Φ^{ℓ-1} (TQ, TQ)."""
    if i == 0:
        return kx
    phi = c["phi"][i - 1]
    return phi.reshape(phi.shape[0] * phi.shape[1], -1)


def _source_identity(i, k, T, Q, dtype):
    """∂u^ℓ_{kμ}/∂u^ℓ: δ_{μν} for the static u^1, δ_{(k,μ),(j,ν)} for a dynamic source."""
    eye_q = jnp.eye(Q, dtype=dtype)
    if i == 0:
        return eye_q
    onehot = jax.nn.one_hot(k, T, dtype=dtype)
    return _flat(onehot[None, :, None] * eye_q[:, None, :])


def _forward_layer(c, i, k, kx, delta, past, scale, g_above):
    """Row k of h^ℓ's propagators and of Φ^ℓ (eq:deep_linear_fields):
    h^ℓ_k = u^ℓ_k + Σ_{s<k} C_{ks} z^ℓ_s with C_{ks} = ∂h^{ℓ-1}_k/∂r^{ℓ-1}_s + (γ0 dt/P) Φ^{ℓ-1}_{ks} Δ_s."""
    T, Q = delta.shape
    if i == 0:  # Φ^0 is static and there is no r^0: C^1_{ksμ} = (γ0 dt/P) Σ_α Φ^0_{μα} Δ_{sα}
        coupling = scale * (kx @ delta.T)
    else:
        coupling = (scale * jnp.einsum("msa,sa->ms", _row(c["phi"][i - 1], k), delta)
                    + _row(c["hr"][i - 1], k) * past)
    hu_row = _source_identity(i, k, T, Q, kx.dtype) + coupling @ c["zu"][i]  # (Q, src)
    hr_row = coupling @ c["zr"][i]  # (Q, T)
    c["hu"][i] = _set_row(c["hu"][i], k, hu_row)
    c["hr"][i] = _set_row(c["hr"][i], k, hr_row)
    # Φ^ℓ = Hu Φ^{ℓ-1} Huᵀ + Hr G^{ℓ+1} Hrᵀ, row k
    row = (jnp.einsum("mB,jnB->mjn", hu_row @ _source_cov(c, kx, i), c["hu"][i])
           + jnp.einsum("mb,jnb->mjn", hr_row @ g_above, c["hr"][i]))
    c["phi"][i] = _set_symmetric(c["phi"][i], k, row)


def _backward_layer(c, i, k, kx, delta, past, scale, g_above, num_layers):
    """Row k of z^ℓ's propagators and of G^ℓ:
    z^ℓ_k = r^ℓ_k + Σ_{s<k} D_{ks}·h^ℓ_s with D_{ks} = ∂z^{ℓ+1}_k/∂u^{ℓ+1}_s + (γ0 dt/P) G^{ℓ+1}_{ks} Δ_s."""
    T, Q = delta.shape
    coupling = scale * _row(g_above, k)[:, None] * delta  # (T, Q)
    if i < num_layers - 1:  # the read-out weights have no source: no response above layer L
        coupling = coupling + _row(c["zu"][i + 1], k).reshape(T, Q) * past[:, None]
    zr_row = jax.nn.one_hot(k, T, dtype=kx.dtype) + jnp.einsum("sa,saj->j", coupling, c["hr"][i])
    zu_row = jnp.einsum("sa,san->n", coupling, c["hu"][i])
    c["zr"][i] = _set_row(c["zr"][i], k, zr_row)
    c["zu"][i] = _set_row(c["zu"][i], k, zu_row)
    # G^ℓ = Zu Φ^{ℓ-1} Zuᵀ + Zr G^{ℓ+1} Zrᵀ, row k
    row = c["zu"][i] @ (_source_cov(c, kx, i) @ zu_row) + c["zr"][i] @ (zr_row @ g_above)
    c["g"][i] = _set_symmetric(c["g"][i], k, row)


def _readout(c, k, kx, gamma0, g_top):
    """f_k = γ0⁻¹ Cov(z^L_k, h^L_k) over all Q points."""
    i = len(c["hu"]) - 1
    cov = _row(c["hu"][i], k) @ (_source_cov(c, kx, i) @ _row(c["zu"][i], k))
    return (cov + _row(c["hr"][i], k) @ (g_top @ _row(c["zr"][i], k))) / gamma0


def _make_step(T, kx, y_pad, train, gamma0, scale, num_layers, ticker):
    """The march step of a stage whose arrays span T grid points: forward sweep ℓ = 1..L,
    backward sweep ℓ = L..1, then the read-out and Δ_k."""
    g_top = jnp.ones((T, T), kx.dtype)  # G^{L+1} = 1

    def g_of(c, i):  # G^{ℓ} for layer index i = ℓ − 1 (i = L: the read-out's G^{L+1})
        return g_top if i == num_layers else c["g"][i]

    def step(k, carry):
        if ticker is not None:
            ticker.tick(k)
        c = {key: list(value) if isinstance(value, list) else value for key, value in carry.items()}
        past = (jnp.arange(T) < k).astype(kx.dtype)
        delta = c["delta"] * past[:, None]  # Δ_s for s < k (zero on test points)
        for i in range(num_layers):
            _forward_layer(c, i, k, kx, delta, past, scale, g_of(c, i + 1))
        for i in reversed(range(num_layers)):
            _backward_layer(c, i, k, kx, delta, past, scale, g_of(c, i + 1), num_layers)
        f_k = _readout(c, k, kx, gamma0, g_top)
        c["delta"] = _set_row(c["delta"], k, LOSS.error_signal(f_k, y_pad) * train)
        c["f"] = _set_row(c["f"], k, f_k)
        return c

    return step


def _initial_carry(num_layers, Q, dtype):
    """Zero arrays of one grid point, and per array {axis: entries per grid point} of its time
    axes, along which the stages grow them (a dynamic source axis holds Q entries per point)."""
    carry = dict(
        hu=[jnp.zeros((1, Q, Q), dtype) for _ in range(num_layers)],
        zu=[jnp.zeros((1, Q), dtype) for _ in range(num_layers)],
        hr=[jnp.zeros((1, Q, 1), dtype) for _ in range(num_layers)],
        zr=[jnp.zeros((1, 1), dtype) for _ in range(num_layers)],
        phi=[jnp.zeros((1, Q, 1, Q), dtype) for _ in range(num_layers)],
        g=[jnp.zeros((1, 1), dtype) for _ in range(num_layers)],
        delta=jnp.zeros((1, Q), dtype),
        f=jnp.zeros((1, Q), dtype),
    )
    dynamic = num_layers - 1
    time_axes = dict(hu=[{0: 1}] + [{0: 1, 2: Q}] * dynamic, zu=[{0: 1}] + [{0: 1, 1: Q}] * dynamic,
                     hr=[{0: 1, 2: 1}] * num_layers, zr=[{0: 1, 1: 1}] * num_layers,
                     phi=[{0: 1, 2: 1}] * num_layers, g=[{0: 1, 1: 1}] * num_layers,
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


@functools.partial(jax.jit, static_argnames=("num_grid", "num_layers", "chunks", "ticker"))
def _march(
    kx: Float[Array, "Q Q"],
    y: Float[Array, " P"],
    gamma0: Float[Array, ""],
    dt: Float[Array, ""],
    num_grid: int,
    num_layers: int,
    chunks: int = 1,
    ticker: StepTicker | None = None,
):
    """One explicit march on t_k = k dt, k < num_grid. Returns per grid point: f (T, Q),
    Φ^ℓ(t,t) (T, L, Q, Q) and G^ℓ(t,t) (T, L). Memory: (2L − 1)(TQ)² floats.

    At step k only the leading (k+1) time rows/columns are non-zero, so the march runs in
    `chunks` stages whose arrays are truncated to the stage's last step (static shapes): the
    O((TQ)²)-per-step contractions then cost ≈ T³(1 + 4 + … + chunks²)/chunks³ instead of T³.
    """
    Q, P = kx.shape[0], y.shape[0]
    dtype = kx.dtype
    y_pad = jnp.zeros(Q, dtype).at[:P].set(y)
    train = jnp.zeros(Q, dtype).at[:P].set(1.0)
    carry, time_axes = _initial_carry(num_layers, Q, dtype)
    bounds = sorted({max(1, -(-num_grid * stage // chunks)) for stage in range(1, chunks + 1)})
    start = 0
    for stop in bounds:
        carry = _grow(carry, time_axes, stop)
        step = _make_step(stop, kx, y_pad, train, gamma0, gamma0 * dt / P, num_layers, ticker)
        carry = jax.lax.fori_loop(start, stop, step, carry)
        start = stop
    diag = jnp.arange(num_grid)
    phis = jnp.stack([p[diag, :, diag, :] for p in carry["phi"]], axis=1)  # (T, L, Q, Q)
    gs = jnp.stack([g[diag, diag] for g in carry["g"]], axis=1)  # (T, L)
    return carry["f"], phis, gs
