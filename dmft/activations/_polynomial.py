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
