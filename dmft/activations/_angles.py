"""The angle between two jointly Gaussian variables, to a few ulps uniformly, with snapping at ±1.

Shared by the closed-form table and the kinked quadrature: every dual map with a square-root
singularity at |ρ| = 1 (φ with kinks or jumps) takes its angle and √(q1 q2 − c²) from here.

Cost: in the kernel recursion q1 is a column (P1, 1) and q2 a row (1, P2), so everything computed
from q1 or q2 alone (their square roots and reciprocals) is a vector; per kernel entry there are
one square root, one division and one arctangent (which dominates: XLA's atan on a half angle,
cheaper than its atan2).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

_PI = math.pi

# Snapping: a correlation within SNAP_ULPS units of rounding of ±1 is ±1 (see `angles`).
SNAP_ULPS = 64


def root_product(q1, q2):
    """√(q1 q2) as √q1·√q2: no overflow or underflow of the product q1 q2 (q > 1e154 would
    overflow it), and for a column q1 and a row q2 the square roots are vectors, so per kernel
    entry this is one multiplication (within two ulps; the snapping of `angles` and
    `_table._gram` absorbs that on the diagonal)."""
    return jnp.sqrt(jnp.abs(q1)) * jnp.sqrt(jnp.abs(q2))


def _nonzero(x):
    return jnp.where(x > 0, x, 1.0)  # the guard: no 1/0 in a discarded branch


def angles(q1, q2, c):
    """(θ, π − θ, s) for the angle θ ∈ [0, π] between u and v, cos θ = ρ = c/√(q1 q2), and
    s = √(q1 q2 − c²) = √(q1 q2) sin θ, computed so that their error is a few ulps uniformly:

    - ρ = c·(1/√q1)(1/√q2), or c·(1/q) where q1 = q2 = q (a few ulps, no overflow of q1 q2;
      within an ulp of 1 on the diagonal, well inside the snap band), clipped to [−1, 1]; zero
      variance counts as ρ = 1;
    - the gap g = 1 − |ρ| is exact for |ρ| ≥ 1/2 (Sterbenz), sin θ = √(g (2 − g)) has no
      cancellation, and the smaller of the two angles is the half-angle form
      2·atan(sin θ/(2 − g)) = 2·atan(tan(θ/2)) (no acos, whose slope is infinite at 1; a
      denominator in [1, 2], so no singular branch at ρ = 0), the other one π minus it;
      s = √q1 √q2 sin θ has no cancellation either (no q1 q2 − c²);
    - |ρ| ≥ 1 − SNAP_ULPS·ε counts as ±1 (g = 0): the value returned there is the exact dual of
      a covariance whose c differs by ≤ SNAP_ULPS·ε relative from the given one. The dual maps
      of kinked φ have a square-root singularity in c at |ρ| = 1 (K̇_relu = 1/2 − √(2g)/2π + …),
      so the few-ulp inconsistencies between separately rounded c, q1, q2 (a matmul x·x'
      against a sum of squares) would otherwise become √ε ≈ 1e-8 errors; snapped, every
      diagonal (and every pair of equal inputs) is exact to round-off: there θ = 0 and s = 0
      exactly, whatever the rounding of ρ. The price: for a genuine |ρ| in (1 − SNAP_ULPS·ε, 1),
      K̇ of a kinked φ is off by at most √(2·SNAP_ULPS·ε)/π of its scale, the same order as its
      conditioning allows there; K itself (Lipschitz in c) changes by ≤ SNAP_ULPS·ε of its scale.

    Differentiable: where-guards keep every branch finite, so jvp/grad in q1, q2 and c are the
    derivatives of the formulas above (0 inside the snapped band, where they are constant).
    """
    eps = jnp.finfo(jnp.result_type(q1, q2, c)).eps
    r1, r2 = jnp.sqrt(jnp.abs(q1)), jnp.sqrt(jnp.abs(q2))
    root = r1 * r2  # `root_product`
    # 1/√(q1 q2) from vectors, so that ρ is a multiplication: a division per entry would have
    # many users, and XLA would keep it in memory (one more pass over the tile per layer).
    # Where q1 = q2 it is (1/q1 + 1/q2)/2: exact (ρ as c/q, as rounded as c/√fl(q·q) was), with
    # the derivatives of 1/√(q1 q2).
    inverse = jnp.where(q1 == q2, 0.5 / _nonzero(jnp.abs(q1)) + 0.5 / _nonzero(jnp.abs(q2)),
                        (1.0 / _nonzero(r1)) * (1.0 / _nonzero(r2)))
    rho = jnp.where(root > 0, c * inverse, 1.0)  # zero variance: ρ = 1
    rho = jnp.clip(rho, -1.0, 1.0)
    positive = rho >= 0
    gap = jnp.where(positive, 1.0 - rho, 1.0 + rho)  # 1 − |ρ|, with slope ∓1 also at ρ = 0
    open_ = gap > SNAP_ULPS * eps
    g = jnp.where(open_, gap, 0.5)  # the guard: no √0 (infinite slope) in a discarded branch
    sine = jnp.sqrt(g * (2.0 - g))  # sin θ = √(1 − ρ²) = √(g(2 − g)), no cancellation
    # the angle to the nearer of ±u, 2 atan(tan(θ/2)): well conditioned for every θ ∈ [0, π/2]
    small = jnp.where(open_, 2.0 * jnp.arctan(sine / (2.0 - g)), 0.0)
    s = jnp.where(open_, root * sine, 0.0)
    theta = jnp.where(positive, small, _PI - small)
    return theta, jnp.where(positive, _PI - small, small), s
