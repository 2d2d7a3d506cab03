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
from .._progress import progress_bar
from ..spec import Spec
from ._dmft import (
    check_bool,
    check_mup,
    check_positive,
    input_kernel,
    is_identity_activation,
    options_from_table,
)
from ._solution import Solution


@dataclasses.dataclass(frozen=True)
class DeepLinearDMFT:
    """Exact DMFT of a deep linear μP network by causal time-marching of the Gaussian closure.

    Attributes:
        dt: grid step (the horizon is split into ceil(t_max/dt) equal steps). If the grid would
            need more than ``max_memory_gb`` the step is enlarged to fit, with a warning.
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
        """From a spec's ``[solver]`` table (without its ``method`` key)."""
        return options_from_table(cls, table, "deep_linear")

    @property
    def order(self) -> int:
        """Convergence order in dt of the result at fixed t."""
        return 2 if self.extrapolate else 1

    def solve(self, spec: Spec) -> Solution:
        """March the closure to the last spec time; interpolate to the spec times."""
        check_mup(spec)
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
        steps = self._steps(t_max, num_points, num_layers)
        dt = t_max / steps if steps else 0.0
        kx = jnp.asarray(input_kernel(spec))
        y = jnp.asarray(data.y_train)
        gamma0 = jnp.asarray(arch.gamma0, kx.dtype)

        grids = [steps] + ([2 * steps] if self.extrapolate and steps else [])
        runs = []
        _PROGRESS[0] = progress_bar(sum(n + 1 for n in grids), "deep_linear DMFT (time steps)")
        try:
            for n in grids:
                runs.append(jax.tree_util.tree_map(np.asarray, _march(
                    kx, y, gamma0, jnp.asarray(t_max / n if n else 0.0, kx.dtype), n + 1,
                    num_layers, _stages(n + 1, num_points))))
        finally:
            _PROGRESS[0].close()
            _PROGRESS[0] = None
        for n, run in zip(grids, runs):
            grid = np.arange(n + 1) * (t_max / n if n else 0.0)
            bad = _first_bad(grid, run)
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
        f, ntk, phis, gs = (_interpolate(v, dt, times) for v in values)

        return Solution.from_augmented(
            times, f, ntk, num_train,
            phi=tuple(phis[:, layer] for layer in range(num_layers)),
            g=tuple(gs[:, layer] for layer in range(num_layers)),
            diagnostics={
                "method": "deep_linear",
                "settings": dataclasses.asdict(self),
                "dt": dt,
                "steps": steps,
                "grids": grids,
                "order": self.order,
                "iterations": 0,
                "residual": 0.0,  # the march solves the closure exactly: no fixed-point residual
                "richardson_difference": richardson_difference,
                "interpolation": "4-point Lagrange on the uniform grid",
                "wall_time_s": time.perf_counter() - start,
            },
        )

    def _steps(self, t_max: float, num_points: int, num_layers: int) -> int:
        """Number of coarse steps: ceil(t_max/dt), reduced to fit the memory budget."""
        if t_max == 0:
            return 0
        steps = max(1, math.ceil(t_max / self.dt - 1e-9))
        finest = 2 if self.extrapolate else 1
        arrays = 2 * num_layers - 1  # Φ^1..Φ^L and the propagators Hu of layers 2..L, each (TQ)²
        limit = self.max_memory_gb * 2**30 / (8 * arrays)
        max_points = int(math.sqrt(limit) / num_points)  # T_finest·Q <= sqrt(limit)
        max_steps = (max_points - 1) // finest
        if max_steps < 1:
            raise InputError(
                f"solver.max_memory_gb = {self.max_memory_gb:g} is too small for the deep_linear "
                f"closure with P + P_test = {num_points} points"
            )
        if steps > max_steps:
            warnings.warn(
                f"deep_linear: dt = {self.dt:g} needs {steps} steps, more than fit in "
                f"solver.max_memory_gb = {self.max_memory_gb:g}; using dt = {t_max / max_steps:.3g}",
                stacklevel=3,
            )
            steps = max_steps
        return steps


