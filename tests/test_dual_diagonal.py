"""Diagonals of the dual maps and of the layer kernels: exact to round-off for any inputs.

The dual maps of kinked φ (relu, leaky_relu, abs, step, sign, relu**n) have a square-root
singularity in c at c = ±√(q1 q2) (K̇_relu = 1/2 − √(2(1 − ρ))/2π + …), so a c that is a few
ulps off √(q1 q2) — a matmul x·x'/D against a sum of squares — used to cost √ε ≈ 1e-8 on the NTK
diagonal. References here are independent of the code under test: the exact diagonal values
(E[relu(u)²] = q/2, E[erf(u)²] = (2/π) asin(2q/(1+2q)), mpmath quadrature for GELU), and the
angle formulas evaluated in mpmath at 50 digits at the exact values of the float inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dmft
from dmft.activations import get_activation
from dmft.activations._angles import SNAP_ULPS

EPS = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------
# Exact diagonal values (K(q, q, q), K̇(q, q, q)) in mpmath, independent of dmft.
# ----------------------------------------------------------------------------------------------


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else math.prod(range(n, 0, -2))


def _gelu_diagonal(q):
    pdf = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)  # noqa: E731
    cdf = lambda t: mp.ncdf(t)  # noqa: E731
    s = mp.sqrt(q)

    def moment(f):
        return mp.quad(lambda z: pdf(z) * f(s * z) ** 2, [-mp.inf, -3, 0, 3, mp.inf])

    return moment(lambda u: u * cdf(u)), moment(lambda u: cdf(u) + u * pdf(u))


def _exact_diagonal(name: str, q):
    """(E[φ(u)²], E[φ'(u)²]) for u ~ N(0, q), q an mpf."""
    if name == "relu":
        return q / 2, mp.mpf(1) / 2
    if name == "leaky_relu(0.2)":
        k = (1 + mp.mpf("0.04")) / 2
        return k * q, k
    if name == "abs":
        return q, mp.mpf(1)
    if name in ("relu**2", "relu**3"):
        n = int(name[-1])
        return (q**n * _double_factorial(2 * n - 1) / 2,
                n * n * q ** (n - 1) * _double_factorial(2 * n - 3) / 2)
    if name == "step":
        return mp.mpf(1) / 2, mp.inf  # φ' = δ: E[δ(u)²] = ∞
    if name == "sign":
        return mp.mpf(1), mp.inf
    if name == "erf":
        return 2 / mp.pi * mp.asin(2 * q / (1 + 2 * q)), 4 / (mp.pi * mp.sqrt(1 + 4 * q))
    if name == "gelu":
        return _gelu_diagonal(q)
    if name == "2*Max(x, 0) + 0.5":  # E[(2 relu(u) + 1/2)²], E[(2 H(u))²]
        return 2 * q + 2 * mp.sqrt(q / (2 * mp.pi)) + mp.mpf(1) / 4, mp.mpf(2)
    raise KeyError(name)


# How much the diagonal recursion amplifies relative errors per layer: K(q, q, q) ∝ q^n for
# relu**n (relative errors of q are multiplied by n), ≤ 1 for the others (homogeneous of degree 1
# or saturating).
_GROWTH = {"relu**2": 2, "relu**3": 3}

KINKED = ["relu", "leaky_relu(0.2)", "abs", "step", "sign", "relu**2", "relu**3"]
ALL = KINKED + ["erf", "gelu", "2*Max(x, 0) + 0.5"]


def _exact_recursion(name, x, sigma_w, sigma_b, hidden_layers, residual_scale=None):
    """Exact (Σ^l(x,x), Θ^l(x,x), Σ̇^l(x,x)) for l = 1..L+1 (conventions §1a, §2c), in mpmath from
    the exact values of the float inputs."""
    mp.mp.dps = 50
    sw2, sb2 = mp.mpf(sigma_w) ** 2, mp.mpf(sigma_b) ** 2
    beta2 = None if residual_scale is None else mp.mpf(residual_scale) ** 2 / hidden_layers
    out = []
    for row in np.asarray(x, dtype=np.float64):
        q = mp.fsum(mp.mpf(float(v)) ** 2 for v in row) / len(row)
        sigma = sw2 * q + sb2
        theta, sdot = sigma, mp.mpf(0)
        layers = [(sigma, theta, sdot)]
        for layer in range(1, hidden_layers + 1):
            k, kdot = _exact_diagonal(name, sigma)
            branch, sdot = sw2 * k + sb2, sw2 * kdot
            branch_ntk = branch + sdot * theta if mp.isfinite(sdot) else mp.inf
            if beta2 is not None and layer < hidden_layers:
                sigma, theta = sigma + beta2 * branch, theta + beta2 * branch_ntk
            else:
                sigma, theta = branch, branch_ntk
            layers.append((sigma, theta, sdot))
        out.append(layers)
    return np.array([[[float(v) for v in layer] for layer in row] for row in out])  # (P, L+1, 3)


def _assert_diagonal_exact(kernels, exact, name, hidden_layers):
    # 1e-13: a few ulps per layer and per operation of the recursion, times the recursion's
    # amplification of relative errors (n per layer for relu**n), with a margin of ~10×
    growth = _GROWTH.get(name, 1)
    rtol = 1e-13 * growth**hidden_layers
    for l in range(1, hidden_layers + 2):
        for kind, values in (("nngp", kernels.nngp), ("ntk", kernels.ntk),
                             ("nngp_derivative", kernels.nngp_derivative)):
            got = np.diag(values[l - 1])
            want = exact[:, l - 1, ("nngp", "ntk", "nngp_derivative").index(kind)]
            infinite = np.isinf(want)
            assert np.array_equal(np.isinf(got), infinite), (name, kind, l, got, want)
            err = np.abs(got[~infinite] - want[~infinite]) / np.maximum(np.abs(want[~infinite]), 1e-300)
            assert np.all(err <= rtol), (name, kind, l, float(np.max(err, initial=0)))


# ----------------------------------------------------------------------------------------------
# The layer kernels' diagonal.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_relu_ntk_diagonal_of_the_reported_case_is_exact(seed):
    """The reported case: x ~ N(0, 1) (8, 100), σ_w = 1.5, σ_b = 0.05, L = 3 (was 1.6e-8 off)."""
    x = np.random.default_rng(seed).normal(size=(8, 100))
    arch = dmft.Architecture(hidden_layers=3, activation="relu", sigma_w=1.5, sigma_b=0.05)
    exact = _exact_recursion("relu", x, 1.5, 0.05, 3)
    _assert_diagonal_exact(dmft.layer_kernels(arch, x), exact, "relu", 3)
    # x2 given separately: the diagonal pairs now go through the 2-D path (a matmul c against
    # sums of squares q1, q2), which is where the snapping of the dual maps is needed
    _assert_diagonal_exact(dmft.layer_kernels(arch, x, x.copy()), exact, "relu", 3)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    name=st.sampled_from(ALL),
    points=st.integers(1, 5),
    dim=st.sampled_from([1, 2, 7, 50, 300, 1000]),
    log_scale=st.floats(-2.0, 2.0),
    sigma_w=st.floats(0.3, 2.5),
    sigma_b=st.one_of(st.just(0.0), st.floats(0.01, 1.0)),
    hidden_layers=st.integers(1, 6),
    residual=st.one_of(st.none(), st.floats(0.2, 2.0)),
    seed=st.integers(0, 2**31 - 1),
)
def test_layer_kernel_diagonals_are_the_exact_recursion(name, points, dim, log_scale, sigma_w,
                                                       sigma_b, hidden_layers, residual, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(points, dim)) * 10.0**log_scale * rng.uniform(0.5, 2.0, size=(points, 1))
    if name.startswith("relu**"):
        hidden_layers = min(hidden_layers, 4)  # (Σ grows like q^(n^L): keep it finite)
    if residual is not None and hidden_layers < 2:
        residual = None
    arch = dmft.Architecture(hidden_layers=hidden_layers, activation=name, sigma_w=sigma_w,
                             sigma_b=sigma_b, residual_scale=residual)
    exact = _exact_recursion(name, x, sigma_w, sigma_b, hidden_layers, residual)
    if not np.all(np.isfinite(exact[..., 0])) or np.max(exact[..., 0]) > 1e250:
        return  # beyond float64 (relu**3 at large scales): nothing to compare
    _assert_diagonal_exact(dmft.layer_kernels(arch, x), exact, name, hidden_layers)
    _assert_diagonal_exact(dmft.layer_kernels(arch, x, x.copy()), exact, name, hidden_layers)


# ----------------------------------------------------------------------------------------------
# The dual maps at and near c = ±√(q1 q2).
# ----------------------------------------------------------------------------------------------


def _mp(v):
    return mp.mpf(float(v))


def _exact_dual(name, q1, q2, c):
    """(K, K̇) at (q1, q2, c) (mpf), |c| ≤ √(q1 q2), from the angle θ = acos ρ at 50 digits."""
    root = mp.sqrt(q1 * q2)
    rho = max(min(c / root, mp.mpf(1)), mp.mpf(-1))
    th = mp.acos(rho)
    s = root * mp.sin(th)
    if name == "relu":
        return (s + c * (mp.pi - th)) / (2 * mp.pi), (mp.pi - th) / (2 * mp.pi)
    if name == "leaky_relu(0.2)":
        a = mp.mpf("0.2")
        d2, s2 = (1 - a) ** 2, (1 + a * a) / 2
        return d2 / (2 * mp.pi) * s + (s2 - d2 * th / (2 * mp.pi)) * c, s2 - d2 * th / (2 * mp.pi)
    if name == "abs":
        return 2 / mp.pi * s + c * (1 - 2 * th / mp.pi), 1 - 2 * th / mp.pi
    inv_s = 1 / s if s > 0 else mp.inf
    if name == "step":
        return (mp.pi - th) / (2 * mp.pi), inv_s / (2 * mp.pi)
    if name == "sign":
        return 1 - 2 * th / mp.pi, 2 * inv_s / mp.pi
    if name == "relu**2":  # J2 = 3 sin θ cos θ + (π − θ)(1 + 2 cos² θ); K̇ = 4 K_relu
        J2 = 3 * mp.sin(th) * mp.cos(th) + (mp.pi - th) * (1 + 2 * mp.cos(th) ** 2)
        return q1 * q2 * J2 / (2 * mp.pi), 4 * (s + c * (mp.pi - th)) / (2 * mp.pi)
    raise KeyError(name)


def _scales(name, q1, q2):
    """Cauchy–Schwarz scales √(K(q1,q1,q1) K(q2,q2,q2)) of K and of K̇ (1 for the infinite K̇)."""
    k1, kd1 = _exact_diagonal(name, q1)
    k2, kd2 = _exact_diagonal(name, q2)
    kd = mp.sqrt(kd1 * kd2) if mp.isfinite(kd1) else mp.mpf(1)
    return mp.sqrt(k1 * k2), kd


def _near_edge_cases(seed=0, count=40):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        q1, q2 = 10.0 ** rng.uniform(-6, 6, size=2)
        if rng.uniform() < 0.3:
            q2 = q1
        for sign in (1.0, -1.0):
            for k in (0.0, 0.5, 1.0, 2.0, 5.0, 20.0, 63.0, 200.0, 1e3, 1e6, 1e10):
                c = sign * math.sqrt(q1 * q2) * (1 - k * EPS)
                cases.append((q1, q2, c))
            c = sign * math.sqrt(q1 * q2) * (1 + 3 * EPS)  # slightly beyond the edge (rounding)
            cases.append((q1, q2, c))
    return np.array(cases).T


@pytest.mark.parametrize("name", KINKED[:-1])
def test_dual_maps_near_the_edge_are_backward_stable(name):
    """At every (q1, q2, c) near c = ±√(q1 q2) — including c a few ulps off either way — K and K̇
    are the exact dual of a covariance whose c is within (SNAP_ULPS + 4) ulps of the given one,
    up to a few ulps of their scale (the best any float method can do: K̇ has infinite slope in
    c at the edge, so a forward-error bound would have to be √ε)."""
    act = get_activation(name)
    q1, q2, c = _near_edge_cases()
    K = np.asarray(act.dual(q1, q2, c))
    Kd = np.asarray(act.dual_derivative(q1, q2, c))
    mp.mp.dps = 50
    band = (SNAP_ULPS + 4) * EPS  # the snap, plus the rounding of ρ = c/√(q1 q2)
    for i in range(len(c)):
        a, b, cc = _mp(q1[i]), _mp(q2[i]), _mp(c[i])
        root = mp.sqrt(a * b)
        lo, hi = cc * (1 - band), cc * (1 + band)
        lo, hi = max(min(lo, hi), -root), min(max(lo, hi), root)
        grid = [lo + (hi - lo) * t / 16 for t in range(17)] + [cc if abs(cc) <= root else hi]
        values = [_exact_dual(name, a, b, g) for g in grid]
        scale_k, scale_kd = _scales(name, a, b)
        for got, exact, scale in ((K[i], [v[0] for v in values], scale_k),
                                  (Kd[i], [v[1] for v in values], scale_kd)):
            if all(mp.isinf(v) for v in exact):
                assert np.isinf(got) and got > 0, (name, q1[i], q2[i], c[i], got)
                continue
            finite = [v for v in exact if mp.isfinite(v)]
            slack = 8 * EPS * scale  # a few correctly rounded operations, relative to the scale
            if any(mp.isinf(v) for v in exact):  # K̇ of step/sign: ∞ at the edge, huge next to it
                assert np.isinf(got) or got >= min(finite) - slack, (name, i, got)
                continue
            assert min(finite) - slack <= got <= max(finite) + slack, (
                name, q1[i], q2[i], c[i], got, float(min(finite)), float(max(finite)))


@pytest.mark.parametrize("name,edge_plus,edge_minus", [
    # (K, K̇) at ρ = +1 and ρ = −1 over √(q1 q2) (K̇ over 1; relu**2: K over q1 q2, K̇ over √(q1q2))
    ("relu", (0.5, 0.5), (0.0, 0.0)),
    ("abs", (1.0, 1.0), (1.0, -1.0)),
    ("leaky_relu(0.2)", (0.52, 0.52), (-0.2, 0.2)),
    ("step", (0.5, math.inf), (0.0, math.inf)),
    ("sign", (1.0, math.inf), (-1.0, math.inf)),
    ("relu**2", (1.5, 2.0), (0.0, 0.0)),
])
def test_dual_maps_on_the_edge_are_exact_for_a_few_ulps_off_c(name, edge_plus, edge_minus):
    """c = ±fl(√(q1 q2))·(1 + kε), |k| ≤ 16: the value at ρ = ±1 to a few ulps (it used to be
    √(kε) ≈ 1e-8 off for K̇ whenever the determinant q1 q2 − c² rounded above its threshold)."""
    act = get_activation(name)
    rng = np.random.default_rng(7)
    q1 = 10.0 ** rng.uniform(-8, 8, 200)
    q2 = np.where(rng.uniform(size=200) < 0.5, q1, 10.0 ** rng.uniform(-8, 8, 200))
    k = rng.integers(-16, 17, 200)
    root = np.sqrt(q1 * q2)
    for sign, (k_edge, kd_edge) in ((1.0, edge_plus), (-1.0, edge_minus)):
        c = sign * root * (1 + k * EPS)
        K = np.asarray(act.dual(q1, q2, c))
        Kd = np.asarray(act.dual_derivative(q1, q2, c))
        power = {"relu**2": 2, "step": 0, "sign": 0}.get(name, 1)  # K ∝ (q1 q2)^{n/2}
        want_k = k_edge * root**power
        want_kd = kd_edge * (root if name == "relu**2" else 1.0)
        # 64ε: the snap band (SNAP_ULPS) of the inputs' relative offset times K's slope in c
        # (≤ 1 relative to the scale), plus a few ulps of rounding
        scale_k = root**power * (3.0 if name == "relu**2" else 1.0)
        np.testing.assert_array_less(np.abs(K - want_k), (SNAP_ULPS + 8) * EPS * scale_k + 1e-300)
        if math.isinf(kd_edge):
            assert np.all(np.isinf(Kd) & (Kd > 0))
        else:
            # K̇ is constant on the snapped band: exact up to a few ulps of its scale
            scale_kd = root if name == "relu**2" else 1.0
            np.testing.assert_array_less(np.abs(Kd - want_kd), 8 * EPS * scale_kd + 1e-300)


@pytest.mark.parametrize("name", ["erf", "gelu", "gaussian"])
def test_smooth_determinants_are_exact_on_the_diagonal_at_large_variance(name):
    """(1+2q)² − 4q² = 1 + 4q (erf) and (1+q)² − q² = 1 + 2q (gelu, gaussian) lost ε·q relative
    to cancellation; summed as 1 + 2(q1+q2) + 4(q1q2 − c²) they are exact to round-off."""
    act = get_activation(name)
    q = np.array([1e-3, 1.0, 37.0, 1e4, 1e7, 1e10])
    for c in (q, q * (1 - 3 * EPS)):  # the diagonal, and c a few ulps off
        K, Kd = np.asarray(act.dual(q, q, c)), np.asarray(act.dual_derivative(q, q, c))
        mp.mp.dps = 40
        for i, qi in enumerate(q):
            qq = _mp(qi)
            if name == "erf":
                k, kd = 2 / mp.pi * mp.asin(2 * qq / (1 + 2 * qq)), 4 / (mp.pi * mp.sqrt(1 + 4 * qq))
            elif name == "gaussian":
                k, kd = 1 / mp.sqrt(1 + 2 * qq), qq / (1 + 2 * qq) ** 1.5
            else:
                k, kd = _gelu_diagonal(qq)
            # 1e-13 relative: ulps of the closed forms, plus c's 3-ulp offset times the slope of
            # K̇ in c, ~q·ε relative at the edge (1e10 · 3ε · … ≤ 1e-5 would fail it before)
            tol = 1e-13 if c is q else 1e-13 + 8 * EPS * float(qq) / (1 + float(qq))
            assert abs(K[i] - float(k)) <= tol * abs(float(k)), (name, qi, K[i], k)
            assert abs(Kd[i] - float(kd)) <= tol * abs(float(kd)), (name, qi, Kd[i], kd)


# ----------------------------------------------------------------------------------------------
# Derivatives stay right.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.3, -0.7, 0.999999, -0.999999, 1.0, -1.0])
def test_relu_dual_derivatives_in_every_argument(rho):
    """∂K/∂q1 = sin θ √(q2/q1)/4π (the θ terms cancel), ∂K/∂c = K̇ = (π − θ)/2π and
    ∂K̇/∂c = 1/(2π√(q1q2 − c²)) (E[δ(u)δ(v)]), against these exact forms in mpmath; at ρ = ±1,
    ∂K/∂q is 0 and ∂K̇/∂c is infinite, where jax gives 0 (the snapped band is flat): only
    finiteness is asked of it there."""
    act = get_activation("relu")
    q1, q2 = 1.3, 0.6
    c = rho * math.sqrt(q1 * q2)
    g1, g2, gc = jax.grad(act.dual, argnums=(0, 1, 2))(q1, q2, c)
    gdot_c = jax.grad(act.dual_derivative, argnums=2)(q1, q2, c)
    # jvp with all tangents at once equals the sum of the partials
    _, tangent = jax.jvp(act.dual, (jnp.float64(q1), jnp.float64(q2), jnp.float64(c)),
                         (jnp.float64(0.3), jnp.float64(-0.2), jnp.float64(0.5)))
    mp.mp.dps = 40
    a, b, cc = _mp(q1), _mp(q2), _mp(c)
    th = mp.acos(max(min(cc / mp.sqrt(a * b), 1), -1))
    want1 = mp.sin(th) * mp.sqrt(b / a) / (4 * mp.pi)
    want2 = mp.sin(th) * mp.sqrt(a / b) / (4 * mp.pi)
    wantc = (mp.pi - th) / (2 * mp.pi)
    # 1e-12 absolute: the partials are O(1) here and the stable forms are accurate to ~ulps /
    # sin θ (1e-13 at ρ = 0.999999)
    for got, want in ((g1, want1), (g2, want2), (gc, wantc)):
        assert abs(float(got) - float(want)) <= 1e-12, (rho, float(got), float(want))
    assert abs(float(tangent) - float(0.3 * want1 - 0.2 * want2 + 0.5 * wantc)) <= 1e-12
    if abs(rho) < 1:
        want = 1 / (2 * mp.pi * mp.sqrt(a * b - cc * cc))
        # relative 1e-9: 1/√(q1q2 − c²) has condition ~1/(1 − ρ²) ≈ 5e5 at ρ = 0.999999
        assert abs(float(gdot_c) - float(want)) <= 1e-9 * float(want), (rho, float(gdot_c))
    else:
        assert np.isfinite(float(gdot_c))


def test_kinked_quadrature_is_snapped_too():
    """A kinked user expression without a closed form (quadrature tier) on pairs of equal inputs
    a few ulps apart: K̇ is the diagonal value, not √ε away from it."""
    act = get_activation("Max(x, 0) + Max(x - 1, 0)")
    assert act.tier == "quadrature"
    q = np.array([0.5, 1.0, 2.0])
    exact = np.asarray(act.dual_derivative(q, q, q))
    for k in (-8, -3, 3, 8):
        off = np.asarray(act.dual_derivative(q, q, q * (1 - k * EPS)))
        # the stated quadrature error (1e-10, relative to the scale ~1): was ~1e-8 unsnapped
        np.testing.assert_allclose(off, exact, rtol=0, atol=act.dual_error)


# ----------------------------------------------------------------------------------------------
# Extreme variances: √(q1 q2) is √q1·√q2, so q1 q2 may overflow or underflow float64.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "abs", "leaky_relu(0.2)"])
def test_kinked_dual_maps_at_extreme_variances(name):
    """q1, q2 from 1e-300 to 1e300 (q1 q2 beyond float64 either way) and ρ anywhere in [−1, 1]:
    K and K̇ are the 50-digit values (K = √(q1q2)·(a function of ρ) stays representable)."""
    act = get_activation(name)
    rng = np.random.default_rng(3)
    log_q = rng.uniform(-300, 300, size=(2, 60))
    log_q[1, :20] = log_q[0, :20]  # some equal variances
    q1, q2 = 10.0 ** log_q
    rho = np.concatenate([rng.uniform(-1, 1, 50), [1.0, -1.0, 0.0, 0.999, -0.999] * 2])
    c = rho * np.sqrt(q1) * np.sqrt(q2)
    K = np.asarray(act.dual(q1, q2, c))
    Kd = np.asarray(act.dual_derivative(q1, q2, c))
    mp.mp.dps = 50
    for i in range(len(c)):
        k, kd = _exact_dual(name, _mp(q1[i]), _mp(q2[i]), _mp(c[i]))
        scale_k, scale_kd = _scales(name, _mp(q1[i]), _mp(q2[i]))
        # 8ε of the Cauchy–Schwarz scale: a few correctly rounded operations (as above); the
        # snapping of |ρ| within SNAP_ULPS·ε of 1 moves K by less than that (K is Lipschitz in c)
        assert abs(K[i] - float(k)) <= (SNAP_ULPS + 8) * EPS * float(scale_k), (name, i, K[i], k)
        if abs(rho[i]) < 1 - 1e-6:  # K̇ away from its √(1 − |ρ|) edge
            # 8ε of the scale over sin θ: K̇'s slope in ρ is ∝ 1/sin θ, times the few-ulp rounding
            # of ρ = c/√(q1 q2) (inherent: it is the conditioning of K̇ in c)
            sine = math.sqrt(1 - rho[i] ** 2)
            assert abs(Kd[i] - float(kd)) <= 8 * EPS * float(scale_kd) / sine, (name, i, Kd[i], kd)


@pytest.mark.parametrize("q", [1e155, 1e200, 1e300])
def test_smooth_determinants_do_not_overflow_on_the_diagonal(q):
    """q q overflows float64 for q > 1e154; the determinants 1 + 2(q1 + q2) + 4(q1q2 − c²) of
    erf and 1 + q1 + q2 + (q1q2 − c²) of the Gaussian stay exact (q1 q2 − c² = 0 there)."""
    mp.mp.dps = 40
    qq = _mp(q)
    erf, gaussian = get_activation("erf"), get_activation("gaussian")
    for c in (q, q * (1 - 3 * EPS)):
        got = (float(erf.dual(q, q, c)), float(erf.dual_derivative(q, q, c)), float(gaussian.dual(q, q, c)))
        want = (2 / mp.pi * mp.asin(2 * qq / (1 + 2 * qq)), 4 / (mp.pi * mp.sqrt(1 + 4 * qq)),
                1 / mp.sqrt(1 + 2 * qq))
        for g, w in zip(got, want):
            # 1e-13 relative: ulps of the closed forms (c's 3-ulp offset is inside the snap band)
            assert abs(g - float(w)) <= 1e-13 * abs(float(w)), (q, c, g, w)
