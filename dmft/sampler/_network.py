"""A width-N instance of a `dmft.network.Network`: the same layers the kernels and solvers use.

With the backward fields g^ℓ = c_g ∂f/∂h^ℓ (c_g = γ0 N for μP, as in docs/conventions.md §3;
c_g = √N for the NTK parameterization) and the feature kernels Φ^ℓ = φ(h^ℓ)·φ(h^ℓ)/N
(Φ^0 = x·x'/D), the empirical NTK K_{μα} = η Σ_θ ∂f_μ/∂θ ∂f_α/∂θ is *exactly*, at any width,
the network's layer sum `Network.ntk`: K = Σ_{ℓ=0}^{L} G^{ℓ+1} ⊙ (σ_w² Φ^ℓ + σ_b²), G^{L+1} = 1
(derivations/finite_width.md, eq:ntk-layers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError
from ..network import (
    MSE,
    Dense,
    Dynamics,
    Elementwise,
    GradientFlow,
    Loss,
    Network,
    Residual,
    as_network,
)

Params = dict[int, Any]


@dataclasses.dataclass(frozen=True)
class FiniteNetwork:
    """`network` (or the spec's `Architecture` shorthand) at hidden width `width` on `input_dim`
    inputs, trained on `loss` by `dynamics`; hashable, so it is a static jit argument."""

    network: Network
    width: int
    input_dim: int
    loss: Loss = MSE()
    dynamics: Dynamics = GradientFlow()

    def __post_init__(self):
        object.__setattr__(self, "network", as_network(self.network))
        for index, block in enumerate(self.network.blocks):
            if not _reads_features(block, first=index == 0):
                raise InputError(
                    f"FiniteNetwork: block {index + 1} {block} is not (φ, Dense) or "
                    "Residual((φ, Dense)); the fields Φ^l = φ(h^l)·φ(h^l)/N need that form"
                )

    @property
    def hidden_layers(self) -> int:
        return self.network.hidden_layers

    @property
    def learning_rate(self) -> float:
        """η of docs/conventions.md §2: 1 (NTK) or γ0² N (μP)."""
        return self.network.learning_rate(self.width)

    @property
    def backward_scale(self) -> float:
        """c_g in g^ℓ = c_g ∂f/∂h^ℓ: γ0 N (μP) or √N (NTK)."""
        return self.network.backward_scale(self.width)

    @property
    def num_params(self) -> int:
        return self.network.num_params(self.input_dim, self.width)

    def init(self, key: PRNGKeyArray) -> Params:
        """All entries i.i.d. N(0, 1), keyed by layer index (`Network.init`)."""
        return self.network.init(key, self.input_dim, self.width)

    def apply(self, params: Params, x: Float[Array, "P D"],
              shifts: tuple[Float[Array, "P N"], ...] | None = None):
        """f(x) (P,) and the pre-activations (h^1, ..., h^L), each (P, N) (`Network.apply`)."""
        return self.network.apply(params, x, shifts)

    def predict(self, params: Params, x: Float[Array, "P D"]) -> Float[Array, " P"]:
        return self.apply(params, x)[0]

    def loss_value(self, params: Params, x: Float[Array, "P D"], y: Float[Array, " P"]) -> Array:
        return self.loss.value(self.predict(params, x), y)

    def flow(self, params: Params, x: Float[Array, "P D"], y: Float[Array, " P"]) -> Params:
        """The training velocity dθ/dt of the dynamics (gradient flow: −η ∇_θ 𝓛)."""
        return self.dynamics.velocity(jax.grad(self.loss_value)(params, x, y), self.learning_rate)

    def _activation(self):
        from ..activations import get_activation

        names = [layer.activation for layer in self.network.activations]
        if len(names) != 1:
            raise InputError(f"the sampler needs one activation for all layers, got {names}")
        return get_activation(names[0])

    def fields(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Any]:
        """Forward and backward fields: f (P,), h, φ(h), g (each (L, P, N))."""
        zeros = tuple(jnp.zeros((x.shape[0], self.width), x.dtype)
                      for _ in range(self.hidden_layers))

        def total(shifts):
            f, hs = self.apply(params, x, shifts)
            return jnp.sum(f), (f, hs)

        grads, (f, hs) = jax.grad(total, has_aux=True)(zeros)
        h = jnp.stack(hs)
        return {"f": f, "h": h, "phi": self._activation().phi(h),
                "g": self.backward_scale * jnp.stack(grads)}

    def kernels(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Array]:
        """f (P,), Φ^ℓ and G^ℓ for ℓ = 1..L (each (L, P, P)) and the NTK (P, P), all at width N.

        The NTK is the network's layer sum `Network.ntk` (exact at finite width).
        """
        fields = self.fields(params, x)
        N = self.width
        phi = jnp.einsum("lpn,lqn->lpq", fields["phi"], fields["phi"]) / N
        g = jnp.einsum("lpn,lqn->lpq", fields["g"], fields["g"]) / N
        phi0 = x @ x.T / x.shape[-1]
        ntk = self.network.ntk([phi0, *phi], [*g, jnp.ones_like(phi0)])
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


def _reads_features(block, first: bool) -> bool:
    """Whether `block` feeds φ(h) of the incoming stream into its dense map, as `kernels` assumes:
    (Dense,) on the input, else (φ, Dense) or Residual((φ, Dense))."""
    if first:
        return len(block) == 1 and isinstance(block[0], Dense)
    inner = block[-1].branch if len(block) == 1 and isinstance(block[0], Residual) else block
    return (len(inner) == 2 and isinstance(inner[0], Elementwise) and isinstance(inner[1], Dense))