_PROGRESS: list = [None]  # the progress bar of the running solve, ticked from inside the march


def _tick(_k) -> None:
    if _PROGRESS[0] is not None:
        _PROGRESS[0].update(1)


def _stages(num_grid: int, num_points: int) -> int:
    """Stages of the march: one for small grids (compile time dominates), four for large ones."""
    return 1 if num_grid * num_points <= 600 else 4


def _first_bad(grid: np.ndarray, run) -> float | None:
    bad = np.zeros(grid.shape[0], dtype=bool)
    for array in run:
        bad |= ~np.all(np.isfinite(array.reshape(array.shape[0], -1)), axis=1)
    return float(grid[np.argmax(bad)]) if bad.any() else None


def _interpolate(values: np.ndarray, dt: float, times: np.ndarray) -> np.ndarray:
    """4-point Lagrange interpolation of grid values (leading axis: t_k = k dt) at `times`."""
    num = values.shape[0]
    if num == 1:
        return np.repeat(values, times.shape[0], axis=0)
    position = times / dt
    stencil = min(4, num)
    first = np.clip(np.floor(position).astype(int) - 1, 0, num - stencil)
    nodes = first[:, None] + np.arange(stencil)[None, :]  # (T, stencil)
    weights = np.ones(nodes.shape)
    for a in range(stencil):
        for b in range(stencil):
            if a != b:
                weights[:, a] *= (position - nodes[:, b]) / (nodes[:, a] - nodes[:, b])
    return np.einsum("ts,ts...->t...", weights, values[nodes])


