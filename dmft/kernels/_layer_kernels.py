"""Infinite-width NNGP Σ^l, NTK Θ^l and Σ̇^l of a network, layer by layer (docs/conventions.md §1a).

The recursion is the network's own: each block of layers (`dmft.network.Network.blocks`) applies
its kernel map, lowered from the layers' SymPy maps, to the state (Σ, Θ, Σ̇, q1, q2), starting from

    Σ^0 = x·x'/D,  Θ^0 = 0,  Σ̇^0 = 0,  q = |x|²/D.

For the spec's MLP this is Σ^1 = σ_w² x·x'/D + σ_b², Θ^1 = Σ^1, Σ^{l+1} = σ_w² E[φ(u)φ(v)] + σ_b²,
Θ^{l+1} = Σ^{l+1} + Σ̇^{l+1} Θ^l with Σ̇^{l+1} = σ_w² E[φ'(u)φ'(v)], (u, v) ~ N(0, Σ^l).

The recursion runs over square tiles of the kernel so that the temporaries are O(block²), only
the requested layers are ever held at full (P1, P2) size, and symmetric kernels cost half. Runs of
identical blocks (the hidden layers of an MLP) are a `lax.scan` once they are long, so that the
compiled program does not grow with depth. The diagonal of a symmetric kernel is the 1-D recursion
of the same maps on Σ = q, exact to round-off whatever rounding the matmul x·x' had.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._errors import InputError
from .._precision import require_float64
from .._progress import StepTicker, progress_bar
from ..network import KernelState, Network, as_network, lower_kernel_map

_DEFAULT_BLOCK_SIZE = 1024
_SCAN_MIN_RUN = 8  # runs of at least this many identical blocks are scanned, not unrolled
_PROGRESS_MIN_LAYERS = 1000  # deeper stacks show a progress bar over layers (when bars are on)
_KINDS = ("nngp", "ntk", "nngp_derivative")


@dataclasses.dataclass(frozen=True, eq=False)
class LayerKernels:
    """Kernels between inputs x1 (P1, D) and x2 (P2, D), indexed by layer l = 1..L+1.

    Entry ``l - 1`` of each tuple is layer l (the pre-activation after the l-th dense layer or
    residual block; l = L + 1 is the output). ``nngp_derivative[l - 1]`` is Σ̇^l (zero for l = 1,
    which has no activation below it). Layers that were not requested are None.
    """

    nngp: tuple[Float[np.ndarray, "P1 P2"] | None, ...]
    ntk: tuple[Float[np.ndarray, "P1 P2"] | None, ...]
    nngp_derivative: tuple[Float[np.ndarray, "P1 P2"] | None, ...]


def _block_map(block):
    maps = [lower_kernel_map(layer) for layer in block]

    def apply(state: KernelState) -> KernelState:
        for fn in maps:
            state = fn(state)
        return state

    return apply


def _runs(network: Network) -> list[tuple[tuple, int]]:
    """Consecutive identical blocks grouped: [(block, count), ...]."""
    runs: list[tuple[tuple, int]] = []
    for block in network.blocks:
        if runs and runs[-1][0] == block:
            runs[-1] = (block, runs[-1][1] + 1)
        else:
            runs.append((block, 1))
    return runs


def _recursion(network: Network, state: KernelState, keep: tuple[int, ...], kinds: tuple[int, ...],
               ticker=None) -> tuple[Array, ...]:
    """Run the blocks from `state` and keep the state entries `kinds` (indices into (Σ, Θ, Σ̇))
    of the layers in `keep` (sorted): in layer order, an unrolled layer gives one array per kind,
    a scanned run one array (its kept layers, kinds, ...). Separate arrays keep the outputs fused
    with the last layer's map; `_by_layer` regroups them (see `_layout`)."""
    out, layer = [], 0
    shape = jnp.broadcast_shapes(*(s.shape for s in state[:3]))
    for block, count in _runs(network):
        step = _block_map(block)
        kept = [k for k in keep if layer < k <= layer + count]
        if count < _SCAN_MIN_RUN:
            for _ in range(count):
                state = step(state)
                layer += 1
                if layer in kept:
                    out += [state[k] for k in kinds]
            continue
        positions = np.full(count, -1)
        positions[[k - layer - 1 for k in kept]] = np.arange(len(kept))
        buffer = jnp.zeros((max(len(kept), 1), len(kinds), *shape), state.nngp.dtype)

        def body(carry, position, step=step):
            current, buf = carry
            current = step(current)
            if ticker is not None:
                ticker.tick(position)
            buf = jax.lax.cond(position >= 0,
                               lambda b: b.at[position].set(jnp.stack([current[k] for k in kinds])),
                               lambda b: b, buf)
            return (current, buf), None

        (state, buffer), _ = jax.lax.scan(body, (state, buffer), jnp.asarray(positions))
        if kept:
            out.append(buffer)
        layer += count
    return tuple(out)


