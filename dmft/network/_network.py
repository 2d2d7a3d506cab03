"""A network: a chain of layers under one parameterization (stax's ``serial``).

The chain is cut after every dense layer and every residual block into *blocks*; block l
(l = 1..L+1) ends in "layer l" of docs/conventions.md §1a, the pre-activation h^l (l = L+1 is the
output f). The kernels, the sampler and the DMFT solvers all walk the same blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import InputError
from ._layers import Dense, Elementwise, KernelMap, Layer, Residual
from ._parameterization import NTK, MuP, Parameterization

Block = tuple[Layer | Residual, ...]


@dataclasses.dataclass(frozen=True)
class Network:
    """Layers in order from the input to the scalar read-out, and their parameterization.

    Hashable: a static argument of `jax.jit`. Build one with `serial` or, from the spec's MLP
    shorthand, with `mlp`.
    """

    layers: tuple[Layer | Residual, ...]
    parameterization: Parameterization = NTK()

    def __post_init__(self):
        if not self.layers or not isinstance(self.layers[-1], Dense):
            raise InputError("a network must end in a Dense read-out layer")
        if not isinstance(self.layers[0], Dense):
            raise InputError("a network must start with a Dense layer (the input layer)")
        for layer in self.layers:
            for dense in _leaves(layer, Dense):
                self.parameterization.check_dense(dense.weight_std, dense.bias_std)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The chain cut after each Dense and Residual: block l ends in layer l."""
        blocks, current = [], []
        for layer in self.layers:
            current.append(layer)
            if isinstance(layer, Dense | Residual):
                blocks.append(tuple(current))
                current = []
        return tuple(blocks)

    @property
    def hidden_layers(self) -> int:
        """L: the number of hidden pre-activation layers h^1..h^L."""
        return len(self.blocks) - 1

    @property
    def activations(self) -> tuple[Elementwise, ...]:
        """The distinct activation layers, residual branches included, in order of appearance."""
        leaves = (leaf for layer in self.layers for leaf in _leaves(layer, Elementwise))
        return tuple(dict.fromkeys(leaves))

    @property
    def readout(self) -> Dense:
        return self.layers[-1]

    def kernel_map(self, block: Block) -> KernelMap:
        """The composed SymPy map of one block."""
        out = KernelMap.identity()
        for layer in block:
            out = out.then(layer.kernel_map())
        return out

    # -- finite width -------------------------------------------------------------------------

    def learning_rate(self, width: int) -> float:
        """η of gradient flow (docs/conventions.md §2)."""
        return self.parameterization.learning_rate(width)

    def backward_scale(self, width: int) -> float:
        return self.parameterization.backward_scale(width)

    def _widths(self, input_dim: int, width: int, outputs: int) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every layer; the read-out has `outputs` rows."""
        shapes, fan_in = [], input_dim
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            fan_out = outputs if index == last else layer.out_width(fan_in, width)
            shapes.append((fan_in, fan_out))
            fan_in = fan_out
        return shapes

    def init(self, key: PRNGKeyArray, input_dim: int, width: int, outputs: int = 1
             ) -> dict[int, Any]:
        """Every weight and bias i.i.d. N(0, 1): {layer index: its parameters} for the layers
        that have any; the read-out maps to `outputs` outputs (C of docs/conventions.md §2b)."""
        keys = jax.random.split(key, len(self.layers))
        shapes = self._widths(input_dim, width, outputs)
        params = {index: layer.init(k, *shape) for index, (layer, k, shape)
                  in enumerate(zip(self.layers, keys, shapes))}
        return {index: p for index, p in params.items() if jax.tree.leaves(p)}

    def num_params(self, input_dim: int, width: int, outputs: int = 1) -> int:
        return sum(layer.num_params(*shape)
                   for layer, shape in zip(self.layers, self._widths(input_dim, width, outputs)))

    def apply(
        self,
        params: dict[int, Any],
        x: Float[Array, "P D"],
        shifts: tuple[Float[Array, "P N"], ...] | None = None,
    ) -> tuple[Float[Array, " P"] | Float[Array, "P C"], tuple[Float[Array, "P N"], ...]]:
        """f(x) and the hidden pre-activations h^1..h^L (each (P, N)); f is (P,) for a read-out
        with one output (the shapes of docs/conventions.md §5), else (P, C).

        ``shifts`` (one (P, N) array per hidden layer) are added to h^1..h^L; differentiating
        Σ_μ f_μc with respect to them at zero gives ∂f_μc/∂h^l_μ.
        """
        h, hidden, index = x, [], 0
        last = len(self.layers) - 1
        for position, layer in enumerate(self.layers):
            h = layer.apply(params.get(position, ()), h, self.parameterization, position == last)
            if isinstance(layer, Dense | Residual) and position != last:
                if shifts is not None:
                    h = h + shifts[index]
                hidden.append(h)
                index += 1
        return (h[..., 0] if h.shape[-1] == 1 else h), tuple(hidden)

    def ntk(self, features, gradients):
        """K = Σ_{l=0}^{L} (term of the dense map out of layer l) for features Φ^0..Φ^L and
        gradient kernels G^1..G^{L+1} (G^{L+1} = 1): G^{l+1} ⊙ (σ_w² Φ^l + σ_b²) for a dense
        layer, β² times that for a residual branch. Exact at any width; in the limit it is the
        DMFT's K = Σ_l G^{l+1}(t,t) ⊙ Φ^l(t,t) (§3). Any broadcasting shapes; cost one
        multiply-add per layer."""
        terms = [block[-1].ntk_term(phi, g, self.parameterization)
                 for block, phi, g in zip(self.blocks, features, gradients, strict=True)]
        return sum(terms[1:], terms[0])


def _leaves(layer, kind: type) -> tuple:
    """The layers of type `kind` in `layer`, residual branches included."""
    if isinstance(layer, Residual):
        return tuple(leaf for inner in layer.branch for leaf in _leaves(inner, kind))
    return (layer,) if isinstance(layer, kind) else ()


def serial(*layers: Layer | Residual, parameterization: Parameterization = NTK()) -> Network:
    """The network of `layers` in order, e.g. ``serial(Dense(1.5), Elementwise("relu"), Dense(1.5))``
    (one hidden ReLU layer, σ_w = 1.5)."""
    return Network(tuple(layers), parameterization)


def mlp(arch) -> Network:
    """The network of the spec's MLP shorthand (`dmft.Architecture`, docs/conventions.md §1, §2c):
    Dense, then L × (φ, Dense) with the hidden-to-hidden ones residual blocks of branch scale
    α/L^β when ``residual_scale = α`` is set (β = ``residual_exponent``, 1/2 by default)."""
    mup = arch.parameterization == "mup"
    param = MuP(arch.gamma0) if mup else NTK()
    dense = Dense(arch.sigma_w, arch.sigma_b)
    act = Elementwise(arch.activation)
    L = arch.hidden_layers
    layers: list[Layer | Residual] = [dense]
    for layer in range(1, L + 1):
        if arch.residual_scale is not None and layer < L:
            layers.append(Residual((act, dense), arch.residual_scale / L**arch.residual_exponent))
        else:
            layers += [act, dense]
    return Network(tuple(layers), param)


def as_network(arch_or_network) -> Network:
    """A `Network` from itself or from the spec's `Architecture` shorthand."""
    return arch_or_network if isinstance(arch_or_network, Network) else mlp(arch_or_network)
