"""Activations and dual maps: closed forms, exact rules and quadrature against independent references.

References used here are computed independently of the code under test: scipy adaptive quadrature
(nested `quad`), 1-D reductions with closed-form conditional Gaussian expectations, tensor-product
Gauss–Hermite in whitened coordinates, mpmath (30 digits), hypergeometric moments, Monte Carlo, and
the 30-digit table of shared/notes/symbolic.md.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special

from dmft._errors import InputError
from dmft.activations import C, Q1, Q2, X, get_activation, known_activations
from dmft.activations._polynomial import polynomial_dual
from dmft.activations._quadrature import PiecewiseGaussLegendre

# (q1, q2, ρ): generic, negative c, near-diagonal ρ = ±0.999999, c = 0, unequal variances.
POINTS = [(1.0, 2.0, 0.35), (0.7, 1.3, -0.4), (1.5, 0.8, 0.999999), (2.0, 2.0, -0.999999),
          (0.3, 3.0, 0.0), (0.5, 1.7, 0.8)]


def _cov(points=POINTS):
    q1, q2, rho = (np.array(v) for v in zip(*points))
    return q1, q2, rho * np.sqrt(q1 * q2)


def _scale(act, q1, q2):
    """√(E[φ(u)²] E[φ(v)²]): the Cauchy–Schwarz scale `dual_error` is relative to."""
    return np.sqrt(np.asarray(act.dual(q1, q1, q1)) * np.asarray(act.dual(q2, q2, q2)))


def _numpy(expr):
    expr = expr.replace(sp.DiracDelta, lambda *a: sp.Integer(0))
    return sp.lambdify([X], expr, modules=["scipy", "numpy"])


# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------


def gauss_hermite_2d(f, g, q1, q2, c, n=160):
    """E[f(u) g(v)] by an n×n tensor Gauss–Hermite rule in whitened coordinates (smooth f, g)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    out = []
    for a, b, cc in zip(q1, q2, c):
        rho = cc / math.sqrt(a * b)
        s = math.sqrt(max(1 - rho * rho, 0.0))
        u = math.sqrt(a) * z[:, None]
        v = math.sqrt(b) * (rho * z[:, None] + s * z[None, :])
        out.append(np.sum(w[:, None] * w[None, :] * f(u) * g(v)))
    return np.array(out)


def _ndtr(t):
    return special.ndtr(t)


def _npdf(t):
    return np.exp(-t * t / 2) / math.sqrt(2 * math.pi)


# E[h(v) | u] for v | u ~ N(m, s²): closed forms for the piecewise-linear activations.
CONDITIONAL = {
    "relu": lambda m, s: m * _ndtr(m / s) + s * _npdf(m / s),
    "abs": lambda m, s: m * (1 - 2 * _ndtr(-m / s)) + 2 * s * _npdf(m / s),
    "step": lambda m, s: _ndtr(m / s),
    "sign": lambda m, s: 2 * _ndtr(m / s) - 1,
    "relu2": lambda m, s: (m * m + s * s) * _ndtr(m / s) + m * s * _npdf(m / s),
}


def _leaky_conditional(slope):
    relu = CONDITIONAL["relu"]
    return lambda m, s: relu(m, s) - slope * relu(-m, s)


def _leaky_derivative_conditional(slope):
    return lambda m, s: slope + (1 - slope) * _ndtr(m / s)


