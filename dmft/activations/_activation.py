"""The `Activation` type: an elementwise nonlinearity φ together with its dual maps."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import sympy as sp
from jaxtyping import Array, ArrayLike, Float

from .._errors import InputError

Tier = Literal["closed-form", "polynomial", "quadrature"]

_Elementwise = Callable[[Array], Array]
_DualMap = Callable[[Array, Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation φ and its dual maps for (u, v) ~ N(0, [[q1, c], [c, q2]]):

        dual(q1, q2, c)            = K(q1, q2, c) = E[φ(u) φ(v)]
        dual_derivative(q1, q2, c) = K̇(q1, q2, c) = E[φ'(u) φ'(v)] = ∂K/∂c   (Price's theorem)

    All four maps are JAX functions: elementwise, broadcasting, jit/vmap-safe, dtype-preserving.
    For (P, P) kernels pass the variances broadcast, ``dual(q[:, None], q[None, :], K)``: the
    quadrature tier does per-variance work on the shapes of `q1` and `q2` as given.

    Attributes:
        name: canonical name ("relu", "leaky_relu(0.01)", or the SymPy string of a user
            expression).
        expr: φ as a SymPy expression in `dmft.activations.X`.
        tier: how the dual maps are computed: "closed-form" (verified table), "polynomial"
            (exact Isserlis rule), or "quadrature" (numeric).
        dual_expr, dual_derivative_expr: K and K̇ as SymPy expressions in (Q1, Q2, C), or None for
            the quadrature tier.
        dual_error: stated bound on |error of K or K̇| / √(E[φ(u)²] E[φ(v)²]) (the relative
            error on the diagonal; the scale is that of the pair's Cauchy–Schwarz bound).
        method: a short description of how the dual maps are evaluated.
        variance_limit: `dual_error` holds for q1, q2 ≤ this: inf for the closed forms; for the
            polynomial tier the float64 range of its Isserlis sums (`float_range`; e.g. 13.4 for
            x**100, whose E[u^200] = 199!! q^100 overflows beyond); for smooth quadrature-tier
            activations the validated range of the Mehler series.
        limit_is_hard: what happens beyond `variance_limit`. True (polynomial tier): the
            float64 evaluation overflows, so `dual` and `dual_derivative` raise `InputError`
            (naming the limit) when called on concrete arrays with max(q1, q2) beyond it, and
            return NaN there when traced (under jit/vmap/grad, where they cannot raise).
            False (quadrature tier): the values stay finite but their error may exceed
            `dual_error` (`dmft.layer_kernels` warns).
    """

    name: str
    expr: sp.Expr
    tier: Tier
    dual_expr: sp.Expr | None
    dual_derivative_expr: sp.Expr | None
    dual_error: float
    method: str
    _phi: _Elementwise = dataclasses.field(repr=False, compare=False)
    _dphi: _Elementwise = dataclasses.field(repr=False, compare=False)
    _dual: _DualMap = dataclasses.field(repr=False, compare=False)
    _dual_derivative: _DualMap = dataclasses.field(repr=False, compare=False)
    variance_limit: float = math.inf
    limit_is_hard: bool = False

    def __post_init__(self):
        object.__setattr__(self, "_dual_price", _price_jvp(self._dual, self._dual_derivative))

    def __hash__(self) -> int:
        return hash((self.name, self.tier))

    def __repr__(self) -> str:
        return f"Activation(name={self.name!r}, tier={self.tier!r}, dual_error={self.dual_error:.1e})"

    def phi(self, x: ArrayLike) -> Array:
        """φ(x), elementwise."""
        return self._phi(_as_float(x))

    def dphi(self, x: ArrayLike) -> Array:
        """φ'(x), elementwise (almost everywhere: kinks get the one-sided/Heaviside value)."""
        return self._dphi(_as_float(x))

    def dual(self, q1: ArrayLike, q2: ArrayLike, c: ArrayLike) -> Float[Array, "..."]:
        """K = E[φ(u)φ(v)], (u, v) ~ N(0, [[q1, c], [c, q2]]), broadcast over q1, q2, c.

        Differentiable: ∂K/∂c is K̇ exactly (Price's theorem, a custom JVP, also on the diagonal
        where the stable forms have a √0); ∂K/∂q1, ∂K/∂q2 are autodiff of the stable forms.
        """
        q1, q2, c = map(_as_float, (q1, q2, c))
        return self._within_range("dual", q1, q2, self._dual_price(q1, q2, c))

    def dual_derivative(self, q1: ArrayLike, q2: ArrayLike, c: ArrayLike) -> Float[Array, "..."]:
        """K̇ = E[φ'(u)φ'(v)] = ∂K/∂c, broadcast over q1, q2, c (see `limit_is_hard` for
        variances beyond `variance_limit`)."""
        q1, q2, c = map(_as_float, (q1, q2, c))
        return self._within_range("dual_derivative", q1, q2, self._dual_derivative(q1, q2, c))

    def _within_range(self, what: str, q1, q2, value):
        """`value`, unless the limit is hard and a variance is beyond it: InputError (concrete
        inputs) or NaN at those elements (traced inputs)."""
        if not self.limit_is_hard or math.isinf(self.variance_limit):
            return value
        if not any(isinstance(q, jax.core.Tracer) for q in (q1, q2)):
            largest = max(float(jnp.max(q1, initial=-jnp.inf)), float(jnp.max(q2, initial=-jnp.inf)))
            if largest > self.variance_limit:
                raise InputError(
                    f"activation {self.name[:60]!r}: {what} at variance {largest:.4g}, beyond its "
                    f"variance_limit {self.variance_limit:.4g}, where its {self.tier} dual "
                    "overflows float64")
            return value
        beyond = jnp.maximum(q1, q2) > self.variance_limit
        return jnp.where(beyond, jnp.nan, value)


def _price_jvp(dual: _DualMap, dual_derivative: _DualMap) -> _DualMap:
    """`dual` with its c-tangent replaced by `dual_derivative` (∂K/∂c = K̇, Price's theorem)."""

    @jax.custom_jvp
    def priced(q1, q2, c):
        return dual(q1, q2, c)

    @priced.defjvp
    def _jvp(primals, tangents):
        q1, q2, c = primals
        dq1, dq2, dc = tangents
        out, dout = jax.jvp(lambda a, b: dual(a, b, c), (q1, q2), (dq1, dq2))
        return out, dout + dual_derivative(q1, q2, c) * dc

    return priced


def _as_float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))
