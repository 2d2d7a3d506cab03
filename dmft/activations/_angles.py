"""The angle between two jointly Gaussian variables, to a few ulps uniformly, with snapping at ±1.

Shared by the closed-form table and the kinked quadrature: every dual map with a square-root
singularity at |ρ| = 1 (φ with kinks or jumps) takes its angle and √(q1 q2 − c²) from here.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

_PI = math.pi

# Snapping: a correlation within SNAP_ULPS units of rounding of ±1 is ±1 (see `_angles`).
SNAP_ULPS = 64


def angles(q1, q2, c):
    """(θ, π − θ, s) for the angle θ ∈ [0, π] between u and v, cos θ = ρ = c/√(q1 q2), and
    s = √(q1 q2 − c²) = √(q1 q2) sin θ, computed so that their error is a few ulps uniformly:

    - ρ is computed from √(q1 q2) (exactly q on the diagonal q1 = q2 = c = q, since
      √fl(q·q) = q in binary floating point), clipped to [−1, 1];
    - the gap g = 1 − |ρ| is exact for |ρ| ≥ 1/2 (Sterbenz) and the smaller of the two angles is
      atan2(√(g(2 − g)), 1 − g) (no acos, whose slope is infinite at 1; one square root
      shared with s), the other one
      π minus it; s = √(q1 q2) √(g (2 − g)) has no cancellation (no q1 q2 − c²);
    - |ρ| ≥ 1 − SNAP_ULPS·ε counts as ±1 (g = 0): the value returned there is the exact dual of
      a covariance whose c differs by ≤ SNAP_ULPS·ε relative from the given one. The dual maps
      of kinked φ have a square-root singularity in c at |ρ| = 1 (K̇_relu = 1/2 − √(2g)/2π + …),
      so the few-ulp inconsistencies between separately rounded c, q1, q2 (a matmul x·x'
      against a sum of squares: measured ≤ 15ε up to D = 10⁵) would otherwise become √ε ≈ 1e-8
      errors; snapped, every diagonal (and every pair of equal inputs) is exact to round-off.
      The price: for a genuine |ρ| in (1 − SNAP_ULPS·ε, 1), K̇ of a kinked φ is off by at most
      √(2·SNAP_ULPS·ε)/π ≈ 5e-8 of its scale, the same order as its conditioning allows there;
      K itself (Lipschitz in c) changes by ≤ SNAP_ULPS·ε of its scale.

    Differentiable: where-guards keep every branch finite, so jvp/grad in q1, q2 and c are the
    derivatives of the formulas above (0 inside the snapped band, where they are constant).
    """
    dtype = jnp.result_type(q1, q2, c)
    eps = jnp.finfo(dtype).eps
    qq = q1 * q2
    # √(q1 q2) directly (exact on the diagonal); √q1·√q2 where the product over- or underflows
    direct = jnp.isfinite(qq) & (qq >= jnp.finfo(dtype).tiny)
    root = jnp.where(direct, jnp.sqrt(jnp.where(direct, qq, 1.0)),
                     jnp.sqrt(jnp.abs(q1)) * jnp.sqrt(jnp.abs(q2)))
    nonzero = root > 0
    rho = jnp.where(nonzero, c / jnp.where(nonzero, root, 1.0), 1.0)  # zero variance: ρ = 1
    rho = jnp.clip(rho, -1.0, 1.0)
    positive = rho >= 0
    gap = jnp.where(positive, 1.0 - rho, 1.0 + rho)  # 1 − |ρ|, with slope ∓1 also at ρ = 0
    open_ = gap > SNAP_ULPS * eps
    g = jnp.where(open_, gap, 0.5)  # the guard: no √0 (infinite slope) in a discarded branch
    sine = jnp.sqrt(g * (2.0 - g))  # sin θ = √(1 − ρ²) = √(g(2 − g)), no cancellation
    # the angle to the nearer of ±u: atan2(sin, cos) is well conditioned for every θ ∈ [0, π/2]
    small = jnp.where(open_, jnp.arctan2(sine, 1.0 - g), 0.0)
    s = jnp.where(open_, root * sine, 0.0)
    theta = jnp.where(positive, small, _PI - small)
    return theta, jnp.where(positive, _PI - small, small), s
