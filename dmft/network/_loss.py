"""Losses: the value 𝓛(f, y) and the error signal Δ = −P ∂𝓛/∂f, the only place Δ is formed."""

from __future__ import annotations

import dataclasses

from jaxtyping import Array, Float


@dataclasses.dataclass(frozen=True)
class MSE:
    """𝓛 = (1/2P) Σ_μ (f_μ − y_μ)² and Δ = y − f (docs/conventions.md §2).

    Works on numpy and JAX arrays alike; points are the last axis, any leading axes (time, batch,
    seed) are kept. Cost O(P) per evaluation.
    """

    name = "mse"

    def value(self, f: Float[Array, "... P"], y: Float[Array, "... P"]) -> Float[Array, "..."]:
        return 0.5 * ((f - y) ** 2).mean(axis=-1)

    def error_signal(self, f: Float[Array, "... P"], y: Float[Array, "... P"]
                     ) -> Float[Array, "... P"]:
        return y - f


Loss = MSE