def _layout(network: Network, keep: tuple[int, ...]) -> list[int]:
    """The groups of `_recursion`'s outputs: 0 for an unrolled kept layer (one output per kind),
    n for a scanned run with n kept layers (one output)."""
    layout, layer = [], 0
    for _, count in _runs(network):
        kept = [k for k in keep if layer < k <= layer + count]
        layout += [0] * len(kept) if count < _SCAN_MIN_RUN else ([len(kept)] if kept else [])
        layer += count
    return layout


def _by_layer(outputs, layout: list[int], num_kinds: int):
    """The outputs of `_recursion` regrouped: one sequence of `num_kinds` arrays per kept layer."""
    index = 0
    for size in layout:
        if size == 0:  # an unrolled layer: one output per kind
            yield outputs[index:index + num_kinds]
            index += num_kinds
        else:  # a scanned run: one output (its kept layers, kinds, ...)
            yield from outputs[index]
            index += 1


def _initial_state(x1, x2) -> KernelState:
    dim = x1.shape[-1]
    nngp = x1 @ x2.T / dim
    zeros = jnp.zeros_like(nngp)
    return KernelState(nngp, zeros, zeros, (jnp.sum(x1 * x1, -1) / dim)[:, None],
                       (jnp.sum(x2 * x2, -1) / dim)[None, :])


@functools.partial(jax.jit, static_argnames=("network", "kinds", "keep", "ticker"))
def _tile(network: Network, x1, x2, kinds, keep, ticker=None) -> tuple[Array, ...]:
    """The kept layers' kernels on one tile x1 × x2, as `_recursion` lays them out."""
    return _recursion(network, _initial_state(x1, x2), keep,
                      tuple(_KINDS.index(kind) for kind in kinds), ticker)


@functools.partial(jax.jit, static_argnames=("network",))
def _diagonal(network: Network, x) -> Float[Array, "3 L1 P"]:
    """(Σ^l(x, x), Θ^l(x, x), Σ̇^l(x, x)) for l = 1..L+1: the same maps on the diagonal alone."""
    q = jnp.sum(x * x, -1) / x.shape[-1]
    zeros = jnp.zeros_like(q)
    layers = tuple(range(1, network.hidden_layers + 2))
    outputs = _recursion(network, KernelState(q, zeros, zeros, q, q), layers, (0, 1, 2))
    groups, index = [], 0
    for size in _layout(network, layers):  # whole scanned buffers: no per-layer ops in the program
        groups.append(jnp.stack(outputs[index:index + 3])[None] if size == 0 else outputs[index])
        index += 3 if size == 0 else 1
    return jnp.swapaxes(jnp.concatenate(groups), 0, 1)


def _warn_beyond_variance_limit(network: Network, variances: np.ndarray) -> None:
    """Warn when a numeric-tier dual is evaluated outside the range its error bound holds for."""
    largest = float(np.max(variances)) if variances.size else 0.0
    from ..activations import get_activation

    for activation in (get_activation(layer.activation) for layer in network.activations):
        if largest > activation.variance_limit:
            warnings.warn(
                f"activation {activation.name}: pre-activation variance {largest:.3g} exceeds "
                f"{activation.variance_limit:.3g}, where its {activation.tier} dual kernels keep "
                f"their stated error {activation.dual_error:.0e}; expect a larger error",
                stacklevel=3,
            )


