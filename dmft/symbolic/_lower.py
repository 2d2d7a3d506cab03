"""Lowering derived equations to JAX.

Two lowerings, both from the objects `derive` returns (one source of truth):

- `lower_recursion`: the per-layer SymPy maps of the NNGP/NTK recursions, compiled with
  `sympy.lambdify` and an explicit JAX mapping (``erf`` → `jax.scipy.special.erf`), applied
  layer by layer. Variances use the diagonal specialisation K(q, q, q) simplified symbolically,
  which avoids the √ε loss of the arccos form at c = √(q1 q2).
- `lower_expression`: an IR expression with data indices (μ, α) and time indices (t, s) on a
  time grid: index products become `einsum`, Σ_α a sum over an axis, and ∫_0^t ds a contraction
  with a causal quadrature matrix W[t, s] (`CausalQuadrature`); the discrete rules' step sum
  η0 Σ_{s<k} a contraction with η0 times the strictly lower-triangular mask M[k, s] = [s < k]
  on the step grid (``times`` then only fixes the number of steps).
- `lower_matrix_form`: the matrix closed forms (lazy GD) with JAX linear algebra.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax.numpy as jnp
import sympy as sp
from jaxtyping import Array, Float

from .._errors import InputError
from .._sympy_jax import JAX_FUNCTIONS, lambdify_jax  # noqa: F401  (re-exported)
from . import _ir as ir
from ._derive import Derivation, c, kx, q1, q2, theta_prev


# ----------------------------------------------------------------------------------------------
# (a) Layer recursions.


@dataclasses.dataclass(frozen=True, eq=False)
class LoweredRecursion:
    """``recursion(x1, x2)`` → (nngp, ntk): tuples over layers l = 1..L+1 of (P1, P2) arrays."""

    derivation: Derivation
    _maps: tuple = dataclasses.field(repr=False)

    def __call__(self, x1: Float[Array, "P1 D"], x2: Float[Array, "P2 D"] | None = None):
        """Kernels between x1 and x2; with x2 omitted the diagonal uses the diagonal maps."""
        same = x2 is None
        x1 = jnp.asarray(x1)
        x2 = x1 if same else jnp.asarray(x2)
        d = x1.shape[-1]
        first, rest = self._maps[0], self._maps[1:]
        nngp_1, diag_1 = first
        cross = nngp_1(x1 @ x2.T / d)
        var1 = diag_1(jnp.sum(x1 * x1, axis=-1) / d)
        var2 = diag_1(jnp.sum(x2 * x2, axis=-1) / d)
        eye = jnp.eye(x1.shape[0], dtype=bool) if same else None
        nngp, ntk = [cross], [cross]
        theta, theta_diag = cross, var1
        for nngp_map, ntk_map, diag_map, ntk_diag_map in rest:
            a, b = var1[:, None], var2[None, :]
            theta = ntk_map(a, b, cross, theta)
            cross = nngp_map(a, b, cross)
            theta_diag = ntk_diag_map(var1, theta_diag)
            var1, var2 = diag_map(var1), diag_map(var2)
            if same:  # x = x': K(q, q, q) simplified, free of the √ε loss of acos near 1
                cross = jnp.where(eye, var1[:, None], cross)
                theta = jnp.where(eye, theta_diag[:, None], theta)
            nngp.append(cross)
            ntk.append(theta)
        return tuple(nngp), tuple(ntk)


def _guard_domain(expr: sp.Expr) -> sp.Expr:
    """Clip acos/asin arguments to [-1, 1] and square-root arguments to >= 0.

    Exact identities on the covariance domain; in float64 they keep c = √(q1 q2) (x = x')
    from producing NaN through a rounding error of one ulp.
    """
    expr = expr.replace(sp.acos, lambda a: sp.acos(sp.Min(sp.Max(a, -1), 1)))
    expr = expr.replace(sp.asin, lambda a: sp.asin(sp.Min(sp.Max(a, -1), 1)))
    return expr.replace(
        lambda e: e.is_Pow and e.exp == sp.Rational(1, 2) and not e.base.is_positive,
        lambda e: sp.sqrt(sp.Max(e.base, 0)),
    )


def _diagonal(expr: sp.Expr) -> sp.Expr:
    q = sp.Symbol("q", positive=True)
    return sp.simplify(expr.xreplace({q1: q, q2: q, c: q})).xreplace({q: q1})


def lower_recursion(derivation: Derivation) -> LoweredRecursion:
    """Compile the derived NNGP/NTK layer maps (with the spec's parameters) to JAX."""
    from ._derive import _activation

    maps = []
    nngp, ntk = derivation.nngp_recursion, derivation.ntk_recursion
    first = nngp[0].numeric()
    maps.append((lambdify_jax([kx], first), lambdify_jax([kx], first)))
    functions = None
    if derivation.dual is None:
        # Numeric tier: the symbolic K_phi / Kdot_phi leaves call the activation's JAX duals.
        act = _activation(derivation.architecture.activation)
        functions = {"K_phi": act.dual, "Kdot_phi": act.dual_derivative}
    for s_map, t_map in zip(nngp[1:], ntk[1:]):
        s_expr, t_expr = _guard_domain(s_map.numeric()), _guard_domain(t_map.numeric())
        s_fn = lambdify_jax([q1, q2, c], s_expr, functions)
        t_fn = lambdify_jax([q1, q2, c, theta_prev], t_expr, functions)
        diag_fn = lambdify_jax([q1], _diagonal(s_map.numeric()), functions)
        ntk_diag = _diagonal(t_map.numeric())
        if ntk_diag.has(sp.zoo, sp.oo, sp.nan):  # e.g. step: K̇ = E[δ(u)δ(v)] diverges at x = x'
            ntk_diag_fn = lambda q, th, t_fn=t_fn: t_fn(q, q, q, th)  # noqa: E731
        else:
            ntk_diag_fn = lambdify_jax([q1, theta_prev], ntk_diag, functions)
        maps.append((_broadcasting(s_fn), _broadcasting(t_fn), _broadcasting(diag_fn),
                     _broadcasting(ntk_diag_fn)))
    return LoweredRecursion(derivation, tuple(maps))


def _broadcasting(fn):
    def wrapped(*args):
        args = jnp.broadcast_arrays(*args)
        return jnp.broadcast_to(fn(*args), args[0].shape)

    return wrapped


# ----------------------------------------------------------------------------------------------
# (b) IR expressions on a time grid.


@dataclasses.dataclass(frozen=True)
class CausalQuadrature:
    """How ∫_0^t ds F(s) becomes Σ_j W[i, j] F(s_j) on a time grid t_0 < … < t_{T-1}.

    - ``"left"``: left Riemann sum, W[i, j] = t_{j+1} − t_j for j < i (strictly causal: the
      value at t_i uses only earlier times, so Picard/forward marching is explicit);
    - ``"trapezoid"``: W includes the diagonal (second order, implicit in F(t_i)).
    """

    rule: Literal["left", "trapezoid"] = "left"

    def __post_init__(self):
        if self.rule not in ("left", "trapezoid"):
            raise InputError(f"quadrature rule must be 'left' or 'trapezoid', got {self.rule!r}")

    def weights(self, times: Float[Array, " T"]) -> Float[Array, "T T"]:
        times = jnp.asarray(times)
        steps = jnp.diff(times)
        count = times.shape[0]
        i = jnp.arange(count)[:, None]
        j = jnp.arange(count)[None, :]
        if self.rule == "left":
            w = jnp.concatenate([steps, jnp.zeros(1, times.dtype)])
            return jnp.where(j < i, w[None, :], 0.0)
        left = jnp.concatenate([jnp.zeros(1, times.dtype), steps])  # t_j − t_{j−1}
        right = jnp.concatenate([steps, jnp.zeros(1, times.dtype)])  # t_{j+1} − t_j
        interior = jnp.where(j < i, 0.5 * (left[None, :] + right[None, :]), 0.0)
        interior = jnp.where((j == 0) & (i > 0), 0.5 * right[None, :], interior)
        return jnp.where((j == i) & (i > 0), 0.5 * left[None, :], interior)


@dataclasses.dataclass(frozen=True, eq=False)
class LoweredExpression:
    """A compiled IR expression: ``fn(env)`` → array with axes ``axes`` (index names).

    ``env`` maps `leaf_key` names to arrays: fields ``"h2"``, ``"g2"``, ``"u1"`` (P, T) [(P,) when
    static, () without a data index], kernels and responses ``"Phi1"``, ``"G2"``, ``"A1"``,
    ``"B1"`` (P, T, P, T), ``"Kx"`` (P, P), and the error signal ``"Delta"`` (P, T).
    """

    node: ir.Node
    axes: tuple[str, ...]
    fn: Callable[[Mapping[Any, Array]], Array]

    def __call__(self, env: Mapping[Any, Array]) -> Array:
        return self.fn(env)


def leaf_key(node: ir.Node) -> str:
    """The `env` key of a leaf: ``"h2"``, ``"Phi1"``, ``"A1"``, ``"Kx"``, ``"Delta"``."""
    if isinstance(node, ir.ErrorSignal):
        return "Delta"
    if isinstance(node, ir.BatchWeight):
        return "omega"
    if isinstance(node, ir.Kernel) and node.name == "Kx":
        return "Kx"
    layer = "" if node.layer is None else str(node.layer)
    return f"{node.name}{layer}"


def _free_axes(node: ir.Node) -> tuple[str, ...]:
    """The free indices of ``node`` in first-appearance order (defines the output layout)."""
    return tuple(dict.fromkeys(_raw_axes(node)))


def _raw_axes(node: ir.Node) -> tuple[str, ...]:
    """Like `_free_axes`, but a leaf's repeated index (K(t,t)) is kept: its array has both axes."""
    if isinstance(node, ir.Scalar):
        return ()
    if isinstance(node, (ir.Field, ir.ErrorSignal)):  # an output index sits after the point's
        return tuple(a for a in (node.data, node.output, node.time) if a is not None)
    if isinstance(node, (ir.Kernel, ir.Response)):
        (d0, d1), (t0, t1) = node.data, node.time
        return tuple(a for a in (d0, t0, d1, t1) if a is not None)
    if isinstance(node, ir.BatchWeight):
        return tuple(a for a in (node.data, node.time) if a is not None)
    if isinstance(node, ir.Act):
        return _free_axes(node.arg)
    if isinstance(node, (ir.Add, ir.Mul)):
        out: list[str] = []
        for child in node.children():
            out += [a for a in _free_axes(child) if a not in out]
        return tuple(out)
    if isinstance(node, ir.DataSum):
        return tuple(a for a in _free_axes(node.body) if a != node.index)
    if isinstance(node, (ir.TimeIntegral, ir.StepSum)):
        inner = [a for a in _free_axes(node.body) if a != node.var]
        return tuple(inner if node.upper in inner else [node.upper] + inner)
    raise InputError(f"cannot lower {type(node).__name__} nodes ({node.text()})")


def lower_expression(
    node: ir.Node,
    *,
    times: Float[Array, " T"],
    scalars: Mapping[sp.Symbol, float],
    activation=None,
    quadrature: CausalQuadrature = CausalQuadrature(),
) -> LoweredExpression:
    """Compile an IR expression to a pure JAX function of its leaves (jit-safe).

    Args:
        node: e.g. ``derive(arch).dmft.fields[2].rhs``.
        times: the time grid (T,).
        scalars: values of the scalar leaves (``dmft.symbolic.gamma0``, ``num_train`` P, …).
        activation: a `dmft.activations.Activation` for φ and φ' (needed if `Act` nodes occur).
        quadrature: the causal quadrature of ∫_0^t ds.
    """
    weights = quadrature.weights(times)
    scalar_values = {k: sp.Float(v) for k, v in scalars.items()}

    def ev(n: ir.Node, env) -> tuple[Array, tuple[str, ...]]:
        if isinstance(n, ir.Scalar):
            value = n.value.xreplace(scalar_values)
            if value.free_symbols:
                raise InputError(f"no value for scalar(s) {sorted(map(str, value.free_symbols))}")
            return jnp.asarray(float(value)), ()
        if isinstance(n, (ir.Field, ir.Kernel, ir.Response, ir.ErrorSignal, ir.BatchWeight)):
            key = leaf_key(n)
            if key not in env:
                raise InputError(f"no array given for {n.text()} (key {key!r})")
            array, axes = jnp.asarray(env[key]), _raw_axes(n)
            if array.ndim != len(axes):
                raise InputError(f"array for {n.text()} has {array.ndim} axes, expected "
                                 f"{len(axes)} ({', '.join(axes)})")
            if len(set(axes)) < len(axes):  # X(t,t): the equal-time diagonal
                return _einsum([(array, axes)], _free_axes(n)), _free_axes(n)
            return array, axes
        if isinstance(n, ir.Act):
            if activation is None:
                raise InputError("lowering φ needs an activation")
            array, axes = ev(n.arg, env)
            if n.order == 0:
                return activation.phi(array), axes
            if n.order == 1:
                return activation.dphi(array), axes
            raise InputError(f"φ derivatives of order {n.order} are not lowered")
        if isinstance(n, ir.Mul):
            parts = [ev(f, env) for f in n.factors]
            return _einsum(parts, _free_axes(n)), _free_axes(n)
        if isinstance(n, ir.Add):
            out_axes = _free_axes(n)
            parts = [ev(t, env) for t in n.terms]
            sizes = {}
            for array, axes in parts:
                sizes.update(zip(axes, array.shape))
            total = 0.0
            for array, axes in parts:
                total = total + _broadcast_to(array, axes, out_axes, sizes)
            return total, out_axes
        if isinstance(n, ir.DataSum):
            array, axes = ev(n.body, env)
            if n.index not in axes:
                raise InputError(f"Σ_{n.index} of an expression without index {n.index}")
            return jnp.sum(array, axis=axes.index(n.index)), tuple(a for a in axes if a != n.index)
        if isinstance(n, ir.TimeIntegral):
            array, axes = ev(n.body, env)
            parts = [(array, axes), (weights, (n.upper, n.var))]
            return _einsum(parts, _free_axes(n)), _free_axes(n)
        if isinstance(n, ir.StepSum):
            array, axes = ev(n.body, env)
            step = ev(ir.Scalar(n.step), env)[0]
            mask = _step_mask(len(times), n.inclusive, jnp.result_type(array, step))
            parts = [(array, axes), (step * mask, (n.upper, n.var))]
            return _einsum(parts, _free_axes(n)), _free_axes(n)
        raise InputError(f"cannot lower {type(n).__name__} nodes ({n.text()})")

    axes = _free_axes(node)
    return LoweredExpression(node, axes, lambda env: ev(node, env)[0])


def _step_mask(count: int, inclusive: bool, dtype) -> Float[Array, "T T"]:
    """M[k, s] = 1 for s < k (s <= k when ``inclusive``): the steps a `StepSum` runs over."""
    return jnp.tri(count, k=0 if inclusive else -1, dtype=dtype)


def lower_matrix_form(node: ir.MatrixForm, env: Mapping[str, Array],
                      scalars: Mapping[sp.Symbol, float]) -> Array:
    """Evaluate a `MatrixForm` (a SymPy matrix expression) with JAX.

    ``env`` maps the `MatrixSymbol` names (``"K"`` (P, P), ``"y"`` (P, 1), ``"K_starX"``
    (Q, P)) to arrays and ``scalars`` gives η0, P and the step k (an integer). Identity →
    ``eye``, products and sums as written, ``X^k`` → ``matrix_power``, ``X^{-1} Y`` → a solve.
    Returns the column of the expression's values (its rows are the index μ or ⋆).
    """
    return _matrix(node.expr, env, {k: v for k, v in scalars.items()})


def _matrix(expr, env, scalars):
    if isinstance(expr, sp.MatrixSymbol):
        return jnp.asarray(env[expr.name])
    if isinstance(expr, sp.Identity):
        return jnp.eye(int(expr.shape[0].xreplace(scalars)))
    if isinstance(expr, sp.MatAdd):
        return sum(_matrix(a, env, scalars) for a in expr.args)
    if isinstance(expr, sp.MatMul):
        out = None
        args = list(expr.args)
        while args:
            a = args.pop()
            if isinstance(a, sp.Inverse) or (isinstance(a, sp.MatPow) and a.exp == -1):
                out = jnp.linalg.solve(_matrix(a.args[0], env, scalars), out)
                continue
            value = _matrix(a, env, scalars) if isinstance(a, sp.MatrixExpr) else \
                jnp.asarray(float(a.xreplace(scalars)))
            out = value if out is None else (value @ out if value.ndim == 2 else value * out)
        return out
    if isinstance(expr, sp.MatPow):
        power = int(expr.exp.xreplace(scalars))
        return jnp.linalg.matrix_power(_matrix(expr.base, env, scalars), power)
    raise InputError(f"cannot lower the matrix expression {expr}")


def _einsum(parts, out_axes) -> Array:
    letters = {}
    for _, axes in parts:
        for a in axes:
            letters.setdefault(a, string.ascii_letters[len(letters)])
    spec = ",".join("".join(letters[a] for a in axes) for _, axes in parts)
    spec += "->" + "".join(letters[a] for a in out_axes)
    return jnp.einsum(spec, *(array for array, _ in parts))


def _broadcast_to(array, axes, out_axes, sizes) -> Array:
    order = [axes.index(a) for a in out_axes if a in axes]
    array = jnp.transpose(array, order) if order else array
    shape = [sizes[a] if a in axes else 1 for a in out_axes]
    return jnp.broadcast_to(jnp.reshape(array, shape), [sizes[a] for a in out_axes])


def field_velocity(equation: ir.Equation, var: str = "t") -> ir.Node:
    """∂_t of a field equation's right-hand side (exact when its integrand has no t; L = 1)."""
    return ir.time_derivative(equation.rhs, var)


__all__ = [
    "CausalQuadrature", "JAX_FUNCTIONS", "LoweredExpression", "LoweredRecursion",
    "field_velocity", "lambdify_jax", "leaf_key", "lower_expression", "lower_matrix_form",
    "lower_recursion",
]