@functools.partial(jax.jit, static_argnames=("num_grid", "num_layers", "chunks"))
def _march(
    kx: Float[Array, "Q Q"],
    y: Float[Array, " P"],
    gamma0: Float[Array, ""],
    dt: Float[Array, ""],
    num_grid: int,
    num_layers: int,
    chunks: int = 1,
):
    """One explicit march on t_k = k dt, k < num_grid. Returns per grid point: f (T, Q),
    K (T, Q, Q), Φ^ℓ(t,t) (T, L, Q, Q) and G^ℓ(t,t) (T, L).

    Layer 1's source u^1 ~ N(0, Φ^0) is static, so its propagators onto u^1 are stored per
    row only (``hu1`` (T, Q, Q), ``zu1`` (T, Q)) and Φ^0 is never tiled over time: memory is
    (2L − 1)(TQ)² floats.

    At step k only the leading (k+1) time rows/columns are non-zero, so the march runs in
    `chunks` stages whose arrays are truncated to the stage's last step (static shapes): the
    O((TQ)²)-per-step contractions then cost ≈ T³(1 + 4 + … + chunks²)/chunks³ instead of T³.
    """
    num_final, L = num_grid, num_layers
    Q, P = kx.shape[0], y.shape[0]
    dtype = kx.dtype
    scale = gamma0 * dt / P
    y_pad = jnp.zeros(Q, dtype).at[:P].set(y)
    train = jnp.zeros(Q, dtype).at[:P].set(1.0)
    eye_q = jnp.eye(Q, dtype=dtype)

    # Layouts: kernels/propagators indexed [k, μ, j, ν] (row time, row point, column time, column
    # point); one array per layer (Python lists, unrolled over the L layers). Index i = ℓ − 1.
    T = 1  # the first stage's size; arrays grow by zero-padding between stages
    carry = dict(
        hu1=jnp.zeros((T, Q, Q), dtype),  # ∂h^1_{kμ}/∂u^1_ν (u^1 static)
        zu1=jnp.zeros((T, Q), dtype),  # ∂z^1_k/∂u^1_ν
        hu=[jnp.zeros((T, Q, T, Q), dtype) for _ in range(L - 1)],  # ℓ ≥ 2: ∂h^ℓ_{kμ}/∂u^ℓ_{jν}
        zu=[jnp.zeros((T, T, Q), dtype) for _ in range(L - 1)],  # ℓ ≥ 2: ∂z^ℓ_k/∂u^ℓ_{jν}
        hr=[jnp.zeros((T, Q, T), dtype) for _ in range(L)],  # ∂h^ℓ_{kμ}/∂r^ℓ_j
        zr=[jnp.zeros((T, T), dtype) for _ in range(L)],  # ∂z^ℓ_k/∂r^ℓ_j
        phi=[jnp.zeros((T, Q, T, Q), dtype) for _ in range(L)],  # Φ^1..Φ^L
        g=[jnp.zeros((T, T), dtype) for _ in range(L)],  # G^1..G^L
        delta=jnp.zeros((T, Q), dtype),
        f=jnp.zeros((T, Q), dtype),
    )
    time_axes = dict(hu1=(0,), zu1=(0,), hu=(0, 2), zu=(0, 1), hr=(0, 2), zr=(0, 1), phi=(0, 2),
                     g=(0, 1), delta=(0,), f=(0,))

    def grow(carry, size):
        def pad(array, axes):
            widths = [(0, size - array.shape[a]) if a in axes else (0, 0) for a in range(array.ndim)]
            return jnp.pad(array, widths)
        return {key: [pad(a, time_axes[key]) for a in value] if isinstance(value, list)
                else pad(value, time_axes[key]) for key, value in carry.items()}

    def row_of(array, k):
        return jax.lax.dynamic_index_in_dim(array, k, 0, keepdims=False)

    def set_row(array, k, row):
        zero = jnp.zeros((), k.dtype)
        return jax.lax.dynamic_update_slice(array, row[None], (k,) + (zero,) * row.ndim)

    def set_phi(array, k, row):  # row [μ, j, ν] = Φ[k, μ, j, ν]; Φ symmetric: also column k
        zero = jnp.zeros((), k.dtype)
        array = set_row(array, k, row)
        return jax.lax.dynamic_update_slice(
            array, jnp.transpose(row, (1, 2, 0))[:, :, None, :], (zero, zero, k, zero))

    def set_g(array, k, row):
        return jax.lax.dynamic_update_slice(set_row(array, k, row), row[:, None],
                                            (jnp.zeros((), k.dtype), k))

    def make_step(T):
        g_top = jnp.ones((T, T), dtype)  # G^{L+1} = 1

        def step(k, c):
            jax.debug.callback(_tick, k)
            past = (jnp.arange(T) < k).astype(dtype)
            delta = c["delta"] * past[:, None]  # Δ_s for s < k (zero on test points)
            onehot = jax.nn.one_hot(k, T, dtype=dtype)
            hu1, zu1 = c["hu1"], c["zu1"]
            hu, zu, hr, zr = list(c["hu"]), list(c["zu"]), list(c["hr"]), list(c["zr"])
            phi, g = list(c["phi"]), list(c["g"])
            g_of = lambda layer: g_top if layer == L + 1 else g[layer - 1]  # G^layer  # noqa: E731

            # Forward sweep: rows k of h^ℓ's propagators and of Φ^ℓ, ℓ = 1..L.
            coupling = scale * (kx @ delta.T)  # C^1_{k s μ} = (γ0 dt/P) Σ_α Φ^0_{μα} Δ_{sα}
            hu1_row = eye_q + jnp.einsum("ms,sn->mn", coupling, zu1)
            hr_row = coupling @ zr[0]
            hu1 = set_row(hu1, k, hu1_row)
            hr[0] = set_row(hr[0], k, hr_row)
            row = jnp.einsum("mA,AB,jnB->mjn", hu1_row, kx, hu1) + jnp.einsum(
                "mb,jnb->mjn", hr_row @ g_of(2), hr[0])
            phi[0] = set_phi(phi[0], k, row)
            for layer in range(2, L + 1):
                i = layer - 1
                row_below = row_of(phi[i - 1], k)  # Φ^{ℓ-1}[k, μ, s, α]
                coupling = scale * jnp.einsum("msa,sa->ms", row_below, delta) + row_of(hr[i - 1], k) * past
                hu_row = onehot[None, :, None] * eye_q[:, None, :] + jnp.einsum(
                    "ms,sjn->mjn", coupling, zu[i - 1])
                hr_row = coupling @ zr[i]
                hu[i - 1] = set_row(hu[i - 1], k, hu_row)
                hr[i] = set_row(hr[i], k, hr_row)
                x = jnp.einsum("maA,aAbB->mbB", hu_row, phi[i - 1])
                row = jnp.einsum("mbB,jnbB->mjn", x, hu[i - 1]) + jnp.einsum(
                    "mb,jnb->mjn", hr_row @ g_of(layer + 1), hr[i])
                phi[i] = set_phi(phi[i], k, row)

            # Backward sweep: rows k of z^ℓ's propagators and of G^ℓ, ℓ = L..1.
            for layer in range(L, 0, -1):
                i = layer - 1
                g_above = g_of(layer + 1)
                coupling = scale * row_of(g_above, k)[:, None] * delta  # D^ℓ_{k s α}
                if layer < L:
                    coupling = coupling + row_of(zu[i], k) * past[:, None]  # ∂z^{ℓ+1}_k/∂u^{ℓ+1}_s
                zr_row = onehot + jnp.einsum("sa,saj->j", coupling, hr[i])
                zr[i] = set_row(zr[i], k, zr_row)
                if layer == 1:
                    zu1_row = jnp.einsum("sa,san->n", coupling, hu1)
                    zu1 = set_row(zu1, k, zu1_row)
                    row = zu1 @ (kx @ zu1_row)
                else:
                    zu_row = jnp.einsum("sa,sajn->jn", coupling, hu[i - 1])
                    zu[i - 1] = set_row(zu[i - 1], k, zu_row)
                    x = jnp.einsum("aA,aAbB->bB", zu_row, phi[i - 1])
                    row = jnp.einsum("bB,jbB->j", x, zu[i - 1])
                g[i] = set_g(g[i], k, row + zr[i] @ (zr_row @ g_above))

            # Output: f_k = γ0⁻¹ Cov(z^L_k, h^L_k) over all Q points.
            i = L - 1
            if L == 1:
                cov = hu1_row @ (kx @ zu1_row)
            else:
                cov = jnp.einsum("aA,aAbB,mbB->m", row_of(zu[i - 1], k), phi[i - 1], row_of(hu[i - 1], k))
            cov = cov + row_of(hr[i], k) @ (g_top @ row_of(zr[i], k))
            f_k = cov / gamma0
            return dict(hu1=hu1, zu1=zu1, hu=hu, zu=zu, hr=hr, zr=zr, phi=phi, g=g,
                        delta=set_row(c["delta"], k, (y_pad - f_k) * train),
                        f=set_row(c["f"], k, f_k))

        return step

    bounds = sorted({max(1, -(-num_final * stage // chunks)) for stage in range(1, chunks + 1)})
    start = 0
    for stop in bounds:
        carry = grow(carry, stop)
        carry = jax.lax.fori_loop(start, stop, make_step(stop), carry)
        start = stop
    out, T = carry, num_final
    diag = jnp.arange(T)
    phi0 = jnp.broadcast_to(kx, (T, Q, Q))
    phis = jnp.stack([phi0] + [p[diag, :, diag, :] for p in out["phi"]], axis=1)  # (T, L+1, Q, Q)
    gs = jnp.stack([g[diag, diag] for g in out["g"]] + [jnp.ones(T, dtype)], axis=1)  # G^1..G^{L+1}
    ntk = jnp.einsum("tl,tlmn->tmn", gs, phis)  # K = Σ_{ℓ=0}^{L} G^{ℓ+1} Φ^ℓ
    return out["f"], ntk, phis[:, 1:], gs[:, :L]
