"""Infinite-width NNGP and NTK of an MLP, layer by layer (conventions §1a).

    Σ^1 = σ_w² x·x'/D + σ_b²,                 Θ^1 = Σ^1
    Σ^{l+1} = σ_w² E[φ(u)φ(v)] + σ_b²,         Σ̇^{l+1} = σ_w² E[φ'(u)φ'(v)]
    Θ^{l+1} = Σ^{l+1} + Σ̇^{l+1} Θ^l,           (u, v) ~ N(0, Σ^l)

A residual block (``residual_scale = α``, β² = α²/L, hidden layers l = 1..L-1) adds its branch
to the stream; the cross terms vanish because the branch weights are independent with mean zero:

    Σ^{l+1} = Σ^l + β² (σ_w² E[φφ] + σ_b²),    Θ^{l+1} = Θ^l + β² (σ_w² E[φφ] + σ_b² + Σ̇ Θ^l)

The Gaussian expectations are the activation's dual maps (`dmft.activations`), derived and
compiled from SymPy. The recursion runs over square tiles of the kernel so that the temporaries are O(block²), only
the requested output layers are ever held at full (P, P) size, and symmetric kernels cost half.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..activations import Activation, get_activation
from ..spec import Architecture

_DEFAULT_BLOCK_SIZE = 1024


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


def _branch_weight(arch: Architecture, layer: int) -> float | None:
    """β² for the dense layer that maps layer `layer` to `layer + 1`, or None if not residual."""
    if arch.residual_scale is None or not 1 <= layer < arch.hidden_layers:
        return None
    return arch.residual_scale**2 / arch.hidden_layers


def _diagonal_recursion(arch: Architecture, activation: Activation, x) -> list[jnp.ndarray]:
    """Σ^l(x, x) for l = 1..L+1: the variances the off-diagonal recursion conditions on."""
    q = arch.sigma_w**2 * jnp.sum(x * x, axis=-1) / x.shape[-1] + arch.sigma_b**2
    variances = [q]
    for layer in range(1, arch.hidden_layers + 1):
        branch = arch.sigma_w**2 * activation.dual(q, q, q) + arch.sigma_b**2
        beta2 = _branch_weight(arch, layer)
        q = branch if beta2 is None else q + beta2 * branch
        variances.append(q)
    return variances


@functools.partial(jax.jit, static_argnames=("arch", "kinds", "keep"))
def _tile(arch: Architecture, x1, x2, variances1, variances2, kinds, keep):
    """The kept layers' (Σ^l, Θ^l[, Σ̇^l]) on one tile x1 × x2, as a tuple ordered (kind, layer).

    The diagonal x = x' needs no special case: the dual maps treat q1 q2 − c² below its rounding
    error as 0, so the last-bit differences between a matmul and a sum of squares are harmless.
    """
    activation = get_activation(arch.activation)
    sigma = _input_kernel(arch, x1, x2)
    theta = sigma
    by_kind = {"nngp": [sigma], "ntk": [theta], "nngp_derivative": [jnp.zeros_like(sigma)]}
    for layer in range(1, arch.hidden_layers + 1):
        q1 = variances1[layer - 1][:, None]
        q2 = variances2[layer - 1][None, :]
        sigma_dot = arch.sigma_w**2 * activation.dual_derivative(q1, q2, sigma)
        branch = arch.sigma_w**2 * activation.dual(q1, q2, sigma) + arch.sigma_b**2
        beta2 = _branch_weight(arch, layer)
        if beta2 is None:
            sigma, theta = branch, branch + sigma_dot * theta
        else:
            sigma, theta = sigma + beta2 * branch, theta + beta2 * (branch + sigma_dot * theta)
        by_kind["nngp"].append(sigma)
        by_kind["ntk"].append(theta)
        by_kind["nngp_derivative"].append(sigma_dot)
    return tuple(by_kind[kind][l - 1] for kind in kinds for l in keep)


def _warn_beyond_variance_limit(activation: Activation, variances) -> None:
    """Warn when a numeric-tier dual is evaluated outside the range its error bound holds for."""
    largest = max(float(jnp.max(v)) for v in variances) if variances else 0.0
    if largest > activation.variance_limit:
        warnings.warn(
            f"activation {activation.name}: pre-activation variance {largest:.3g} exceeds "
            f"{activation.variance_limit:.3g}, where its {activation.tier} dual kernels keep their "
            f"stated error {activation.dual_error:.0e}; expect a larger error",
            stacklevel=3,
        )


def _pad_rows(array, size, value=0.0):
    return jnp.pad(array, ((0, size - array.shape[0]),) + ((0, 0),) * (array.ndim - 1),
                   constant_values=value)


def layer_kernels(
    arch: Architecture,
    x1: Float[Array, "P1 D"],
    x2: Float[Array, "P2 D"] | None = None,
    layers: tuple[int, ...] | None = None,
    block_size: int = _DEFAULT_BLOCK_SIZE,
    with_derivative: bool = True,
) -> LayerKernels:
    """NNGP Σ^l, NTK Θ^l and Σ̇^l between `x1` and `x2` (default: x1) for each layer l.

    Args:
        arch: the architecture; a "mup" architecture gives its γ0 → 0 kernels (σ_w = 1, σ_b = 0).
        x1, x2: inputs (P1, D) and (P2, D).
        layers: which layers l ∈ 1..L+1 to keep at full size (default: all). Keeping only the
            output layer, ``layers=(arch.hidden_layers + 1,)``, bounds the memory to two (P1, P2)
            arrays plus O(block_size²) temporaries.
        block_size: the kernels are computed on square tiles of this size (one compilation);
            with x2 = x1 only the tiles on and above the diagonal are computed.
        with_derivative: also keep Σ̇^l (otherwise ``nngp_derivative`` holds None).
    """
    x1 = jnp.asarray(x1)
    same_inputs = x2 is None
    x2 = x1 if same_inputs else jnp.asarray(x2)
    num_layers = arch.hidden_layers + 1
    keep = tuple(range(1, num_layers + 1)) if layers is None else tuple(sorted(set(layers)))
    activation = get_activation(arch.activation)
    variances1 = _diagonal_recursion(arch, activation, x1)
    variances2 = variances1 if same_inputs else _diagonal_recursion(arch, activation, x2)
    _warn_beyond_variance_limit(activation, variances1[:-1] + variances2[:-1])

    rows, cols = x1.shape[0], x2.shape[0]
    block = max(1, min(block_size, max(rows, cols)))
    kinds = ("nngp", "ntk", "nngp_derivative") if with_derivative else ("nngp", "ntk")
    out = np.empty((len(kinds), len(keep), rows, cols), np.dtype(x1.dtype))
    # Pad to whole tiles so that every tile reuses one compilation (padding variances are 1).
    padded_rows, padded_cols = -(-rows // block) * block, -(-cols // block) * block
    x1_padded, x2_padded = _pad_rows(x1, padded_rows), _pad_rows(x2, padded_cols)
    v1_padded = [_pad_rows(v, padded_rows, 1.0) for v in variances1]
    v2_padded = [_pad_rows(v, padded_cols, 1.0) for v in variances2]
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        for c0 in range(r0 if same_inputs else 0, cols, block):
            c1 = min(c0 + block, cols)
            pieces = _tile(
                arch, x1_padded[r0 : r0 + block], x2_padded[c0 : c0 + block],
                [v[r0 : r0 + block] for v in v1_padded], [v[c0 : c0 + block] for v in v2_padded],
                kinds, keep,
            )
            for index, piece in enumerate(pieces):
                piece = np.asarray(piece)[: r1 - r0, : c1 - c0]
                target = out[index // len(keep), index % len(keep)]
                target[r0:r1, c0:c1] = piece
                if same_inputs and c0 != r0:
                    target[c0:c1, r0:r1] = piece.T

    def by_layer(kind):
        if kind not in kinds:
            return (None,) * num_layers
        k = kinds.index(kind)
        return tuple(out[k, keep.index(l)] if l in keep else None for l in range(1, num_layers + 1))

    return LayerKernels(by_layer("nngp"), by_layer("ntk"), by_layer("nngp_derivative"))
