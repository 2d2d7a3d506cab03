"""Training dynamics: the physical training rule, apart from any solver's numerical step.

Only gradient flow for now (docs/conventions.md §2). A solver's own `dt` (a time-march step, an
Euler step of the sampler) discretises this rule and is never a learning rate.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """dθ/dt = −η ∇_θ 𝓛, with η the parameterization's learning rate (1 for NTK, γ0² N for μP),
    so that in the limit ∂_t f = (1/P) K Δ in gradient-flow time t."""

    name = "flow"

    def velocity(self, gradients, learning_rate: float):
        """dθ/dt for the loss gradient `gradients` (a pytree) at learning rate η."""
        return jax.tree.map(lambda g: -learning_rate * g, gradients)


Dynamics = GradientFlow
