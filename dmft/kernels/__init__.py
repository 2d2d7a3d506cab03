"""Infinite-width kernels at initialization: NNGP and NTK per layer (docs/conventions.md §1a)."""

from __future__ import annotations

import numpy as np

from ..spec import Spec
from ._layer_kernels import LayerKernels, layer_kernels


def kernels(spec: Spec) -> dict[str, np.ndarray]:
    """The arrays of ``dmft kernels``: ``nngp_L{l}``, ``ntk_L{l}`` (P, P) for l = 1..L+1, and
    ``ntk_test_train`` / ``nngp_test_train`` (P_test, P) of the output when test inputs are given."""
    arch, data = spec.architecture, spec.data
    train = layer_kernels(arch, data.x_train)
    out: dict[str, np.ndarray] = {}
    for layer, (nngp, ntk) in enumerate(zip(train.nngp, train.ntk), start=1):
        out[f"nngp_L{layer}"] = nngp
        out[f"ntk_L{layer}"] = ntk
    if data.x_test is not None:
        output_layer = arch.hidden_layers + 1
        test = layer_kernels(arch, data.x_test, data.x_train, layers=(output_layer,), with_derivative=False)
        out["ntk_test_train"] = test.ntk[-1]
        out["nngp_test_train"] = test.nngp[-1]
    return out


__all__ = ["LayerKernels", "kernels", "layer_kernels"]