def conditional_reference(f, h, q1, q2, c, kink=0.0):
    """E[f(u) h(m(u), σ)] by adaptive 1-D quadrature split at u = kink, where
    m(u) = c u/q1 and σ² = q2 − c²/q1 (requires |ρ| < 1)."""
    out = []
    for a, b, cc in zip(q1, q2, c):
        s = math.sqrt(b - cc * cc / a)

        def integrand(u):
            return _npdf(u / math.sqrt(a)) / math.sqrt(a) * f(u) * h(cc * u / a, s)

        lim = 12 * math.sqrt(a)
        # E[h(v)|u] has a layer of width ~σ q1/|c| around u = 0: split there geometrically too
        width = s * a / max(abs(cc), 1e-300)
        layer = kink * a / cc if cc != 0 else 0.0  # where m(u) = kink
        cuts = sorted({p for p in {kink, layer} | {layer + sgn * width * k for k in (0.5, 5, 50)
                                                   for sgn in (1, -1)} if abs(p) < lim} | {lim, -lim})
        with warnings.catch_warnings():  # "roundoff detected": the tolerance asked is at rounding
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            val = sum(integrate.quad(integrand, lo, hi, epsabs=1e-16, epsrel=1e-14, limit=200)[0]
                      for lo, hi in zip(cuts[:-1], cuts[1:]))
        out.append(val)
    return np.array(out)


def nested_quad(f, g, q1, q2, c):
    """E[f(u) g(v)] by nested scipy `quad` in whitened coordinates (smooth f, g)."""
    out = []
    for a, b, cc in zip(q1, q2, c):
        rho = cc / math.sqrt(a * b)
        s = math.sqrt(1 - rho * rho)

        def inner(z1):
            return integrate.quad(lambda z2: _npdf(z2) * g(math.sqrt(b) * (rho * z1 + s * z2)),
                                  -12, 12, epsabs=1e-15, epsrel=1e-13)[0]

        with warnings.catch_warnings():  # "roundoff detected": the tolerance asked is at rounding
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            out.append(integrate.quad(lambda z1: _npdf(z1) * f(math.sqrt(a) * z1) * inner(z1),
                                      -12, 12, epsabs=1e-15, epsrel=1e-13)[0])
    return np.array(out)


# ----------------------------------------------------------------------------------------------
# Closed forms and exact rules
# ----------------------------------------------------------------------------------------------

# shared/notes/symbolic.md §2, mpmath at 30 digits, printed to 15 significant digits:
# name: K(1, 2, 0.5), K̇(1, 2, 0.5), K(0.7, 1.3, −0.4), K̇(0.7, 1.3, −0.4) (None: not tabulated).
REFERENCE_VALUES = {
    "relu": (0.364298881694223, 0.307513364040654, 0.0653780915189423, 0.181135330841264),
    "relu**2": (1.08459670961248, None, 0.0573977883082173, None),
    "erf": (0.16625797148119, 0.340287581977929, -0.175479656091822, 0.450158158078553),
    "sin": (0.116272078967415, 0.251607362204028, -0.15110733607621, 0.397704300017816),
    "cos": (0.251607362204028, 0.116272078967415, 0.397704300017816, -0.15110733607621),
    "gaussian": (0.41702882811415, 0.0362633763577521, 0.516397779494322, -0.0550824298127277),
    "x**3": (9.75, 22.5, -3.66, 11.07),
    "gelu": (0.271337546273993, 0.316143890226868, -0.0119393232650043, 0.175182778195678),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_VALUES))
def test_dual_maps_match_30_digit_reference_values(name):
    act = get_activation(name)
    assert act.tier in ("closed-form", "polynomial")
    q1, q2, c = np.array([1.0, 0.7]), np.array([2.0, 1.3]), np.array([0.5, -0.4])
    K, Kdot = np.asarray(act.dual(q1, q2, c)), np.asarray(act.dual_derivative(q1, q2, c))
    ref = REFERENCE_VALUES[name]
    for got, want in ((K[0], ref[0]), (Kdot[0], ref[1]), (K[1], ref[2]), (Kdot[1], ref[3])):
        if want is not None:
            # the references carry 15 significant digits (≤ 5e-15 relative rounding), and the
            # closed forms claim a few ulps: 1e-14 relative leaves room for both, no more.
            assert abs(got - want) <= 1e-14 * abs(want), (name, got, want)


SMOOTH_TABLE = ["erf", "gelu", "sin", "cos", "exp", "gaussian", "linear", "2*erf(x/2)",
                "exp(-x**2)", "3*sin(x/2)", "x**3", "x^3 - 3*x", "x**4 + x"]


