"""Tier "quadrature": numeric dual maps for activations without a closed form.

Two methods, both pure JAX, broadcasting, elementwise in (q1, q2, c) and lean in memory:

`Mehler` (smooth φ). With h_k = He_k/√k! and φ(√q z) = Σ_k a_k(q) h_k(z), Mehler's formula gives

    K(q1, q2, c) = Σ_{k=0}^{K} a_k(q1) a_k(q2) ρ^k,      ρ = c/√(q1 q2),

summed by Horner's rule (one (…)-shaped temporary per term). The coefficients a_k(q) are computed
once per variance, by an n-node Gauss–Hermite rule (Golub–Welsch: the eigenvector components of the
Jacobi matrix are exactly √w_i h_k(z_i), so nothing overflows). By Parseval and Cauchy–Schwarz the
truncation error is at most √(T(q1) T(q2)) with T(q) = E[φ(√q z)²] − Σ_{k≤K} a_k(q)², worst at
ρ = ±1; `validated_range` finds the variances where this relative tail is below a target.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=8)
def _hermite_basis(nodes: int, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes z_i, √w_i (Σ w_i = 1) and B_ik = √w_i h_k(z_i), k ≤ order."""
    off = np.sqrt(np.arange(1.0, nodes))
    z, V = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    V = V * np.sign(V[0])
    return z, V[0].copy(), np.ascontiguousarray(V[: order + 1].T)


@dataclasses.dataclass(frozen=True)
class Mehler:
    """Hermite (Mehler) series of order `order`, coefficients by `nodes`-point Gauss–Hermite."""

    order: int = 256
    nodes: int = 400

    def coefficients(self, f, q):
        """a_k(q) = E[f(√q z) h_k(z)], shape q.shape + (order+1,)."""
        z, sw, B = _hermite_basis(self.nodes, self.order)
        dtype = q.dtype
        vals = f(jnp.sqrt(q)[..., None] * jnp.asarray(z, dtype)) * jnp.asarray(sw, dtype)
        return vals @ jnp.asarray(B, dtype)

    def dual(self, f, q1, q2, c):
        """E[f(u) f(v)] by the Mehler series, broadcast over q1, q2, c."""
        a1 = jnp.moveaxis(self.coefficients(f, q1), -1, 0)[::-1]
        a2 = jnp.moveaxis(self.coefficients(f, q2), -1, 0)[::-1]
        rho = _correlation(q1, q2, c)

        def horner(acc, ab):
            return acc * rho + ab[0] * ab[1], None

        acc0 = jnp.zeros(jnp.broadcast_shapes(q1.shape, q2.shape, c.shape), rho.dtype)
        return jax.lax.scan(horner, acc0, (a1, a2))[0]

    def relative_tail(self, f, q: np.ndarray) -> np.ndarray:
        """T(q)/E[f(√q z)²]: the relative truncation error bound at ρ = ±1 (NumPy, float64)."""
        z, sw, B = _hermite_basis(self.nodes, self.order)
        vals = np.asarray(f(jnp.asarray(np.sqrt(q)[:, None] * z)), dtype=np.float64) * sw
        energy = np.sum(vals**2, axis=1)
        tail = energy - np.sum((vals @ B) ** 2, axis=1)
        return np.abs(tail) / np.maximum(energy, np.finfo(float).tiny)

    def validated_range(self, fs, target: float) -> float:
        """Largest q on a log grid up to 100 such that every f in `fs` has relative tail ≤ target."""
        grid = np.geomspace(1e-3, 100.0, 61)
        with jax.enable_x64(True):
            ok = np.ones_like(grid, dtype=bool)
            for f in fs:
                ok &= self.relative_tail(f, grid) <= target
        bad = np.nonzero(~ok)[0]
        if len(bad) == 0:
            return float(grid[-1])
        return float(grid[bad[0] - 1]) if bad[0] > 0 else 0.0


def _correlation(q1, q2, c):
    qq = q1 * q2
    pos = qq > 0
    rho = jnp.where(pos, c / jnp.sqrt(jnp.where(pos, qq, 1.0)), 0.0)
    return jnp.clip(rho, -1.0, 1.0)
