"""Training dynamics: the physical training rule, apart from any solver's numerical step.

A rule is one of (docs/conventions.md §2, §2a)

    GradientFlow()                         dθ/dt = −η ∇_θ 𝓛
    GradientDescent(η0)                    θ_{k+1} = θ_k − η0 η ∇_θ 𝓛(θ_k),  t = k η0
    SGD(η0, batch_size=B, seed=s)          as GradientDescent on the loss of the step's batch

with η the parameterization's learning rate (1 for NTK, γ0² N for μP), so that every rule shares
gradient-flow time t and GD → flow as η0 → 0. A solver's own `dt` (a time-march step, an Euler
step of the sampler) discretises gradient flow and is never a learning rate.

Every discrete rule is expressed to the solvers by `batch_weights`: a (K, P) array ω with
ω_kμ = P/B on the batch of step k and 0 elsewhere (all ones for full-batch GD), so that the
step-k loss is (1/P) Σ_μ ω_kμ ℓ(f_μ, y_μ) and its error signal is ω_k ⊙ Δ. One formula then
serves GD and SGD in every limit and at finite width.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jaxtyping import Float, Int

from .._errors import InputError


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """dθ/dt = −η ∇_θ 𝓛, so that in the limit ∂_t f = (1/P) K Δ in gradient-flow time t."""

    name = "flow"
    learning_rate = None

    def velocity(self, gradients, learning_rate: float):
        """dθ/dt for the loss gradient `gradients` (a pytree) at the parameterization's η."""
        return jax.tree.map(lambda g: -learning_rate * g, gradients)


@dataclasses.dataclass(frozen=True)
class GradientDescent:
    """Full-batch gradient descent with step η0 in time units: θ_{k+1} = θ_k − η0 η ∇𝓛(θ_k).

    In the lazy limit f_k − y = (I − η0 K/P)^k (f_0 − y); unstable on the linearised model once
    η0 λ_max(K)/P > 2.
    """

    learning_rate: float
    name = "gd"

    def __post_init__(self):
        eta = self.learning_rate
        if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating, np.integer)) \
                or not np.isfinite(eta) or eta <= 0:
            raise InputError(f"training.learning_rate must be a finite number > 0, got {eta!r}")
        object.__setattr__(self, "learning_rate", float(eta))

    def steps(self, times) -> Int[np.ndarray, " T"]:
        """The step index k = t/η0 of each save time (times are multiples of η0)."""
        return np.rint(np.asarray(times, dtype=np.float64) / self.learning_rate).astype(np.int64)

    def update(self, params, gradients, learning_rate: float):
        """θ − η0 η ∇𝓛: one step from `params` with loss gradient `gradients` (pytrees)."""
        step = self.learning_rate * learning_rate
        return jax.tree.map(lambda p, g: p - step * g, params, gradients)

    def batches(self, num_points: int, num_steps: int) -> Int[np.ndarray, "K B"]:
        """The points of each step's batch, (K, B) sorted indices: all points for GD."""
        return np.broadcast_to(np.arange(num_points), (num_steps, num_points))

    def batch_weights(self, num_points: int, num_steps: int) -> Float[np.ndarray, "K P"]:
        """ω_kμ = P/B on the batch of step k, 0 elsewhere (module docstring); cost O(K P)."""
        batches = self.batches(num_points, num_steps)
        weights = np.zeros((num_steps, num_points))
        np.put_along_axis(weights, batches, num_points / batches.shape[1], axis=1)
        return weights


@dataclasses.dataclass(frozen=True)
class SGD(GradientDescent):
    """Minibatch gradient descent: each step descends (1/2B) Σ_{μ∈batch} (f_μ − y_μ)².

    Batches: for every epoch a fresh permutation of the P points from
    ``numpy.random.default_rng(seed)``, cut into ⌊P/B⌋ consecutive batches of B points (a
    remainder of P mod B points sits out that epoch); indices are sorted inside a batch, so
    ``batch_size = P`` is exactly full-batch GD. The same seed gives the same batches in the
    limit and in the sampler.
    """

    batch_size: int = 1
    seed: int = 0
    name = "sgd"

    def __post_init__(self):
        super().__post_init__()
        for key, minimum in (("batch_size", 1), ("seed", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < minimum:
                raise InputError(f"training.{key} must be an integer >= {minimum}, got {value!r}")
            object.__setattr__(self, key, int(value))

    def batches(self, num_points: int, num_steps: int) -> Int[np.ndarray, "K B"]:
        size = self.batch_size
        if size > num_points:
            raise InputError(f"training.batch_size = {size} exceeds the {num_points} training "
                             "points")
        per_epoch = num_points // size
        rng = np.random.default_rng(self.seed)
        epochs = -(-num_steps // per_epoch)
        chunks = [rng.permutation(num_points)[: per_epoch * size].reshape(per_epoch, size)
                  for _ in range(epochs)]
        if not chunks:
            return np.zeros((0, size), dtype=np.int64)
        return np.sort(np.concatenate(chunks)[:num_steps], axis=1)


Dynamics = GradientFlow | GradientDescent | SGD

