"""Tier "polynomial": exact dual maps of polynomial activations by Isserlis' theorem.

For (u, v) ~ N(0, [[q1, c], [c, q2]]), pairing the j copies of u and k copies of v with m cross
pairs (u–v) and the rest within each group gives

    E[u^j v^k] = Σ_m  C(j,m) C(k,m) m! (j−m−1)!! (k−m−1)!!  c^m q1^{(j−m)/2} q2^{(k−m)/2},

over m ≤ min(j, k) with j − m and k − m even. K = Σ a_j a_k E[u^j v^k] for φ = Σ a_j x^j, and
K̇ = ∂K/∂c (Price's theorem; the tests check it equals E[φ'(u)φ'(v)] from the same rule).
"""

from __future__ import annotations

import math

import sympy as sp

from ._symbols import C, Q1, Q2, X


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else math.prod(range(n, 0, -2))


def gaussian_moment(j: int, k: int) -> sp.Expr:
    """E[u^j v^k] for (u, v) ~ N(0, [[q1, c], [c, q2]]) (Isserlis)."""
    total = sp.Integer(0)
    for m in range(min(j, k) + 1):
        if (j - m) % 2 or (k - m) % 2:
            continue
        count = math.comb(j, m) * math.comb(k, m) * math.factorial(m)
        count *= _double_factorial(j - m - 1) * _double_factorial(k - m - 1)
        total += count * C**m * Q1 ** ((j - m) // 2) * Q2 ** ((k - m) // 2)
    return total


def polynomial_dual(expr: sp.Expr) -> tuple[sp.Expr, sp.Expr, float]:
    """(K, K̇, amplification) for a polynomial φ in x.

    `amplification` = (Σ_j |a_j| √E[z^{2j}])² / E[φ(z)²] at unit variance: how much cancellation
    between monomials magnifies rounding errors relative to the Cauchy–Schwarz scale.
    """
    poly = sp.Poly(expr, X)
    terms = [(j, a) for (j,), a in poly.terms()]
    K = sp.expand(sum(a * b * gaussian_moment(j, k) for j, a in terms for k, b in terms))
    Kdot = sp.expand(sp.diff(K, C))
    energy = float(K.subs({Q1: 1, Q2: 1, C: 1}))
    spread = sum(abs(float(a)) * math.sqrt(_double_factorial(2 * j - 1)) for j, a in terms) ** 2
    return K, Kdot, spread / energy if energy > 0 else math.inf


MAX_DEGREE = 150
"""Highest accepted degree: E[z^{2·150}] = 299!! ≈ 2.6e305 is the last even moment below the
float64 maximum (1.8e308), so beyond it the dual overflows already at unit variance."""
FLOAT_CEILING = 1e300
"""Terms of the dual maps are kept below this (a margin of 1.8e308/1e300 for their sums)."""


def float_range(expr: sp.Expr) -> float:
    """The largest variance q such that, for q1, q2 ≤ q and |c| ≤ √(q1 q2), every term of the
    Isserlis sums of K and of K̇ is below `FLOAT_CEILING` in magnitude: there the float64 dual maps
    are finite and keep their error bound; beyond it they overflow (inf − inf = nan).

    Each term of E[u^j v^k] is at most √((2j−1)!! (2k−1)!!) q^{(j+k)/2}, so the terms of K are
    bounded by (Σ_j |a_j| √((2j−1)!!) q^{j/2})², those of K̇ = E[φ'(u)φ'(v)] by the same sum over
    φ' (the `spread` of `polynomial_dual`, at variance q). Found by bisection in log q.
    """
    poly = sp.Poly(expr, X)
    terms = [(j, abs(float(a))) for (j,), a in poly.terms() if a != 0]
    derivative = [(j - 1, j * a) for j, a in terms if j >= 1]

    def log_bound(log_q: float) -> float:
        worst = -math.inf
        for group in (terms, derivative):
            logs = [math.log(a) + 0.5 * _log_double_factorial(2 * j - 1) + 0.5 * j * log_q
                    for j, a in group if a > 0]
            if logs:
                top = max(logs)
                worst = max(worst, 2 * (top + math.log(sum(math.exp(v - top) for v in logs))))
        return worst

    ceiling = math.log(FLOAT_CEILING)
    lo, hi = -1400.0, 1400.0  # log q; tiny(float64) ≈ e^-708, max ≈ e^709
    if log_bound(hi) <= ceiling:
        return math.inf
    if log_bound(lo) > ceiling:
        return 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_bound(mid) <= ceiling else (lo, mid)
    return math.exp(lo)


def _log_double_factorial(n: int) -> float:
    """log n!! for odd n ≥ −1 (and n = 0), without overflow."""
    if n <= 0:
        return 0.0
    k = (n + 1) // 2  # n!! = (2k)! / (2^k k!) for n = 2k − 1
    return math.lgamma(2 * k + 1) - k * math.log(2) - math.lgamma(k + 1)