@pytest.mark.parametrize("name", SMOOTH_TABLE)
def test_smooth_closed_forms_match_tensor_gauss_hermite(name):
    act = get_activation(name)
    assert act.tier in ("closed-form", "polynomial")
    f, df = _numpy(act.expr), _numpy(sp.diff(act.expr, X))
    q1, q2, c = _cov()
    for mine, ref in ((act.dual(q1, q2, c), gauss_hermite_2d(f, f, q1, q2, c)),
                      (act.dual_derivative(q1, q2, c), gauss_hermite_2d(df, df, q1, q2, c))):
        scale = np.maximum(_scale(act, q1, q2), np.abs(ref))
        # 160² Gauss–Hermite nodes integrate these entire functions to ~1e-15 at q ≤ 3; the
        # closed forms claim `dual_error` (1e-14, or the polynomial cancellation bound).
        np.testing.assert_array_less(np.abs(np.asarray(mine) - ref), 5 * act.dual_error * scale + 1e-15)


KINKED_TABLE = {
    # name: (φ, E[φ(v)|u], φ', E[φ'(v)|u]) (φ' None: a δ, checked by Price/finite differences)
    "relu": (lambda x: np.maximum(x, 0), CONDITIONAL["relu"],
             lambda x: (x > 0) * 1.0, CONDITIONAL["step"]),
    "abs": (np.abs, CONDITIONAL["abs"], np.sign, CONDITIONAL["sign"]),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x), _leaky_conditional(0.01),
                   lambda x: np.where(x > 0, 1.0, 0.01), _leaky_derivative_conditional(0.01)),
    "leaky_relu(0.2)": (lambda x: np.where(x > 0, x, 0.2 * x), _leaky_conditional(0.2),
                        lambda x: np.where(x > 0, 1.0, 0.2), _leaky_derivative_conditional(0.2)),
    "step": (lambda x: (x > 0) * 1.0, CONDITIONAL["step"], None, None),
    "sign": (np.sign, CONDITIONAL["sign"], None, None),
    "relu2": (lambda x: np.maximum(x, 0) ** 2, CONDITIONAL["relu2"],
              lambda x: 2 * np.maximum(x, 0), lambda m, s: 2 * CONDITIONAL["relu"](m, s)),
}


@pytest.mark.parametrize("name", sorted(KINKED_TABLE))
def test_kinked_closed_forms_match_conditional_quadrature(name):
    act = get_activation(name)
    assert act.tier == "closed-form"
    f, h, df, dh = KINKED_TABLE[name]
    q1, q2, c = _cov()
    checks = [(act.dual(q1, q2, c), conditional_reference(f, h, q1, q2, c))]
    if df is not None:
        checks.append((act.dual_derivative(q1, q2, c), conditional_reference(df, dh, q1, q2, c)))
    else:  # K̇ = ∂K/∂c of the reference, by central differences
        eps = 1e-5
        far = np.abs(c) < 0.99 * np.sqrt(q1 * q2)  # at rho ~ +-1 the delta-delta term is too sharp
        q1f, q2f, cf = q1[far], q2[far], c[far]
        fd = (conditional_reference(f, h, q1f, q2f, cf + eps)
              - conditional_reference(f, h, q1f, q2f, cf - eps)) / (2 * eps)
        # central differences: O(eps^2 K''') + quad noise 1e-14/eps: ~1e-8 relative
        np.testing.assert_allclose(np.asarray(act.dual_derivative(q1f, q2f, cf)), fd, rtol=1e-6)
    for mine, ref in checks:
        # quad converges to ~1e-14 on each smooth piece; the closed form claims 1e-14 relative
        np.testing.assert_allclose(np.asarray(mine), ref, rtol=2e-13, atol=2e-14)


def _table_names():
    return ["relu", "leaky_relu", "leaky_relu(0.2)", "step", "sign", "abs", "erf", "gelu", "linear",
            "sin", "cos", "exp", "gaussian", "relu2", "2*erf(x/2)", "x**3", "x**4 - x**2",
            "0.5*x + Max(x,0) - 0.3", "1 + 2*erf(x/2)", "x + 2*Heaviside(x) - 1"]


