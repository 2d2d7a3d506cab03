"""Finite-width MLPs of a spec, exactly as conventions §1 define them.

NTK parameterization (η = 1):

    h^1 = σ_w W^0 x/√D + σ_b b^0,  h^{ℓ+1} = σ_w W^ℓ φ(h^ℓ)/√N + σ_b b^ℓ,  f = σ_w w^L·φ(h^L)/√N + σ_b b^L

μP with richness γ0 (η = γ0² N):

    h^1 = W^0 x/√D,  h^{ℓ+1} = W^ℓ φ(h^ℓ)/√N,  f = w^L·φ(h^L)/(γ0 N)

All weights and biases start i.i.d. N(0, 1). With the backward fields g^ℓ = c_g ∂f/∂h^ℓ
(c_g = γ0 N for μP, as in conventions §3; c_g = √N for the NTK parameterization) and the
feature kernels Φ^ℓ = φ(h^ℓ)·φ(h^ℓ)/N (Φ^0 = x·x'/D), the empirical NTK
K_{μα} = η Σ_θ ∂f_μ/∂θ ∂f_α/∂θ is *exactly*, at any width,

    K = Σ_{ℓ=0}^{L} G^{ℓ+1} ⊙ (c_w Φ^ℓ + σ_b²),    G^{L+1} = 1,

with c_w = σ_w² (NTK) or 1 (μP, where σ_b = 0). See derivations/finite_width.md, eq:ntk-layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError
from ..activations import get_activation
from ..spec import Architecture

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Network:
    """A width-`width` MLP of `arch` on `input_dim` inputs; hashable, so it is a static jit argument."""

    arch: Architecture
    width: int
    input_dim: int

    def __post_init__(self):
        if self.arch.residual_scale is not None:
            raise InputError(
                "architecture.residual_scale: the finite-width sampler builds plain MLPs only; "
                "residual networks are supported by dmft kernels, run (ntk) and derive"
            )

    @property
    def mup(self) -> bool:
        return self.arch.parameterization == "mup"

    @property
    def has_bias(self) -> bool:
        return not self.mup and self.arch.sigma_b > 0

    @property
    def learning_rate(self) -> float:
        """η of conventions §2: 1 (NTK) or γ0² N (μP)."""
        return self.arch.gamma0**2 * self.width if self.mup else 1.0

    @property
    def backward_scale(self) -> float:
        """c_g in g^ℓ = c_g ∂f/∂h^ℓ: γ0 N (μP) or √N (NTK)."""
        return self.arch.gamma0 * self.width if self.mup else math.sqrt(self.width)

    @property
    def weight_gain(self) -> float:
        """c_w in K = Σ G^{ℓ+1} ⊙ (c_w Φ^ℓ + σ_b²)."""
        return 1.0 if self.mup else self.arch.sigma_w**2

    @property
    def num_params(self) -> int:
        N, D, L = self.width, self.input_dim, self.arch.hidden_layers
        count = N * D + (L - 1) * N * N + N
        if self.has_bias:
            count += L * N + 1
        return count

    def _scales(self) -> tuple[float, float, float]:
        """Multipliers of W^0, W^ℓ (1 ≤ ℓ < L) and w^L."""
        N, D = self.width, self.input_dim
        if self.mup:
            return 1 / math.sqrt(D), 1 / math.sqrt(N), 1 / (self.arch.gamma0 * N)
        s = self.arch.sigma_w
        return s / math.sqrt(D), s / math.sqrt(N), s / math.sqrt(N)

    def init(self, key: PRNGKeyArray) -> Params:
        """All entries i.i.d. N(0, 1): ``W0`` (N, D), ``W`` (L−1, N, N), ``w`` (N,), biases."""
        N, D, L = self.width, self.input_dim, self.arch.hidden_layers
        k0, k1, k2, k3, k4 = jax.random.split(key, 5)
        params: Params = {
            "W0": jax.random.normal(k0, (N, D)),
            "w": jax.random.normal(k2, (N,)),
        }
        if L > 1:
            params["W"] = jax.random.normal(k1, (L - 1, N, N))
        if self.has_bias:
            params["b"] = jax.random.normal(k3, (L, N))
            params["b_out"] = jax.random.normal(k4, ())
        return params

    def apply(
        self,
        params: Params,
        x: Float[Array, "P D"],
        shifts: tuple[Float[Array, "P N"], ...] | None = None,
    ) -> tuple[Float[Array, " P"], tuple[Float[Array, "P N"], ...]]:
        """f(x) and the pre-activations (h^1, ..., h^L), each (P, N).

        ``shifts`` (optional, one (P, N) array per hidden layer) are added to the pre-activations;
        differentiating Σ_μ f_μ with respect to them at zero gives ∂f_μ/∂h^ℓ_μ.
        """
        activation = get_activation(self.arch.activation)
        a_in, a_hidden, a_out = self._scales()
        sigma_b = self.arch.sigma_b
        h = a_in * x @ params["W0"].T
        if self.has_bias:
            h = h + sigma_b * params["b"][0]
        preactivations = []
        for layer in range(self.arch.hidden_layers):
            if shifts is not None:
                h = h + shifts[layer]
            preactivations.append(h)
            features = activation.phi(h)
            if layer + 1 < self.arch.hidden_layers:
                h = a_hidden * features @ params["W"][layer].T
                if self.has_bias:
                    h = h + sigma_b * params["b"][layer + 1]
        f = a_out * features @ params["w"]
        if self.has_bias:
            f = f + sigma_b * params["b_out"]
        return f, tuple(preactivations)

    def predict(self, params: Params, x: Float[Array, "P D"]) -> Float[Array, " P"]:
        return self.apply(params, x)[0]

    def loss(self, params: Params, x: Float[Array, "P D"], y: Float[Array, " P"]) -> Array:
        """𝓛 = (1/2P) Σ_μ (f_μ − y_μ)²."""
        return 0.5 * jnp.mean((self.predict(params, x) - y) ** 2)

    def flow(self, params: Params, x: Float[Array, "P D"], y: Float[Array, " P"]) -> Params:
        """The gradient-flow velocity dθ/dt = −η ∇_θ 𝓛."""
        grads = jax.grad(self.loss)(params, x, y)
        return jax.tree.map(lambda g: -self.learning_rate * g, grads)

    def fields(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Any]:
        """Forward and backward fields: f (P,), h, φ(h), g (each (L, P, N))."""
        activation = get_activation(self.arch.activation)
        zeros = tuple(
            jnp.zeros((x.shape[0], self.width), x.dtype) for _ in range(self.arch.hidden_layers)
        )

        def total(shifts):
            f, hs = self.apply(params, x, shifts)
            return jnp.sum(f), (f, hs)

        grads, (f, hs) = jax.grad(total, has_aux=True)(zeros)
        h = jnp.stack(hs)
        return {
            "f": f,
            "h": h,
            "phi": activation.phi(h),
            "g": self.backward_scale * jnp.stack(grads),
        }

    def kernels(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Array]:
        """f (P,), Φ^ℓ and G^ℓ for ℓ = 1..L (each (L, P, P)) and the NTK (P, P), all at width N.

        The NTK is the per-layer sum K = Σ_ℓ G^{ℓ+1} ⊙ (c_w Φ^ℓ + σ_b²) (exact at finite width).
        """
        fields = self.fields(params, x)
        N = self.width
        phi = jnp.einsum("lpn,lqn->lpq", fields["phi"], fields["phi"]) / N
        g = jnp.einsum("lpn,lqn->lpq", fields["g"], fields["g"]) / N
        phi0 = x @ x.T / x.shape[-1]
        below = jnp.concatenate([phi0[None], phi], axis=0)  # Φ^0 .. Φ^L
        above = jnp.concatenate([g, jnp.ones_like(phi0)[None]], axis=0)  # G^1 .. G^{L+1}
        bias = self.arch.sigma_b**2 if self.has_bias else 0.0
        ntk = jnp.sum(above * (self.weight_gain * below + bias), axis=0)
        return {"f": fields["f"], "phi": phi, "g": g, "ntk": ntk}

    def ntk_by_jacobian(self, params: Params, x1: Float[Array, "P1 D"], x2=None) -> Array:
        """K = η J(x1) J(x2)ᵀ from the parameter Jacobian (the definition; memory P · #params)."""
        x2 = x1 if x2 is None else x2
        j1 = jax.jacrev(self.predict)(params, x1)
        j2 = j1 if x2 is x1 else jax.jacrev(self.predict)(params, x2)
        leaves = [
            jnp.einsum("p...,q...->pq", a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
            for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))
        ]
        return self.learning_rate * sum(leaves)
