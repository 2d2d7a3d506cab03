"""Activations φ and their dual maps K = E[φ(u)φ(v)], K̇ = E[φ'(u)φ'(v)].

    >>> from dmft.activations import get_activation
    >>> relu = get_activation("relu")
    >>> relu.tier, relu.dual(1.0, 1.0, 1.0)          # ("closed-form", 0.5)

An activation is a known name (`known_activations()`) or a SymPy expression in `X` ("x*tanh(x)").
Tiers: "closed-form" (verified table), "polynomial" (exact Isserlis rule), "quadrature" (numeric).
"""

from ._activation import Activation
from ._registry import get_activation, known_activations, parse_activation
from ._symbols import C, Q1, Q2, X

__all__ = ["Activation", "C", "Q1", "Q2", "X", "get_activation", "known_activations", "parse_activation"]