@pytest.mark.parametrize("name", _table_names())
def test_price_theorem_dual_derivative_is_dK_dc(name):
    """∂K/∂c = K̇ symbolically (polynomials) or at random points in 30-digit mpmath."""
    act = get_activation(name)
    diff = sp.diff(act.dual_expr, C) - act.dual_derivative_expr
    if act.tier == "polynomial":
        assert sp.expand(diff) == 0
        # and K̇ = E[φ'(u)φ'(v)] from Isserlis applied to φ' directly
        assert sp.expand(polynomial_dual(sp.diff(act.expr, X))[0] - act.dual_derivative_expr) == 0
        return
    rng = np.random.default_rng(7)
    for _ in range(3):
        a, b = rng.uniform(0.2, 3.0, size=2)
        cc = rng.uniform(-0.95, 0.95) * math.sqrt(a * b)
        subs = {Q1: sp.Float(a, 40), Q2: sp.Float(b, 40), C: sp.Float(cc, 40)}
        d = complex(diff.evalf(40, subs=subs))
        ref = complex(act.dual_derivative_expr.evalf(40, subs=subs))
        # 40-digit evaluation: any true identity leaves ≤ 1e-30; an error in a formula is O(1)
        assert abs(d) <= 1e-25 * max(1.0, abs(ref)), (name, d)


@pytest.mark.parametrize("name", _table_names())
def test_jax_form_equals_printed_sympy_form(name):
    """The stable JAX callables compute the SymPy `dual_expr`/`dual_derivative_expr` (mpmath)."""
    act = get_activation(name)
    q1, q2, c = _cov([p for p in POINTS if abs(p[2]) < 0.99])  # the δ-type K̇ of step/sign is finite
    K, Kd = np.asarray(act.dual(q1, q2, c)), np.asarray(act.dual_derivative(q1, q2, c))
    for i in range(len(q1)):
        subs = {Q1: sp.Float(q1[i], 30), Q2: sp.Float(q2[i], 30), C: sp.Float(c[i], 30)}
        for got, expr in ((K[i], act.dual_expr), (Kd[i], act.dual_derivative_expr)):
            want = float(sp.re(expr.evalf(30, subs=subs)))
            # a few ulps of float64 evaluation against a 30-digit one
            assert abs(got - want) <= 1e-14 * max(1.0, abs(want)), (name, i, got, want)


@pytest.mark.parametrize("q", [1e-3, 0.37, 1.0, 2.0, 7.3, 123.4])
def test_relu_dual_is_exact_on_the_diagonal(q):
    relu = get_activation("relu")
    K = float(relu.dual(q, q, q))
    # K(q, q, q) = q/2: no arccos(1 − ε) loss; at most one rounding (4e-16 relative)
    assert abs(K - q / 2) <= 4e-16 * q / 2
    assert float(relu.dual_derivative(q, q, q)) == 0.5  # θ = atan2(0, q) = 0 exactly
    assert float(relu.dual_derivative(q, q, -q)) == 0.0
    # also jitted, where XLA may fuse q1 q2 − c² into an FMA that leaves ~ε q² instead of 0
    qs = jnp.full((3,), q)
    assert np.all(np.abs(np.asarray(jax.jit(relu.dual)(qs, qs, qs)) - q / 2) <= 4e-16 * q / 2)
    assert np.all(np.asarray(jax.jit(relu.dual_derivative)(qs, qs, qs)) == 0.5)


