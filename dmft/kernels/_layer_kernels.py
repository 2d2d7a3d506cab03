"""Infinite-width NNGP and NTK of an MLP, layer by layer (conventions §1a).

    Σ^1 = σ_w² x·x'/D + σ_b²,                 Θ^1 = Σ^1
    Σ^{l+1} = σ_w² E[φ(u)φ(v)] + σ_b²,         Σ̇^{l+1} = σ_w² E[φ'(u)φ'(v)]
    Θ^{l+1} = Σ^{l+1} + Σ̇^{l+1} Θ^l,           (u, v) ~ N(0, Σ^l)

The Gaussian expectations are the activation's dual maps (`dmft.activations`), derived and
compiled from SymPy. The recursion runs over row blocks of the kernel so that the temporaries are
O(block · P) and only the requested output layers are ever held at full (P, P) size.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..activations import Activation, get_activation
from ..spec import Architecture

_DEFAULT_BLOCK_ROWS = 512


@dataclasses.dataclass(frozen=True, eq=False)
class LayerKernels:
    """Kernels between inputs x1 (P1, D) and x2 (P2, D), indexed by layer l = 1..L+1.

    Entry ``l - 1`` of each tuple is layer l (the pre-activation after the l-th dense layer;
    l = L + 1 is the output). ``nngp_derivative[l - 1]`` is Σ̇^l (zero for l = 1, which has no
    activation below it). Layers that were not requested are None.
    """

    nngp: tuple[Float[np.ndarray, "P1 P2"] | None, ...]
    ntk: tuple[Float[np.ndarray, "P1 P2"] | None, ...]
    nngp_derivative: tuple[Float[np.ndarray, "P1 P2"] | None, ...]


def _input_kernel(arch: Architecture, x1, x2):
    return arch.sigma_w**2 * (x1 @ x2.T) / x1.shape[-1] + arch.sigma_b**2


def _diagonal_recursion(arch: Architecture, activation: Activation, x) -> list[jnp.ndarray]:
    """Σ^l(x, x) for l = 1..L+1: the variances the off-diagonal recursion conditions on."""
    q = arch.sigma_w**2 * jnp.sum(x * x, axis=-1) / x.shape[-1] + arch.sigma_b**2
    variances = [q]
    for _ in range(arch.hidden_layers):
        q = arch.sigma_w**2 * activation.dual(q, q, q) + arch.sigma_b**2
        variances.append(q)
    return variances


@functools.partial(jax.jit, static_argnames=("arch", "same_inputs"))
def _block(arch: Architecture, x1, x2, variances1, variances2, first_row, same_inputs: bool):
    """All layers' (Σ^l, Σ̇^l, Θ^l) for one row block x1 (rows first_row, ...) against x2."""
    activation = get_activation(arch.activation)
    sigma = _input_kernel(arch, x1, x2)
    if same_inputs:
        # Pin the diagonal to the variances: a matmul and a sum of squares can differ in the last
        # bit, and the ReLU-type maps have a √ε sensitivity at correlation 1.
        rows = first_row + jnp.arange(x1.shape[0])
        diagonal = rows[:, None] == jnp.arange(x2.shape[0])[None, :]
        sigma = jnp.where(diagonal, variances1[0][:, None], sigma)
    theta = sigma
    nngp, ntk, derivative = [sigma], [theta], [jnp.zeros_like(sigma)]
    for layer in range(arch.hidden_layers):
        q1 = variances1[layer][:, None]
        q2 = variances2[layer][None, :]
        if same_inputs:
            sigma = jnp.where(diagonal, q1, sigma)
        sigma_dot = arch.sigma_w**2 * activation.dual_derivative(q1, q2, sigma)
        sigma = arch.sigma_w**2 * activation.dual(q1, q2, sigma) + arch.sigma_b**2
        theta = sigma + sigma_dot * theta
        nngp.append(sigma)
        ntk.append(theta)
        derivative.append(sigma_dot)
    return nngp, ntk, derivative


def layer_kernels(
    arch: Architecture,
    x1: Float[Array, "P1 D"],
    x2: Float[Array, "P2 D"] | None = None,
    layers: tuple[int, ...] | None = None,
    block_rows: int = _DEFAULT_BLOCK_ROWS,
    with_derivative: bool = True,
) -> LayerKernels:
    """NNGP Σ^l, NTK Θ^l and Σ̇^l between `x1` and `x2` (default: x1) for each layer l.

    Args:
        arch: the architecture; a "mup" architecture gives its γ0 → 0 kernels (σ_w = 1, σ_b = 0).
        x1, x2: inputs (P1, D) and (P2, D).
        layers: which layers l ∈ 1..L+1 to keep at full size (default: all). Keeping only the
            output layer, ``layers=(arch.hidden_layers + 1,)``, bounds the memory to two (P1, P2)
            arrays plus O(block_rows · P2) temporaries.
        block_rows: rows of x1 per compiled block.
        with_derivative: also keep Σ̇^l (otherwise ``nngp_derivative`` holds None).
    """
    x1 = jnp.asarray(x1)
    same_inputs = x2 is None
    x2 = x1 if same_inputs else jnp.asarray(x2)
    num_layers = arch.hidden_layers + 1
    keep = tuple(range(1, num_layers + 1)) if layers is None else tuple(layers)
    activation = get_activation(arch.activation)
    variances1 = _diagonal_recursion(arch, activation, x1)
    variances2 = variances1 if same_inputs else _diagonal_recursion(arch, activation, x2)

    rows, cols = x1.shape[0], x2.shape[0]
    block = min(block_rows, rows)
    dtype = np.dtype(x1.dtype)
    kinds = ("nngp", "ntk", "nngp_derivative") if with_derivative else ("nngp", "ntk")
    outputs = {kind: {l: np.empty((rows, cols), dtype) for l in keep} for kind in kinds}
    # Pad the last block to a full one so that every block reuses a single compilation.
    padded = -(-rows // block) * block
    x1_padded = jnp.pad(x1, ((0, padded - rows), (0, 0)))
    variances1_padded = [jnp.pad(v, (0, padded - rows), constant_values=1.0) for v in variances1]
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        pieces = _block(
            arch,
            x1_padded[start : start + block],
            x2,
            [v[start : start + block] for v in variances1_padded],
            variances2,
            start,
            same_inputs,
        )
        for kind, values in zip(kinds, pieces):
            for l in keep:
                outputs[kind][l][start:stop] = np.asarray(values[l - 1][: stop - start])

    def by_layer(kind):
        return tuple(outputs.get(kind, {}).get(l) for l in range(1, num_layers + 1))

    return LayerKernels(by_layer("nngp"), by_layer("ntk"), by_layer("nngp_derivative"))
