"""Tier "closed-form": the verified table of dual maps.

Each entry stores φ, K = E[φ(u)φ(v)] and K̇ = E[φ'(u)φ'(v)] = ∂K/∂c as SymPy expressions (for
printing and verification) and as hand-written, numerically stable JAX functions. Sources and
checks: shared/notes/symbolic.md §2 (Cho & Saul 2009; Williams 1997; Tsuchida et al. 2020), and
tests/test_activations.py (quadrature, 30-digit references, Price's theorem).

Stability: angles come from `_angles` (half-angle formulas on ρ = c/√(q1 q2), never
arccos(c/√(q1 q2)) or q1 q2 − c²), which snaps |ρ| within `SNAP_ULPS` ulps of 1 to ±1, so the maps
are exact on the diagonal c = q1 = q2 (e.g. relu: K = c/2 exactly, K̇ = 1/2 exactly) and stay exact
to round-off when c, q1, q2 were rounded separately (a matmul against a sum of squares).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax.numpy as jnp
import jax.scipy.special as jsp
import sympy as sp

from ._activation import Activation
from ._angles import SNAP_ULPS, angles as _angles
from ._symbols import C, Q1, Q2, X

# Every closed form is a handful of correctly rounded operations: a few ulps, relative to the
# Cauchy–Schwarz scale (tests hold each entry to this against 30-digit references/quadrature).
CLOSED_FORM_ERROR = 1e-14

_PI = math.pi
_S = sp.sqrt(Q1 * Q2 - C**2)
_THETA = sp.acos(C / sp.sqrt(Q1 * Q2))


def _psi(q1, q2, c):
    """π − θ, accurate also where it is small (ρ → −1)."""
    return _angles(q1, q2, c)[1]


def _gram(q1, q2, c):
    """q1 q2 − c² = (√(q1q2) − |c|)(√(q1q2) + |c|) ≥ 0: the difference is exact where the two
    are close (Sterbenz), so there is no cancellation, and it is 0 on the diagonal
    (√q·√q = q to an ulp, snapped) and within SNAP_ULPS ulps of it. √q1·√q2 rather than √(q1 q2),
    which overflows for q > 1e154. Two square roots per evaluation."""
    root = jnp.sqrt(q1) * jnp.sqrt(q2)  # not √(q1 q2): that overflows for q > 1e154
    gap = root - jnp.abs(c)
    # |ρ| within SNAP_ULPS ulps of 1 counts as ±1, as in `_angles` (separately rounded c, q1, q2)
    gap = jnp.where(gap > SNAP_ULPS * jnp.finfo(gap.dtype).eps * root, gap, 0.0)
    return gap * (root + jnp.abs(c))


def _theta(q1, q2, c):
    """The angle between u and v, θ = arccos(c/√(q1 q2)) ∈ [0, π] (see `_angles`)."""
    return _angles(q1, q2, c)[0]


def _s(q1, q2, c):
    """√max(q1 q2 − c², 0) = √(q1 q2) sin θ (see `_angles`)."""
    return _angles(q1, q2, c)[2]


def _entry(name, expr, K, Kdot, phi, dphi, dual, dual_derivative, method) -> Activation:
    return Activation(
        name=name, expr=expr, tier="closed-form", dual_expr=K, dual_derivative_expr=Kdot,
        dual_error=CLOSED_FORM_ERROR, method=method, _phi=phi, _dphi=dphi, _dual=dual,
        _dual_derivative=dual_derivative,
    )


def _heaviside(x):
    return jnp.where(x > 0, 1.0, 0.0).astype(x.dtype)


def _relu_dual(q1, q2, c):
    _, psi, s = _angles(q1, q2, c)
    return s / (2 * _PI) + c * (psi / (2 * _PI))


def relu() -> Activation:
    # K = (√(q1q2−c²) + c(π−θ))/(2π), written as s/2π + c·(ψ/2π) with ψ = π − θ: on the diagonal
    # ψ/2π = π/2π = 1/2 exactly, so K = c/2 and K̇ = 1/2 exactly; at ρ = −1, K = K̇ = 0 exactly.
    return _entry(
        "relu", sp.Max(X, 0),
        (_S + C * (sp.pi - _THETA)) / (2 * sp.pi), (sp.pi - _THETA) / (2 * sp.pi),
        lambda x: jnp.maximum(x, 0.0), _heaviside,
        _relu_dual, lambda q1, q2, c: _psi(q1, q2, c) / (2 * _PI),
        "arc-cosine kernel J1 (Cho & Saul 2009)",
    )


def leaky_relu(slope: float = 0.01) -> Activation:
    a = sp.nsimplify(slope, rational=True) if isinstance(slope, float) else sp.sympify(slope)
    af = float(a)
    d2, s2 = (1 - af) ** 2, (1 + af**2) / 2
    return _entry(
        f"leaky_relu({af:g})", sp.Max(X, 0) + a * sp.Min(X, 0),
        (1 - a) ** 2 / (2 * sp.pi) * _S + ((1 + a**2) / 2 - (1 - a) ** 2 * _THETA / (2 * sp.pi)) * C,
        (1 + a**2) / 2 - (1 - a) ** 2 * _THETA / (2 * sp.pi),
        lambda x: jnp.where(x > 0, x, af * x),
        lambda x: jnp.where(x > 0, 1.0, af).astype(x.dtype),
        lambda q1, q2, c: d2 / (2 * _PI) * _s(q1, q2, c) + (s2 - d2 * _theta(q1, q2, c) / (2 * _PI)) * c,
        lambda q1, q2, c: s2 - d2 * _theta(q1, q2, c) / (2 * _PI),
        "arc-cosine kernel of a·min(x,0) + max(x,0)",
    )


def step() -> Activation:
    # φ' = δ: K̇ = E[δ(u)δ(v)] = 1/(2π√(q1q2−c²)), infinite on the diagonal (as it should be).
    return _entry(
        "step", sp.Heaviside(X),
        (sp.pi - _THETA) / (2 * sp.pi), 1 / (2 * sp.pi * _S),
        _heaviside, jnp.zeros_like,
        lambda q1, q2, c: _psi(q1, q2, c) / (2 * _PI),  # (π − θ)/2π: exactly 1/2 and 0 at ρ = ±1
        lambda q1, q2, c: 1 / (2 * _PI * _s(q1, q2, c)),
        "arc-cosine kernel J0; φ' = δ, so K̇ = 1/(2π√(q1q2−c²))",
    )


def sign() -> Activation:
    return _entry(
        "sign", sp.sign(X),
        2 * sp.asin(C / sp.sqrt(Q1 * Q2)) / sp.pi, 2 / (sp.pi * _S),
        jnp.sign, jnp.zeros_like,
        lambda q1, q2, c: 1 - 2 * _theta(q1, q2, c) / _PI,
        lambda q1, q2, c: 2 / (_PI * _s(q1, q2, c)),
        "K = (2/π) arcsin ρ; φ' = 2δ, so K̇ = 2/(π√(q1q2−c²))",
    )


def abs_() -> Activation:
    return _entry(
        "abs", sp.Abs(X),
        2 * (_S + C * sp.asin(C / sp.sqrt(Q1 * Q2))) / sp.pi, 2 * sp.asin(C / sp.sqrt(Q1 * Q2)) / sp.pi,
        jnp.abs, jnp.sign,
        lambda q1, q2, c: 2 / _PI * _s(q1, q2, c) + c * (1 - 2 * _theta(q1, q2, c) / _PI),
        lambda q1, q2, c: 1 - 2 * _theta(q1, q2, c) / _PI,
        "K = (2/π)(√(q1q2−c²) + c arcsin ρ)",
    )


def erf() -> Activation:
    def det(q1, q2, c):
        # (1+2q1)(1+2q2) − 4c² = 1 + 2(q1+q2) + 4(q1q2 − c²), summed without the cancellation
        # of the product form (relative error ε·q at large variances otherwise)
        return 1 + 2 * (q1 + q2) + 4 * _gram(q1, q2, c)

    return _entry(
        "erf", sp.erf(X),
        2 * sp.asin(2 * C / sp.sqrt((1 + 2 * Q1) * (1 + 2 * Q2))) / sp.pi,
        4 / (sp.pi * sp.sqrt((1 + 2 * Q1) * (1 + 2 * Q2) - 4 * C**2)),
        jsp.erf, lambda x: 2 / math.sqrt(_PI) * jnp.exp(-x * x),
        lambda q1, q2, c: 2 / _PI * jnp.arctan2(2 * c, jnp.sqrt(det(q1, q2, c))),
        lambda q1, q2, c: 4 / _PI / jnp.sqrt(det(q1, q2, c)),
        "K = (2/π) arcsin(2c/√((1+2q1)(1+2q2))) (Williams 1997)",
    )


def gelu() -> Activation:
    # Exact GELU φ = xΦ(x) (Tsuchida et al. 2020; neural-tangents' Gelu). δ = √((1+q1)(1+q2) − c²).
    P = (1 + Q1) * (1 + Q2)
    d = sp.sqrt(P - C**2)
    K = C / 4 + ((C**2 + Q1 * Q2 * d**2) / (P * d) + C * sp.atan(C / d)) / (2 * sp.pi)
    Kdot = sp.Rational(1, 4) + sp.atan(C / d) / (2 * sp.pi) + C / (2 * sp.pi * d) * (
        1 / d**2 + (1 - Q1 * Q2) / P + 1
    )

    # (1+q1)(1+q2) − c² = 1 + q1 + q2 + (q1q2 − c²) and (1 − q1q2)/P + 1 = (2 + q1 + q2)/P:
    # the same values, without cancellation at large variances.
    def dual(q1, q2, c):
        p = (1 + q1) * (1 + q2)
        dd2 = 1 + q1 + q2 + _gram(q1, q2, c)
        dd = jnp.sqrt(dd2)
        return c / 4 + ((c * c + q1 * q2 * dd2) / (p * dd) + c * jnp.arctan2(c, dd)) / (2 * _PI)

    def dual_derivative(q1, q2, c):
        p = (1 + q1) * (1 + q2)
        dd2 = 1 + q1 + q2 + _gram(q1, q2, c)
        dd = jnp.sqrt(dd2)
        return 0.25 + jnp.arctan2(c, dd) / (2 * _PI) + c / (2 * _PI * dd) * (
            1 / dd2 + (2 + q1 + q2) / p
        )

    return _entry(
        "gelu", X * (1 + sp.erf(X / sp.sqrt(2))) / 2, K, Kdot,
        lambda x: x * jsp.ndtr(x), lambda x: jsp.ndtr(x) + x * jnp.exp(-x * x / 2) / math.sqrt(2 * _PI),
        dual, dual_derivative, "exact GELU xΦ(x) (Tsuchida et al. 2020)",
    )


def linear() -> Activation:
    return _entry(
        "linear", X, C, sp.Integer(1), lambda x: x, jnp.ones_like,
        lambda q1, q2, c: jnp.broadcast_to(c, jnp.broadcast_shapes(q1.shape, q2.shape, c.shape)),
        lambda q1, q2, c: jnp.ones(jnp.broadcast_shapes(q1.shape, q2.shape, c.shape), c.dtype),
        "K = c",
    )


def sin() -> Activation:
    return _entry(
        "sin", sp.sin(X), sp.exp(-(Q1 + Q2) / 2) * sp.sinh(C), sp.exp(-(Q1 + Q2) / 2) * sp.cosh(C),
        jnp.sin, jnp.cos,
        lambda q1, q2, c: jnp.exp(-(q1 + q2) / 2) * jnp.sinh(c),
        lambda q1, q2, c: jnp.exp(-(q1 + q2) / 2) * jnp.cosh(c),
        "characteristic function E[e^{i(au+bv)}]",
    )


def cos() -> Activation:
    return _entry(
        "cos", sp.cos(X), sp.exp(-(Q1 + Q2) / 2) * sp.cosh(C), sp.exp(-(Q1 + Q2) / 2) * sp.sinh(C),
        jnp.cos, lambda x: -jnp.sin(x),
        lambda q1, q2, c: jnp.exp(-(q1 + q2) / 2) * jnp.cosh(c),
        lambda q1, q2, c: jnp.exp(-(q1 + q2) / 2) * jnp.sinh(c),
        "characteristic function E[e^{i(au+bv)}]",
    )


def exp() -> Activation:
    K = sp.exp((Q1 + Q2) / 2 + C)
    return _entry(
        "exp", sp.exp(X), K, K, jnp.exp, jnp.exp,
        lambda q1, q2, c: jnp.exp((q1 + q2) / 2 + c), lambda q1, q2, c: jnp.exp((q1 + q2) / 2 + c),
        "moment generating function",
    )


def gaussian() -> Activation:
    det = (1 + Q1) * (1 + Q2) - C**2
    return _entry(
        "gaussian", sp.exp(-(X**2) / 2), 1 / sp.sqrt(det), C / det ** sp.Rational(3, 2),
        lambda x: jnp.exp(-x * x / 2), lambda x: -x * jnp.exp(-x * x / 2),
        lambda q1, q2, c: 1 / jnp.sqrt(1 + q1 + q2 + _gram(q1, q2, c)),  # det without cancellation
        lambda q1, q2, c: c / (1 + q1 + q2 + _gram(q1, q2, c)) ** 1.5,
        "Gaussian determinant rule det(I + AΣ)^{-1/2}",
    )


_THETA_SYMBOL = sp.Symbol("theta", nonnegative=True)


@functools.lru_cache(maxsize=8)
def _arc_cosine_J(n: int) -> sp.Expr:
    """Cho–Saul J_n(θ) = (−1)^n sin^{2n+1}θ ((1/sin θ) ∂_θ)^n [(π−θ)/sin θ]; free of 1/sin θ."""
    th = _THETA_SYMBOL
    f = (sp.pi - th) / sp.sin(th)
    for _ in range(n):
        f = sp.diff(f, th) / sp.sin(th)
    return sp.simplify((-1) ** n * sp.sin(th) ** (2 * n + 1) * f)


def rectified_monomial(n: int) -> Activation:
    """φ = max(x, 0)^n: K = (q1 q2)^{n/2} J_n(θ)/(2π), K̇ = n² K_{n−1} (φ' = n max(x,0)^{n−1})."""
    if n == 0:
        return step()
    if n == 1:
        return relu()

    def parts(m):
        J = _arc_cosine_J(m)
        K = (Q1 * Q2) ** sp.Rational(m, 2) * J.subs(_THETA_SYMBOL, _THETA) / (2 * sp.pi)
        f = sp.lambdify([_THETA_SYMBOL], J, modules="jax")
        return K, lambda q1, q2, c: (q1 * q2) ** (m / 2) * f(_theta(q1, q2, c)) / (2 * _PI)

    K, dual = parts(n)
    Km1, dual_m1 = parts(n - 1)
    return _entry(
        f"relu**{n}", sp.Max(X, 0) ** n, K, n**2 * Km1,
        lambda x: jnp.maximum(x, 0.0) ** n, lambda x: n * jnp.maximum(x, 0.0) ** (n - 1),
        dual, lambda q1, q2, c: n**2 * dual_m1(q1, q2, c),
        f"arc-cosine kernel J{n} (Cho & Saul 2009)",
    )


TABLE: dict[str, Callable[..., Activation]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "step": step,
    "sign": sign,
    "abs": abs_,
    "erf": erf,
    "gelu": gelu,
    "linear": linear,
    "sin": sin,
    "cos": cos,
    "exp": exp,
    "gaussian": gaussian,
}
"""Closed-form entries by canonical name; `leaky_relu` takes its negative slope (default 0.01)."""