@pytest.mark.parametrize("name,moment", [
    ("abs", lambda q: q), ("step", lambda q: 0.5), ("sign", lambda q: 1.0),
    ("leaky_relu", lambda q: q * (1 + 0.01**2) / 2), ("relu2", lambda q: 1.5 * q * q),
    ("erf", lambda q: 2 / math.pi * math.asin(2 * q / (1 + 2 * q))), ("linear", lambda q: q),
])
def test_diagonal_equals_second_moment(name, moment):
    act = get_activation(name)
    for q in (0.01, 0.5, 1.0, 3.0, 50.0):
        # E[φ(u)²] in closed form; the stable forms hit it to a couple of ulps
        assert abs(float(act.dual(q, q, q)) - moment(q)) <= 1e-15 * abs(moment(q)) + 1e-300


def test_near_diagonal_is_continuous():
    """No √ε loss next to the diagonal: relu at ρ = 1 − 1e-12 is within 1e-11 of the diagonal."""
    relu = get_activation("relu")
    q = 1.7
    # K is 1-Lipschitz-ish in ρ here (K̇ ≤ 1/2 · q): a 1e-12 step in ρ moves K by ≤ 1e-12
    assert abs(float(relu.dual(q, q, q * (1 - 1e-12))) - q / 2) <= 1e-11


def test_monte_carlo_agrees_with_gelu_dual():
    act = get_activation("gelu")
    q1, q2, c = 1.3, 0.6, -0.5
    rng = np.random.default_rng(3)
    L = np.linalg.cholesky(np.array([[q1, c], [c, q2]]))
    u, v = L @ rng.standard_normal((2, 400_000))
    phi = np.asarray(act.phi(jnp.asarray(u))) * np.asarray(act.phi(jnp.asarray(v)))
    mean, se = phi.mean(), phi.std() / math.sqrt(phi.size)
    # 5 standard errors: a false failure has probability < 1e-6
    assert abs(mean - float(act.dual(q1, q2, c))) <= 5 * se


# ----------------------------------------------------------------------------------------------
# Numeric tier
# ----------------------------------------------------------------------------------------------


def test_tanh_quadrature_is_accurate_to_1e10():
    act = get_activation("tanh")
    assert act.tier == "quadrature" and act.dual_error <= 1e-10 and act.variance_limit >= 4.0
    pts = [(1.0, 2.0, 0.35), (0.7, 1.3, -0.4), (2.0, 2.0, 0.999999), (3.5, 0.4, 0.6), (4.0, 4.0, 1.0)]
    q1, q2, c = _cov(pts)
    K_ref = nested_quad(np.tanh, np.tanh, q1, q2, c)
    dK_ref = nested_quad(lambda x: 1 / np.cosh(x) ** 2, lambda x: 1 / np.cosh(x) ** 2, q1, q2, c)
    # nested adaptive quad reaches ~1e-13 for this analytic integrand; the claim is 1e-10
    np.testing.assert_allclose(np.asarray(act.dual(q1, q2, c)), K_ref, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(act.dual_derivative(q1, q2, c)), dK_ref, rtol=1e-10)


@pytest.mark.parametrize("expr,table", [("Abs(x)", "abs"), ("Max(x, 0)", "relu"),
                                        ("Max(x,0) + 0.2*Min(x,0)", "leaky_relu(0.2)")])
def test_kinked_quadrature_matches_closed_form(expr, table):
    num, exact = get_activation(expr, tier="quadrature"), get_activation(table)
    assert num.tier == "quadrature" and "kink" in num.method
    q1, q2, c = _cov(POINTS + [(1.0, 1.0, 1.0), (2.5, 2.5, -1.0), (30.0, 0.1, 0.9)])
    scale = _scale(exact, q1, q2)
    for mine, ref in ((num.dual(q1, q2, c), exact.dual(q1, q2, c)),
                      (num.dual_derivative(q1, q2, c), exact.dual_derivative(q1, q2, c))):
        # split at the kinks, every panel is analytic: the stated 1e-10 holds (brief asks ≤ 1e-8),
        # also at ρ = ±1 and ρ = 0.999999 where plain Gauss–Hermite would stall at ~1e-3
        np.testing.assert_array_less(np.abs(np.asarray(mine) - np.asarray(ref)), num.dual_error * scale)