def _inputs(name: str, x, dim: int | None = None) -> jax.Array:
    """x as a float array (P, D), or an InputError naming `name`."""
    array = np.asarray(x)
    if array.dtype.kind not in "fiu" or array.dtype == bool:
        raise InputError(f"layer_kernels: {name} must be a real numeric array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"layer_kernels: {name} must have shape (P, D) with P, D >= 1, got {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise InputError(f"layer_kernels: {name} has D = {array.shape[1]} but x1 has D = {dim}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"layer_kernels: {name} contains non-finite values (NaN or inf)")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def _check_memory(num_arrays: int, rows: int, cols: int, itemsize: int) -> None:
    needed = num_arrays * rows * cols * itemsize
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if needed > 0.8 * available:
        raise InputError(
            f"layer_kernels: keeping {num_arrays} kernels of shape ({rows}, {cols}) needs "
            f"{needed / 2**30:.1f} GiB of the {available / 2**30:.1f} GiB of memory; keep fewer "
            "layers (layers=(...)) or pass with_derivative=False"
        )


def _pad_rows(array, size):
    return jnp.pad(array, ((0, size - array.shape[0]), (0, 0)), mode="edge")


def layer_kernels(
    arch,
    x1: Float[Array, "P1 D"],
    x2: Float[Array, "P2 D"] | None = None,
    layers: tuple[int, ...] | None = None,
    block_size: int = _DEFAULT_BLOCK_SIZE,
    with_derivative: bool = True,
) -> LayerKernels:
    """NNGP Σ^l, NTK Θ^l and Σ̇^l between `x1` and `x2` (default: x1) for each layer l.

    Args:
        arch: a `dmft.network.Network`, or the spec's `Architecture` shorthand; a "mup" network
            gives its γ0 → 0 kernels (σ_w = 1, σ_b = 0).
        x1, x2: inputs (P1, D) and (P2, D).
        layers: which layers l ∈ 1..L+1 to keep at full size (default: all). Keeping only the
            output layer bounds the memory to two (P1, P2) arrays plus O(block_size²) temporaries.
        block_size: the kernels are computed on square tiles of this size (one compilation);
            with x2 = x1 only the tiles on and above the diagonal are computed.
        with_derivative: also keep Σ̇^l (otherwise ``nngp_derivative`` holds None).

    Cost: O(L·P1·P2) dual evaluations; memory: the kept layers plus O(L·block_size²) per tile.
    """
    require_float64("dmft.layer_kernels")
    network = as_network(arch)
    x1 = _inputs("x1", x1)
    same_inputs = x2 is None
    x2 = x1 if same_inputs else _inputs("x2", x2, x1.shape[1])
    num_layers = network.hidden_layers + 1
    keep = tuple(range(1, num_layers + 1)) if layers is None else tuple(sorted(set(layers)))
    if not keep or not all(isinstance(l, int | np.integer) and 1 <= l <= num_layers for l in keep):
        raise InputError(f"layer_kernels: layers must be in 1..{num_layers}, got {layers!r}")
    keep = tuple(int(l) for l in keep)
    kinds = _KINDS if with_derivative else _KINDS[:2]
    rows, cols = x1.shape[0], x2.shape[0]
    _check_memory(len(kinds) * len(keep), rows, cols, x1.dtype.itemsize)

    diagonal1 = np.asarray(_diagonal(network, x1))  # (3, L + 1, P1)
    diagonal2 = diagonal1 if same_inputs else np.asarray(_diagonal(network, x2))
    _warn_beyond_variance_limit(network, np.concatenate([diagonal1[0, :-1].ravel(),
                                                         diagonal2[0, :-1].ravel()]))

    block = max(1, min(block_size, max(rows, cols)))
    tiles = sum(len(range(r0 if same_inputs else 0, cols, block)) for r0 in range(0, rows, block))
    bar = progress_bar(tiles * network.hidden_layers, "kernels (layers)") \
        if network.hidden_layers >= _PROGRESS_MIN_LAYERS else None
    ticker = StepTicker.for_solve(bar) if bar is not None else None
    try:
        out = _assemble(network, x1, x2, same_inputs, kinds, keep, block, ticker)
    finally:
        if bar is not None:
            bar.close()
    if same_inputs:
        diagonal = np.arange(rows)
        out[:, :, diagonal, diagonal] = diagonal1[: len(kinds), np.asarray(keep) - 1]

    def by_layer(kind):
        if kind not in kinds:
            return (None,) * num_layers
        k = kinds.index(kind)
        position = {l: j for j, l in enumerate(keep)}
        return tuple(out[k, position[l]] if l in position else None
                     for l in range(1, num_layers + 1))

    return LayerKernels(by_layer("nngp"), by_layer("ntk"), by_layer("nngp_derivative"))


def _assemble(network, x1, x2, same_inputs, kinds, keep, block, ticker) -> np.ndarray:
    """The kept kernels (kinds, layers, P1, P2), tile by tile; x2 = x1 costs the upper triangle."""
    rows, cols = x1.shape[0], x2.shape[0]
    out = np.empty((len(kinds), len(keep), rows, cols), np.dtype(x1.dtype))
    layout = _layout(network, keep)
    # Pad to whole tiles so that every tile reuses one compilation (padding repeats the last row).
    x1_padded = _pad_rows(x1, -(-rows // block) * block)
    x2_padded = _pad_rows(x2, -(-cols // block) * block)
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        for c0 in range(r0 if same_inputs else 0, cols, block):
            c1 = min(c0 + block, cols)
            outputs = _tile(network, x1_padded[r0:r0 + block], x2_padded[c0:c0 + block],
                            kinds, keep, ticker)
            outputs = [np.asarray(output) for output in outputs]
            for j, layer in enumerate(_by_layer(outputs, layout, len(kinds))):
                for k, piece in enumerate(layer):
                    piece = piece[: r1 - r0, : c1 - c0]
                    out[k, j, r0:r1, c0:c1] = piece
                    if same_inputs and c0 != r0:
                        out[k, j, c0:c1, r0:r1] = piece.T
    return out
