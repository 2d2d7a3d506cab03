"""O(1/N) kernel fluctuations at initialization: the four-point vertex recursion.

Let Σ̂^ℓ be the empirical covariance of the layer-ℓ pre-activations given the layer below
(Σ̂^1 = Σ^1 is deterministic) and Φ̂^ℓ = φ(h^ℓ)·φ(h^ℓ)ᵀ/N, so Σ̂^{ℓ+1} = C_W Φ̂^ℓ + C_b with
(C_W, C_b) = (σ_w², σ_b²) (NTK) or (1, 0) (μP). Given Σ̂^ℓ the N neurons are i.i.d. N(0, Σ̂^ℓ), so
by the law of total covariance, to leading order in 1/N (Roberts–Yaida–Hanin; equal widths),

    N Cov(Φ̂^ℓ) = Cov_{u~N(0,Σ^ℓ)}[φ(u)φ(u)ᵀ] + J_ℓ [N Cov(Σ̂^ℓ)] J_ℓᵀ,     J_ℓ = ∂E_Σ[φφᵀ]/∂Σ |_{Σ^ℓ}
    N Cov(Σ̂^{ℓ+1}) = C_W² N Cov(Φ̂^ℓ),    N Cov(Σ̂^1) = 0

(derivations/finite_width.md, eq:vertex-recursion). For one pair of inputs (μ, α) the
recursion closes on the three entries (Σ_μμ, Σ_αα, Σ_μα): a 3×3 covariance per layer, which
needs only two-dimensional Gaussian integrals. These are done by a kink-aware polar
Gauss–Legendre rule in whitened coordinates: the angular integral is split at the rays where u
or v vanishes, so activations with a kink or jump at 0 (relu, step, sign, abs, leaky relu) are
integrated to machine precision, and smooth ones spectrally. J is the exact derivative of the
rule (jax.jacfwd), including the moving split angles.

Single input, critical ReLU (C_W = 2, C_b = 0): N Var Σ̂^ℓ = 5(ℓ−1)(Σ^1)² (eq:vertex-relu).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import InputError
from ..activations import get_activation
from ..spec import Architecture

_RADIUS = 12.0  # e^{-R²/2} ≈ 5e-32: the Gaussian tail beyond is negligible for polynomially bounded φ


@functools.lru_cache(maxsize=8)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return nodes, weights


@dataclasses.dataclass(frozen=True)
class PolarQuadrature:
    """Gauss–Legendre in r ∈ [0, R] and in θ on each of the four sectors between kink rays."""

    radial_nodes: int = 64
    angular_nodes: int = 48
    radius: float = _RADIUS

    def expect2(self, fn, q1, q2, c):
        """E[fn(u, v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]), |c| < √(q1 q2); fn returns an array."""
        a, b = jnp.sqrt(q1), jnp.sqrt(q2)
        rho = c / (a * b)
        s = jnp.sqrt(1.0 - rho**2)
        # u = a ξ1, v = b(ρ ξ1 + s ξ2); kinks at θ = ±π/2 (u = 0) and θ_v, θ_v + π (v = 0)
        theta_v = jnp.arctan2(-rho, s)
        two_pi = 2.0 * jnp.pi
        angles = jnp.sort(jnp.mod(jnp.stack([jnp.pi / 2, 3 * jnp.pi / 2, theta_v, theta_v + jnp.pi]),
                                  two_pi))
        ends = jnp.concatenate([angles[1:], angles[:1] + two_pi])
        x, w = (jnp.asarray(v) for v in _legendre(self.angular_nodes))
        theta = 0.5 * (ends - angles)[:, None] * (x + 1.0)[None, :] + angles[:, None]  # (4, n)
        w_theta = 0.5 * (ends - angles)[:, None] * w[None, :]
        xr, wr = (jnp.asarray(v) for v in _legendre(self.radial_nodes))
        r = 0.5 * self.radius * (xr + 1.0)
        w_r = 0.5 * self.radius * wr * r * jnp.exp(-0.5 * r**2) / two_pi
        xi1 = r[:, None, None] * jnp.cos(theta)[None]
        xi2 = r[:, None, None] * jnp.sin(theta)[None]
        values = fn(a * xi1, b * (rho * xi1 + s * xi2))  # (..., nr, 4, n)
        weights = w_r[:, None, None] * w_theta[None]
        return jnp.sum(values * weights, axis=(-3, -2, -1))

    def expect1(self, fn, q):
        """E[fn(u)] for u ~ N(0, q), split at u = 0."""
        x, w = (jnp.asarray(v) for v in _legendre(self.radial_nodes))
        r = 0.5 * self.radius * (x + 1.0)
        w_r = 0.5 * self.radius * w * jnp.exp(-0.5 * r**2) / jnp.sqrt(2.0 * jnp.pi)
        z = jnp.concatenate([r, -r]) * jnp.sqrt(q)
        return jnp.sum(fn(z) * jnp.concatenate([w_r, w_r]), axis=-1)


def _gains(arch: Architecture) -> tuple[float, float]:
    if arch.parameterization == "ntk":
        return arch.sigma_w**2, arch.sigma_b**2
    return 1.0, 0.0


def _pair_step(phi, rule: PolarQuadrature, sigma, vertex):
    """One layer for an off-diagonal pair: (Σ (3,), N Cov Σ̂ (3,3)) → (E φφ (3,), N Cov Φ̂ (3,3))."""

    def moments(s):
        q1, q2, c = s[0], s[1], s[2]
        return rule.expect2(lambda u, v: jnp.stack([phi(u) ** 2, phi(v) ** 2, phi(u) * phi(v)]),
                            q1, q2, c)

    mean, jac = moments(sigma), jax.jacfwd(moments)(sigma)

    def fourth(u, v):
        a, b = phi(u), phi(v)
        terms = jnp.stack([a * a, b * b, a * b])
        return terms[:, None] * terms[None, :]

    second = rule.expect2(fourth, sigma[0], sigma[1], sigma[2])
    cov = second - jnp.outer(mean, mean)
    return mean, cov + jac @ vertex @ jac.T


def _diagonal_step(phi, rule: PolarQuadrature, q, vertex):
    """One layer for a single input: (Σ_μμ, N Var Σ̂_μμ) → (E φ², N Var Φ̂_μμ)."""
    second = lambda s: rule.expect1(lambda u: phi(u) ** 2, s)  # noqa: E731
    mean, slope = jax.value_and_grad(second)(q)
    fourth = rule.expect1(lambda u: phi(u) ** 4, q)
    return mean, fourth - mean**2 + slope**2 * vertex


@functools.partial(jax.jit, static_argnames=("arch", "rule"))
def _vertex_all(arch: Architecture, rule: PolarQuadrature, x):
    phi = get_activation(arch.activation).phi
    c_w, c_b = _gains(arch)
    P, D = x.shape
    sigma1 = c_w * x @ x.T / D + c_b
    diag = jnp.diagonal(sigma1)
    # clip the correlation away from ±1 so the whitening stays regular for identical inputs
    limit = (1.0 - 1e-9) * jnp.sqrt(diag[:, None] * diag[None, :])
    off = jnp.clip(sigma1, -limit, limit)
    rows, cols = np.triu_indices(P, k=1)

    def pair_layers(s0):
        def body(carry, _):
            sigma, vertex = carry
            mean, cov = _pair_step(phi, rule, sigma, vertex)
            return (c_w * mean + c_b, c_w**2 * cov), cov

        _, covs = jax.lax.scan(body, (s0, jnp.zeros((3, 3))), None, length=arch.hidden_layers)
        return covs  # (L, 3, 3): N Cov of (Φ̂_μμ, Φ̂_αα, Φ̂_μα) at layers ℓ = 1..L

    def diagonal_layers(q0):
        def body(carry, _):
            q, vertex = carry
            mean, var = _diagonal_step(phi, rule, q, vertex)
            return (c_w * mean + c_b, c_w**2 * var), var

        _, variances = jax.lax.scan(body, (q0, jnp.zeros(())), None, length=arch.hidden_layers)
        return variances  # (L,)

    triples = jnp.stack([diag[rows], diag[cols], off[rows, cols]], axis=-1)
    pair_covs = jax.vmap(pair_layers)(triples) if rows.size else jnp.zeros((0, arch.hidden_layers, 3, 3))
    diag_vars = jax.vmap(diagonal_layers)(diag)  # (P, L)
    nvar = jnp.zeros((arch.hidden_layers, P, P))
    nvar = nvar.at[:, jnp.arange(P), jnp.arange(P)].set(diag_vars.T)
    off_vars = jnp.moveaxis(pair_covs[:, :, 2, 2], 0, 1)  # (L, pairs)
    nvar = nvar.at[:, rows, cols].set(off_vars).at[:, cols, rows].set(off_vars)
    return nvar


def vertex_prediction(
    arch: Architecture, x: Float[Array, "P D"], rule: PolarQuadrature = PolarQuadrature()
) -> Float[np.ndarray, "L P P"]:
    """Predicted N·Var Φ̂^ℓ_{μα} at initialization (leading order in 1/N), ℓ = 1..L.

    The output NNGP's fluctuation is N·Var Σ̂^{L+1} = C_W² N·Var Φ̂^L (C_W = σ_w² or 1), and for a
    single input the excess kurtosis of h^{ℓ+1} is E[h⁴]/(3E[h²]²) − 1 = N Var Σ̂^{ℓ+1}/(N (Σ^{ℓ+1})²).

    Plain MLPs only: behind a residual block h^{ℓ+1} = h^ℓ + β W φ(h^ℓ)/√N the new pre-activations
    given the layer below are h^ℓ plus a Gaussian, not i.i.d. N(0, Σ̂^{ℓ+1}) over neurons, so the
    recursion does not close on Σ̂; a residual architecture with L ≥ 2 is an InputError.
    """
    if getattr(arch, "residual_scale", None) is not None and arch.hidden_layers > 1:
        raise InputError(
            "the four-point vertex recursion covers plain MLPs: with architecture.residual_scale "
            "the pre-activations behind a residual block are not Gaussian given the layer below, "
            "so no initialisation-fluctuation prediction is made for residual networks")
    return np.asarray(_vertex_all(arch, rule, jnp.asarray(x, dtype=jnp.float64)))