def test_kinked_quadrature_with_a_shifted_kink():
    act = get_activation("Abs(x - 1) + 0.5*x")
    assert act.tier == "quadrature" and "x = 1" in act.method
    q1, q2, c = _cov(POINTS)
    ref = conditional_reference(lambda u: abs(u - 1) + 0.5 * u,
                                lambda m, s: CONDITIONAL["abs"](m - 1, s) + 0.5 * m, q1, q2, c, kink=1.0)
    # adaptive quad split at the kink and at its layer: ~1e-13; the quadrature claims 1e-10
    np.testing.assert_array_less(np.abs(np.asarray(act.dual(q1, q2, c)) - ref),
                                 act.dual_error * np.abs(ref) + 1e-13)


def test_quadrature_of_jumps_adds_the_delta_terms_to_the_derivative():
    exact = get_activation("x + 2*Heaviside(x) - 1")  # sign(x) + x: affine rule, closed form
    num = get_activation("x + 2*Heaviside(x) - 1", tier="quadrature")
    assert exact.tier == "closed-form" and "jumps" in num.method
    # small |ρ|: the jump of φ(v) sweeps the u range in a narrow ζ window (the hard case)
    q1, q2, c = _cov([p for p in POINTS if abs(p[2]) < 0.99] + [(1.0, 2.0, 1e-3), (0.5, 0.7, -1e-6)])
    scale = _scale(exact, q1, q2)
    for a, b in ((exact.dual, num.dual), (exact.dual_derivative, num.dual_derivative)):
        # K̇ = E[(1 + 2δ(u))(1 + 2δ(v))]: the δ–δ and δ–1 terms are the jump terms; both
        # sides claim ≤ 1e-10 of the Cauchy–Schwarz scale
        np.testing.assert_array_less(np.abs(np.asarray(a(q1, q2, c)) - np.asarray(b(q1, q2, c))),
                                     num.dual_error * scale)
    assert np.isinf(float(num.dual_derivative(1.3, 1.3, 1.3)))  # u = v a.s. at the jump
    shifted = get_activation("Heaviside(x - 0.5)*(1 + x**2)")
    eps = 1e-4
    fd = (np.asarray(shifted.dual(q1, q2, c + eps)) - np.asarray(shifted.dual(q1, q2, c - eps))) / (2 * eps)
    # Price: K̇ = ∂K/∂c; central differences carry O(eps²) + 1e-13/eps ≈ 1e-8 error
    np.testing.assert_allclose(np.asarray(shifted.dual_derivative(q1, q2, c)), fd, rtol=1e-6)


def test_kinked_quadrature_with_singular_piece_meets_its_stated_error():
    p = 1.5
    act = get_activation("Abs(x)**1.5")
    q1, q2, c = _cov(POINTS)
    rho = c / np.sqrt(q1 * q2)
    exact = np.array([float((a * b) ** (p / 2) * 2**p / mp.pi * mp.gamma((p + 1) / 2) ** 2
                            * mp.hyp2f1(-p / 2, -p / 2, 0.5, r * r)) for a, b, r in zip(q1, q2, rho)])
    scale = (q1 * q2) ** (p / 2) * 2**p / math.pi * math.gamma((p + 1) / 2) ** 2 * float(mp.hyp2f1(-p / 2, -p / 2, 0.5, 1))
    # E|u|^p|v|^p = (q1q2)^{p/2} 2^p Γ((p+1)/2)²/π ₂F₁(−p/2, −p/2; 1/2; ρ²); |x|^1.5 is not
    # analytic at the kink, so only the stated algebraic bound (~1e-7) is claimed
    np.testing.assert_array_less(np.abs(np.asarray(act.dual(q1, q2, c)) - exact), act.dual_error * scale)


@pytest.mark.parametrize("expr", ["2*erf(x/2)", "x^3 - 3*x", "1 + 2*erf(x/2)", "x + 0.1*sin(x)",
                                  "0.5*x + Max(x, 0) - 0.3"])
