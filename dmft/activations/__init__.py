"""Activations φ and their dual maps K = E[φ(u)φ(v)], K̇ = E[φ'(u)φ'(v)] = ∂K/∂c,
for (u, v) ~ N(0, [[q1, c], [c, q2]]).

    >>> from dmft.activations import get_activation
    >>> relu = get_activation("relu")
    >>> relu.tier, float(relu.dual(1.0, 1.0, 1.0))          # ('closed-form', 0.5)

An activation is a known name (`known_activations()`, aliases like "ReLU", "identity", "swish",
"leaky_relu(0.2)", "relu**2") or a SymPy expression in `X` ("x*tanh(x)", "Max(x, 0)").
`get_activation` picks the most exact tier that applies (`Activation.tier`):

- "closed-form": the verified table (relu, leaky_relu, step, sign, abs, erf, gelu, linear, sin,
  cos, exp, gaussian, relu**n), its rescalings α ψ(β x), and affine combinations γ + λx + αψ(βx)
  (Stein's lemma). Numerically stable, exact on the diagonal (also for c a few ulps off
  √(q1 q2): `_angles` snaps |ρ| within 64 ulps of 1); `dual_expr` holds the SymPy form.
- "polynomial": polynomials in x (degree ≤ 150), exactly, by Isserlis' theorem; `variance_limit`
  is their float64 range (e.g. 13.4 for x**100): beyond it `dual` raises InputError (NaN when
  traced under jit).
- "quadrature": everything else. Smooth φ: a Mehler (Hermite) series with a validated truncation
  bound; φ with kinks or jumps: a 2-D Gauss–Legendre rule split at the kinks, plus the δ terms
  of jumps in K̇. `dual_error` states the error, `variance_limit` the range where it holds.
"""

from ._activation import Activation
from ._registry import get_activation, known_activations, parse_activation
from ._symbols import C, Q1, Q2, X

__all__ = ["Activation", "C", "Q1", "Q2", "X", "get_activation", "known_activations", "parse_activation"]
