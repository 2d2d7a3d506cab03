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
    loss_from_name,
)

Params = dict[int, Any]
#: network outputs: (P,) for one output, (P, C) for C
Outputs = Float[Array, " P"] | Float[Array, "P C"]


@dataclasses.dataclass(frozen=True)
class FiniteNetwork:
    """`network` (or the spec's `Architecture` shorthand) at hidden width `width` on `input_dim`
    inputs with `outputs` read-out rows (C of docs/conventions.md §2b), trained on `loss` by
    `dynamics`; hashable, so it is a static jit argument."""

    network: Network
    width: int
    input_dim: int
    loss: Loss = MSE()
    dynamics: Dynamics = GradientFlow()
    outputs: int = 1

    def __post_init__(self):
        object.__setattr__(self, "network", as_network(self.network))
        if isinstance(self.outputs, bool) or not isinstance(self.outputs, int) or self.outputs < 1:
            raise InputError(f"FiniteNetwork: outputs must be an integer >= 1, got {self.outputs!r}")
        if self.loss.name == "cross_entropy" and self.outputs < 2:
            raise InputError("FiniteNetwork: cross-entropy needs outputs >= 2 (one logit per class)")
        for index, block in enumerate(self.network.blocks):
            if not _reads_features(block, first=index == 0):
                raise InputError(
                    f"FiniteNetwork: block {index + 1} {block} is not (φ, Dense) or "
                    "Residual((φ, Dense)); the fields Φ^l = φ(h^l)·φ(h^l)/N need that form"
                )

    @classmethod
    def for_spec(cls, spec, width: int) -> FiniteNetwork:
        """The width-`width` network of a spec: its architecture, input dimension, number of
        outputs and ``training.loss``."""
        return cls(spec.architecture, width, spec.data.input_dim,
                   loss=loss_from_name(spec.training.loss), outputs=spec.data.num_outputs)

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
        return self.network.num_params(self.input_dim, self.width, self.outputs)

    def init(self, key: PRNGKeyArray) -> Params:
        """All entries i.i.d. N(0, 1), keyed by layer index (`Network.init`)."""
        return self.network.init(key, self.input_dim, self.width, self.outputs)

    def apply(self, params: Params, x: Float[Array, "P D"],
              shifts: tuple[Float[Array, "P N"], ...] | None = None):
        """f(x) ((P,) for one output, else (P, C)) and the pre-activations (h^1, ..., h^L), each
        (P, N) (`Network.apply`)."""
        return self.network.apply(params, x, shifts)

    def predict(self, params: Params, x: Float[Array, "P D"]) -> Outputs:
        return self.apply(params, x)[0]

    def loss_value(self, params: Params, x: Float[Array, "P D"], y: Outputs,
                   offset: Outputs | float = 0.0) -> Array:
        """𝓛(f(x) − offset, y); the offset f(θ0) of centred training, 0 otherwise."""
        return self.loss.value(self.predict(params, x) - offset, y, rows=self.outputs > 1)

    def flow(self, params: Params, x: Float[Array, "P D"], y: Outputs,
             offset: Outputs | float = 0.0) -> Params:
        """The training velocity dθ/dt of the dynamics (gradient flow: −η ∇_θ 𝓛)."""
        grads = jax.grad(self.loss_value)(params, x, y, offset)
        return self.dynamics.velocity(grads, self.learning_rate)

    def _activation(self):
        from ..activations import get_activation

        names = [layer.activation for layer in self.network.activations]
        if len(names) != 1:
            raise InputError(f"the sampler needs one activation for all layers, got {names}")
        return get_activation(names[0])

    def fields(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Any]:
        """Forward and backward fields: f, h and φ(h) (each (L, P, N)), and g (L, P, N) for one
        output or (L, C, P, N), g_c = c_g ∂f_c/∂h, for C outputs."""
        zeros = tuple(jnp.zeros((x.shape[0], self.width), x.dtype)
                      for _ in range(self.hidden_layers))

        def totals(shifts):
            f, hs = self.apply(params, x, shifts)
            return jnp.sum(f, axis=0), (f, hs)

        if self.outputs == 1:
            grads, (f, hs) = jax.grad(totals, has_aux=True)(zeros)
        else:  # one backward pass per output: the rows ∂(Σ_μ f_μc)/∂h
            grads, (f, hs) = jax.jacrev(totals, has_aux=True)(zeros)
        h = jnp.stack(hs)
        return {"f": f, "h": h, "phi": self._activation().phi(h),
                "g": self.backward_scale * jnp.stack(grads)}

    def kernels(self, params: Params, x: Float[Array, "P D"]) -> dict[str, Array]:
        """f, Φ^ℓ and G^ℓ for ℓ = 1..L (each (L, P, P)) and the NTK (P, P), all at width N.

        With C outputs G^ℓ and the NTK are the output averages of the diagonal blocks,
        G^ℓ = (1/C) Σ_c g_c·g_c/N and K = (1/C) Σ_c K_cc, as the limit reports them
        (docs/architecture.md); the NTK is the network's layer sum `Network.ntk` (exact at finite
        width: the sum is linear in G, and G^{L+1}_cc = 1).
        """
        fields = self.fields(params, x)
        N = self.width
        phi = jnp.einsum("lpn,lqn->lpq", fields["phi"], fields["phi"]) / N
        g = fields["g"] if self.outputs > 1 else fields["g"][:, None]
        g = jnp.einsum("lcpn,lcqn->lpq", g, g) / (N * self.outputs)
        phi0 = x @ x.T / x.shape[-1]
        ntk = self.network.ntk([phi0, *phi], [*g, jnp.ones_like(phi0)])
        return {"f": fields["f"], "phi": phi, "g": g, "ntk": ntk}

    def ntk_by_jacobian(self, params: Params, x1: Float[Array, "P1 D"], x2=None) -> Array:
        """K = η J(x1) J(x2)ᵀ from the parameter Jacobian (the definition; memory P·C·#params):
        (P1, P2) for one output, the full (P1, C, P2, C) over (point, output) pairs for C."""
        x2 = x1 if x2 is None else x2
        j1 = jax.jacrev(self.predict)(params, x1)
        j2 = j1 if x2 is x1 else jax.jacrev(self.predict)(params, x2)
        rows = 1 if self.outputs == 1 else 2  # leading (P,) or (P, C) axes of a Jacobian leaf

        def flat(a):
            return a.reshape(*a.shape[:rows], -1)

        leaves = [jnp.tensordot(flat(a), flat(b), axes=(-1, -1))
                  for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))]
        return self.learning_rate * sum(leaves)


def _reads_features(block, first: bool) -> bool:
    """Whether `block` feeds φ(h) of the incoming stream into its dense map, as `kernels` assumes:
    (Dense,) on the input, else (φ, Dense) or Residual((φ, Dense))."""
    if first:
        return len(block) == 1 and isinstance(block[0], Dense)
    inner = block[-1].branch if len(block) == 1 and isinstance(block[0], Residual) else block
    return (len(inner) == 2 and isinstance(inner[0], Elementwise) and isinstance(inner[1], Dense))