def test_exact_tiers_agree_with_quadrature_tier(expr):
    exact, num = get_activation(expr), get_activation(expr, tier="quadrature")
    assert exact.tier != "quadrature" and num.tier == "quadrature"
    q1, q2, c = _cov([p for p in POINTS if p[0] < 2.5])
    scale = _scale(exact, q1, q2)
    for a, b in ((exact.dual, num.dual), (exact.dual_derivative, num.dual_derivative)):
        # the quadrature tier claims 1e-10 relative to the Cauchy–Schwarz scale (Mehler: in its q
        # range); the exact tiers (rescaling, Isserlis, affine/Stein rule) claim ~1e-14
        np.testing.assert_array_less(np.abs(np.asarray(a(q1, q2, c)) - np.asarray(b(q1, q2, c))),
                                     num.dual_error * scale)


def test_chunked_quadrature_equals_unchunked():
    rule = PiecewiseGaussLegendre(kinks=(0.0,))
    small = PiecewiseGaussLegendre(kinks=(0.0,), budget=1)  # blocks of 1 element, 1 node per step
    q = jnp.linspace(0.4, 2.0, 3)
    K = jnp.sqrt(jnp.outer(q, q)) * jnp.array([[1, .3, -.2]] * 3)
    K = (K + K.T) / 2
    f = jnp.abs
    a = rule.dual(f, q[:, None], q[None, :], K)
    b = small.dual(f, q[:, None], q[None, :], K)
    assert a.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13)  # summation order only


# ----------------------------------------------------------------------------------------------
# Names, recognition, JAX behaviour, bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,name,tier", [
    ("ReLU", "relu", "closed-form"), ("Max(x, 0)", "relu", "closed-form"),
    ("max(0,x)", "relu", "closed-form"), ("x*Heaviside(x)", "relu", "closed-form"),
    ("identity", "linear", "closed-form"), ("Heaviside(x)", "step", "closed-form"),
    ("Piecewise((x, x > 0), (0, True))", "relu", "closed-form"),
    ("x*(1+erf(x/sqrt(2)))/2", "gelu", "closed-form"), ("Abs(x)", "abs", "closed-form"),
    ("Max(x,0)**2", "relu**2", "closed-form"), ("x**3", "x**3", "polynomial"),
    ("tanh", "tanh", "quadrature"), ("swish", "silu", "quadrature"),
    ("x*tanh(x)", "x*tanh(x)", "quadrature"), ("x + 2*Heaviside(x) - 1", "x + 2*Heaviside(x) - 1", "closed-form"),
])
def test_names_and_expressions_resolve_to_the_right_tier(text, name, tier):
    act = get_activation(text)
    assert (act.name, act.tier) == (name, tier)
    assert act.expr.free_symbols <= {X}
    assert (act.dual_expr is None) == (tier == "quadrature")


def test_every_known_name_resolves():
    names = known_activations()
    for required in ("relu", "leaky_relu", "step", "sign", "erf", "gelu", "linear", "sin", "cos",
                     "exp", "gaussian", "tanh", "softplus", "silu"):
        assert required in names
    for name in names:
        act = get_activation(name)
        assert act.tier in ("closed-form", "polynomial", "quadrature") and act.dual_error > 0
    assert get_activation("relu") is get_activation("relu")  # cached


@pytest.mark.parametrize("name", ["relu", "x**3", "tanh", "Max(x,0)+0.1*x"])
def test_dual_maps_jit_vmap_and_keep_float64(name):
    act = get_activation(name)
    q = jnp.linspace(0.5, 1.5, 3)
    Kin = jnp.sqrt(jnp.outer(q, q)) * 0.3 + jnp.diag(q) * 0.7
    eager = act.dual(q[:, None], q[None, :], Kin)
    jitted = jax.jit(act.dual)(q[:, None], q[None, :], Kin)
    vmapped = jax.vmap(lambda a, k: act.dual_derivative(a, q, k))(q, Kin)  # row by row
    assert eager.shape == (3, 3) and eager.dtype == jnp.float64 and vmapped.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-14)  # same ops
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(act.dual_derivative(q[:, None], q[None, :], Kin)),
                               rtol=1e-12)  # vmapped scans may reassociate sums
    x = jnp.linspace(-2.1, 2.3, 7)
    assert jax.jit(act.phi)(x).dtype == jnp.float64


