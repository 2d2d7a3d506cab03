"""The SymPy symbols shared by every activation and dual-kernel expression."""

import sympy as sp

X = sp.Symbol("x", real=True)
"""The activation's argument: activations are SymPy expressions in `X`."""

Q1 = sp.Symbol("q1", positive=True)
Q2 = sp.Symbol("q2", positive=True)
C = sp.Symbol("c", real=True)
"""Dual maps are expressions in (`Q1`, `Q2`, `C`): (u, v) ~ N(0, [[q1, c], [c, q2]])."""
