"""`get_activation`: names and SymPy expressions → `Activation`, choosing the best tier."""

from __future__ import annotations

import functools
import keyword
import re

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import sympy as sp
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

from .._errors import InputError
from ._activation import Activation
from ._quadrature import Mehler
from ._symbols import X
from ._table import TABLE

# Names of activations without a closed form, defined by their SymPy expression.
_NAMED_EXPRESSIONS: dict[str, sp.Expr] = {
    "tanh": sp.tanh(X),
    "softplus": sp.log(1 + sp.exp(X)),
    "silu": X / (1 + sp.exp(-X)),
    "sigmoid": 1 / (1 + sp.exp(-X)),
    "elu": sp.Piecewise((X, X > 0), (sp.exp(X) - 1, True)),
}

_ALIASES = {
    "identity": "linear", "id": "linear", "none": "linear",
    "heaviside": "step", "sgn": "sign", "absolute": "abs",
    "swish": "silu", "rbf": "gaussian", "leaky": "leaky_relu", "leakyrelu": "leaky_relu",
}

# The SymPy functions a user expression may use (and nothing else).
_ALLOWED = {
    "x": X, "pi": sp.pi, "E": sp.E, "e": sp.E,
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "tanh": sp.tanh, "sinh": sp.sinh, "cosh": sp.cosh,
    "atan": sp.atan, "arctan": sp.atan, "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt,
    "erf": sp.erf, "erfc": sp.erfc, "Abs": sp.Abs, "abs": sp.Abs, "Max": sp.Max, "max": sp.Max,
    "Min": sp.Min, "min": sp.Min, "Heaviside": sp.Heaviside, "sign": sp.sign,
    "Piecewise": sp.Piecewise, "sigmoid": lambda z: 1 / (1 + sp.exp(-z)),
    "relu": lambda z: sp.Max(z, 0), "softplus": lambda z: sp.log(1 + sp.exp(z)),
}
_PARSE_GLOBALS = {
    "Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational, "Symbol": sp.Symbol,
    "Function": sp.Function, "__builtins__": {},
}
_JAX_MODULES = [{"erf": jsp.erf, "erfc": jsp.erfc, "loggamma": jsp.gammaln}, "jax"]
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_+\-*/^().,<>=&| \t]+$")

QUADRATURE_TARGET = 1e-11  # relative Mehler tail accepted when validating the variance range


def known_activations() -> tuple[str, ...]:
    """The activation names `get_activation` accepts (besides SymPy expressions in x)."""
    return tuple(sorted(set(TABLE) | set(_NAMED_EXPRESSIONS)))


@functools.lru_cache(maxsize=256)
def get_activation(name_or_expr: str) -> Activation:
    """The `Activation` for a known name or a SymPy expression in x (e.g. "x*tanh(x)").

    Raises `InputError` naming the value when it is neither.
    """
    if not isinstance(name_or_expr, str) or not name_or_expr.strip():
        raise InputError(f"activation must be a non-empty string, got {name_or_expr!r}")
    text = name_or_expr.strip()
    key = _ALIASES.get(text.lower(), text.lower())
    if key in TABLE:
        return TABLE[key]()
    match = re.fullmatch(r"leaky_relu\(\s*([0-9.eE+\-]+)\s*\)", key)
    if match:
        return TABLE["leaky_relu"](float(match.group(1)))
    if key in _NAMED_EXPRESSIONS:
        return _from_expression(_NAMED_EXPRESSIONS[key], key)
    expr = parse_activation(text)
    return _from_expression(expr, str(expr))


def parse_activation(text: str) -> sp.Expr:
    """Parse a user expression in x with a restricted vocabulary; never a bare `eval`."""
    bad = (
        not _SAFE_TEXT.match(text) or "__" in text or re.search(r"\.\s*[A-Za-z_]", text)
        or any(keyword.iskeyword(w) for w in re.findall(r"[A-Za-z_]\w*", text))
    )
    if bad:
        raise InputError(f"activation: cannot parse {text!r} (only x, numbers, + - * / ** and "
                         f"functions like tanh, exp, erf, Abs, Max are allowed)")
    try:
        expr = parse_expr(text, local_dict=dict(_ALLOWED), global_dict=dict(_PARSE_GLOBALS),
                          transformations=standard_transformations + (convert_xor,), evaluate=True)
    except Exception as err:  # SymPy raises many types (SyntaxError, TokenError, TypeError, ...)
        raise InputError(f"activation: cannot parse {text!r} ({type(err).__name__})") from None
    if not isinstance(expr, sp.Expr):
        raise InputError(f"activation: {text!r} is not an expression in x")
    if isinstance(expr, sp.Symbol) and expr != X:
        raise InputError(f"unknown activation {text!r} (known: {', '.join(known_activations())}, "
                         f"or a SymPy expression in x)")
    unknown = sorted(str(s) for s in expr.free_symbols - {X})
    if unknown:
        raise InputError(f"activation {text!r}: unknown symbol(s) {', '.join(unknown)} (only x)")
    undefined = sorted({str(f.func) for f in expr.atoms(sp.core.function.AppliedUndef)})
    if undefined:
        raise InputError(f"unknown activation {text!r}: unknown function(s) {', '.join(undefined)} "
                         f"(known names: {', '.join(known_activations())})")
    if X not in expr.free_symbols:
        raise InputError(f"activation {text!r} does not depend on x")
    return expr


def lambdify_x(expr: sp.Expr):
    """φ as an elementwise JAX function (erf etc. mapped to jax.scipy; jit-safe)."""
    expr = expr.replace(sp.DiracDelta, lambda *args: sp.Integer(0))
    f = sp.lambdify([X], expr, modules=_JAX_MODULES, cse=True)

    def elementwise(x):
        return jnp.broadcast_to(f(x), jnp.shape(x)).astype(x.dtype)

    return elementwise


def _from_expression(expr: sp.Expr, name: str) -> Activation:
    phi = lambdify_x(expr)
    dphi = lambdify_x(sp.diff(expr, X))
    method = Mehler()
    q_max = method.validated_range((phi, dphi), QUADRATURE_TARGET)
    return Activation(
        name=name, expr=expr, tier="quadrature", dual_expr=None, dual_derivative_expr=None,
        dual_error=1e-10,
        method=f"Mehler series order {method.order} ({method.nodes}-node Gauss–Hermite "
               f"coefficients); error ≤ 1e-10 for q ≤ {q_max:.3g}",
        _phi=phi, _dphi=dphi,
        _dual=functools.partial(method.dual, phi), _dual_derivative=functools.partial(method.dual, dphi),
    )