@pytest.mark.parametrize("name", ["erf", "gelu", "tanh", "silu", "x*tanh(x)"])
def test_dphi_is_the_derivative_of_phi(name):
    act = get_activation(name)
    x = jnp.linspace(-3.1, 2.9, 11)
    auto = jax.vmap(jax.grad(lambda t: act.phi(t)))(x)
    np.testing.assert_allclose(np.asarray(act.dphi(x)), np.asarray(auto), rtol=1e-13, atol=1e-15)  # ulps


@pytest.mark.parametrize("text,needle", [
    ("rleu", "rleu"), ("x**", "x**"), ("x*y", "y"), ("foo(x)", "foo"), ("__import__('os')", "__import__"),
    ("x.func", "x.func"), ("", "non-empty"), ("3", "'3'"), ("Heaviside(sin(x))+x**2", "Heaviside(sin(x))+x**2"),
    ("x**0.5", "not real"), ("1/x", "1/x"), ("exp(x**2)", "exp(x**2)"),
    ("Abs(sin(x))", "kinks"),
])
def test_bad_activation_raises_input_error_naming_it(text, needle):
    with pytest.raises(InputError) as info:
        get_activation(text)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_bad_tier_raises_input_error():
    with pytest.raises(InputError, match="bogus"):
        get_activation("relu", tier="bogus")
    with pytest.raises(InputError, match="polynomial"):
        get_activation("tanh", tier="polynomial")


@pytest.mark.parametrize("name", ["relu", "relu2", "erf", "x**3", "softplus", "1 + 2*erf(x/2)"])
def test_autodiff_of_dual_in_c_is_dual_derivative_also_on_the_diagonal(name):
    act = get_activation(name)
    q1 = jnp.array([1.0, 0.7, 1.5, 2.0])
    q2 = jnp.array([2.0, 1.3, 1.5, 2.0])
    c = jnp.array([0.5, -0.4, 1.5, -2.0])  # generic, negative, ρ = +1, ρ = −1
    grad_c = jax.vmap(jax.grad(act.dual, argnums=2))(q1, q2, c)
    assert np.all(np.isfinite(np.asarray(grad_c)))
    # the c-tangent is K̇ itself (a custom JVP): equal up to the vmap's reassociation
    np.testing.assert_allclose(np.asarray(grad_c), np.asarray(act.dual_derivative(q1, q2, c)), rtol=1e-14)
    # the q-tangents are autodiff of the stable forms: compare with central differences
    h = 1e-6
    grad_q1 = float(jax.grad(act.dual, argnums=0)(1.0, 2.0, 0.5))
    fd = (float(act.dual(1.0 + h, 2.0, 0.5)) - float(act.dual(1.0 - h, 2.0, 0.5))) / (2 * h)
    assert abs(grad_q1 - fd) <= 1e-8 * max(1.0, abs(fd))  # O(h²) + 1e-16/h rounding


def test_get_activation_works_when_first_called_inside_jit():
    """Construction does NumPy/SymPy work only, so a spec first resolved inside a trace works."""

    @jax.jit
    def f(c):
        a = get_activation("0.5 + 0.3*x + 2*sin(x/3)")  # affine rule: builds its error bound
        b = get_activation("x**3 - 2*x**2")  # polynomial
        return a.dual(1.0, 2.0, c) + b.dual_derivative(1.0, 2.0, c)

    expected = (get_activation("0.5 + 0.3*x + 2*sin(x/3)").dual(1.0, 2.0, 0.3)
                + get_activation("x**3 - 2*x**2").dual_derivative(1.0, 2.0, 0.3))
    np.testing.assert_allclose(float(f(0.3)), float(expected), rtol=1e-14)  # same ops, jitted
