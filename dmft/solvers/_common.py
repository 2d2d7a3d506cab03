"""Pieces every infinite-width solver shares, each written once.

- the network model and the loss of a spec (`network_of`, `LOSS`): the NTK sum and the error
  signal Δ = y − f are formed only through `dmft.network` (`Network.ntk`, `MSE`);
- Gaussian source draws (`draw_normal`, `psd_root`) with antithetic pairs and moment matching;
- 4-point Lagrange interpolation from a uniform grid to the spec times (`lagrange_matrix`);
- the first non-finite saved time (`first_bad_time`);
- early refusal of solves whose cost is out of reach (`check_layers`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InputError
from .._progress import progress_bar
from ..network import MSE, Network, mlp

#: The loss of every solve (docs/conventions.md §2; the only place Δ = y − f is formed is `MSE`).
LOSS = MSE()

#: The DMFT marches unroll their L layers when they compile (Python loops over layers inside
#: jit), so compile time and program size grow linearly in L; beyond this they would run for
#: many minutes before the first step.
MAX_UNROLLED_LAYERS = 256


def network_of(spec) -> Network:
    """The network model of `spec` (its MLP shorthand)."""
    return mlp(spec.architecture)


def layer_ntk(network: Network, kx, phis, gs):
    """K = Σ_{ℓ=0}^{L} G^{ℓ+1} ⊙ Φ^ℓ through `Network.ntk`, from Φ^0 = `kx`, Φ^1..Φ^L = `phis`
    and G^1..G^L = `gs` (G^{L+1} = 1)."""
    return network.ntk([kx, *phis], [*gs, 1.0])


# ----------------------------------------------------------------------------------------------
# Sources


def psd_root(cov):
    """R with R Rᵀ = `cov` for a PSD (maybe singular) matrix: eigenvectors · √max(λ, 0)."""
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    return eigenvectors * jnp.sqrt(jnp.clip(eigenvalues, 0.0))


def draw_normal(key, batches: int, per_batch: int, shape: tuple[int, ...], dtype, *,
                antithetic: bool, flip: bool, moment_matching: bool = False, cov=None):
    """Standard-normal draws (batches, per_batch, *shape), optionally coloured to N(0, `cov`).

    With `antithetic` each batch holds per_batch/2 fresh draws followed by the same draws again,
    sign-flipped when `flip` (the r-sources: the process is symmetric under (r, γ0) → (−r, −γ0)).
    With `moment_matching` each batch's fresh draws are whitened first (empirical second moment
    exactly I; scalars: exactly 1). `cov` (Q, Q), PSD: the draws (shape (Q,)) times `psd_root`ᵀ.
    """
    fresh = per_batch // 2 if antithetic else per_batch
    x = jax.random.normal(key, (batches, fresh, *shape), dtype)
    if moment_matching:
        if shape:  # ξ ← ξ chol(ξᵀξ/n)^{-T}: the empirical second moment is exactly I
            second = jnp.einsum("bsi,bsj->bij", x, x) / fresh
            chol = jnp.linalg.cholesky(second)
            x = jax.vmap(lambda c, v: jax.scipy.linalg.solve_triangular(c, v.T, lower=True).T)(
                chol, x)
        else:
            x = x / jnp.sqrt(jnp.mean(x**2, axis=1, keepdims=True))
    if cov is not None:
        x = x @ psd_root(cov).T
    if antithetic:
        x = jnp.concatenate([x, -x if flip else x], axis=1)
    return x


# ----------------------------------------------------------------------------------------------
# Grids


def lagrange_matrix(num_grid: int, dt: float, times: np.ndarray) -> np.ndarray:
    """Weights (T, num_grid) of 4-point Lagrange interpolation from t_k = k·dt to `times`.

    The stencil is the 4 nodes around t (shifted inward at the ends; all nodes when there are
    fewer); a time within 1e-9 steps of a node takes that node's value exactly. Error O(dt⁴)."""
    times = np.asarray(times, dtype=np.float64)
    out = np.zeros((times.shape[0], num_grid))
    if num_grid == 1:
        out[:, 0] = 1.0
        return out
    position = times / dt
    stencil = min(4, num_grid)
    first = np.clip(np.floor(position).astype(int) - 1, 0, num_grid - stencil)
    nodes = first[:, None] + np.arange(stencil)[None, :]  # (T, stencil)
    weights = np.ones(nodes.shape)
    for a in range(stencil):
        for b in range(stencil):
            if a != b:
                weights[:, a] *= (position - nodes[:, b]) / (nodes[:, a] - nodes[:, b])
    rows = np.arange(times.shape[0])
    np.add.at(out, (rows[:, None], nodes), weights)
    nearest = np.rint(position)
    on_node = np.abs(position - nearest) < 1e-9
    out[on_node] = 0.0
    out[rows[on_node], np.minimum(nearest[on_node].astype(int), num_grid - 1)] = 1.0
    return out


def first_bad_time(times: np.ndarray, *arrays: np.ndarray) -> float | None:
    """The first of `times` at which any of `arrays` (leading axis T) is non-finite."""
    bad = np.zeros(times.shape[0], dtype=bool)
    for array in arrays:
        array = np.asarray(array)
        bad |= ~np.all(np.isfinite(array.reshape(array.shape[0], -1)), axis=1)
    return float(times[np.argmax(bad)]) if bad.any() else None


# ----------------------------------------------------------------------------------------------
# Progress and cost


def new_bar(total: int, desc: str):
    """The shared progress bar (`dmft._progress.progress_bar`)."""
    return progress_bar(total, desc)


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3g} GiB"


def check_layers(method: str, num_layers: int, estimate: str) -> None:
    """InputError (one line, with the cost `estimate`) when the march would unroll more than
    `MAX_UNROLLED_LAYERS` layers."""
    if num_layers > MAX_UNROLLED_LAYERS:
        raise InputError(
            f"architecture.hidden_layers = {num_layers} is too deep for the {method} DMFT: it "
            f"unrolls its layers when it compiles (at most {MAX_UNROLLED_LAYERS}) and would need "
            f"{estimate}; use fewer hidden layers"
        )


def lazy_time_scale(network: Network, kx_train) -> float:
    """P/λ_max(K0), the time scale of the lazy dynamics at initialization, for a μP network whose
    kernels start at Φ^ℓ = Φ^0 and G^ℓ = 1 (φ = identity)."""
    kx_train = np.asarray(kx_train)
    num_layers = network.hidden_layers
    ntk0 = layer_ntk(network, kx_train, [kx_train] * num_layers, [1.0] * num_layers)
    lam = float(np.linalg.eigvalsh(ntk0)[-1])
    return kx_train.shape[0] / lam if lam > 0 else math.inf
