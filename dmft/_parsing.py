"""The one parser of user expressions: SymPy syntax over a whitelist, never a bare `eval`.

Used for activations (``get_activation("x*tanh(x)")``, the spec's ``activation``) and for hand
derivations (``dmft verify --expr``, derivation documents). Both go through `parse_user_expression`;
they differ only in the declared symbols and in two dialect switches (implicit multiplication
``2 c``, and decimals read as exact rationals).

What is refused, before SymPy sees the text (each a one-line `InputError` that names the problem
and echoes the input shortened to `ECHO_CHARACTERS`):

- more than `MAX_CHARACTERS` characters, or parentheses nested deeper than `MAX_DEPTH` (SymPy's
  parser and Python's compiler recurse on the expression tree: a 20,000-term sum ends in a
  RecursionError), unbalanced parentheses;
- any character outside letters, digits, ``_ + - * / ^ ( ) . , < > = & | !`` and blanks (so no
  quotes, brackets, colons, semicolons or backslashes), ``__`` anywhere, a ``.`` that is not part
  of a number (no attribute access), Python keywords other than True/False;
- a name followed by ``(`` that is neither a whitelisted function nor a declared symbol.

While parsing: numbers are built unevaluated and evaluated bottom-up, so that a power or factorial
of numbers with more than `MAX_DIGITS` digits (``9**9**9``) is refused before it is computed.

After parsing: the tree is at most `MAX_TREE_DEPTH` deep, and the result must be a SymPy
expression (not a relation, a boolean or a tuple), with no undefined function applications and no
symbols besides the declared ones.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import re
import sys
from collections.abc import Mapping

import sympy as sp
from sympy.parsing.sympy_parser import (
    convert_xor, implicit_multiplication, parse_expr, rationalize, standard_transformations,
)

from ._errors import InputError

MAX_CHARACTERS = 4000
"""Longest accepted expression (the longest hand derivation in derivations/ is ~200)."""
MAX_DEPTH = 48
"""Deepest accepted nesting of parentheses."""
MAX_TREE_DEPTH = 100
"""Deepest accepted parsed expression tree (what SymPy's recursive algorithms then walk)."""
MAX_DIGITS = 1000
"""Largest number (in decimal digits) a power or factorial of numbers may evaluate to."""
_RECURSION_LIMIT = 12_000  # while parsing: ~3 Python frames per level of an operator chain
ECHO_CHARACTERS = 80
"""Error messages quote at most this much of the input."""


def _sigmoid(z):
    return 1 / (1 + sp.exp(-z))


CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E, "e": sp.E}
"""Named constants (a declared symbol of the same name takes precedence)."""

class _TooLarge(Exception):
    """A number in the input would be too large to compute (see `MAX_DIGITS`)."""


def _bounded(function):
    """`function` (factorial, gamma) refusing number arguments whose value has > MAX_DIGITS
    digits, before computing it."""

    def call(z, *args, **kwargs):
        z = sp.sympify(z)
        if z.is_number and z.is_real and abs(float(z)) > 400:  # 400! has 869 digits
            raise _TooLarge(f"{function.__name__}({z}) has more than {MAX_DIGITS} digits")
        return function(z, *args, **kwargs)

    call.__name__ = function.__name__
    return call


# What `parse_expr` emits: number and symbol constructors, and with evaluate=False the
# operators (Add, Mul, Pow, relations, logic) as calls.
_PARSER_GLOBALS = {"Symbol": sp.Symbol, "Integer": sp.Integer, "Float": sp.Float,
                   "Rational": sp.Rational, "Function": sp.Function,
                   "factorial": _bounded(sp.factorial),
                   "Add": sp.Add, "Mul": sp.Mul, "Pow": sp.Pow,
                   "Lt": sp.Lt, "Le": sp.Le, "Gt": sp.Gt, "Ge": sp.Ge, "Eq": sp.Eq, "Ne": sp.Ne,
                   "And": sp.And, "Or": sp.Or, "Not": sp.Not,
                   "__builtins__": {}}
FUNCTIONS: dict[str, object] = {
    "sqrt": sp.sqrt, "exp": sp.exp, "log": sp.log, "ln": sp.log,
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan,
    "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "atan2": sp.atan2,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan,
    "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "asinh": sp.asinh, "acosh": sp.acosh, "atanh": sp.atanh,
    "erf": sp.erf, "erfc": sp.erfc, "gamma": _bounded(sp.gamma), "factorial": _bounded(sp.factorial),
    "Abs": sp.Abs, "abs": sp.Abs, "sign": sp.sign, "Max": sp.Max, "Min": sp.Min,
    "max": sp.Max, "min": sp.Min, "Heaviside": sp.Heaviside, "Piecewise": sp.Piecewise,
    "diff": sp.diff,
    "sigmoid": _sigmoid, "relu": lambda z: sp.Max(z, 0), "softplus": lambda z: sp.log(1 + sp.exp(z)),
}
"""The functions an expression may call (and nothing else)."""
_ALLOWED = re.compile(r"[A-Za-z0-9_+\-*/^().,<>=&|!\s]*")
_NOT_A_NUMBER_DOT = re.compile(r"(?<!\d)\.(?!\d)|\.\s*[A-Za-z_]")


@dataclasses.dataclass(frozen=True)
class Dialect:
    """Switches of the syntax: ``implicit`` multiplication (``2 c``, ``c (q1 + q2)``) and
    ``exact_decimals`` (``0.1`` is 1/10)."""

    implicit: bool = False
    exact_decimals: bool = False

    def transformations(self):
        extra = (rationalize,) if self.exact_decimals else ()
        extra += (convert_xor,)
        extra += (implicit_multiplication,) if self.implicit else ()
        return standard_transformations + extra


def shorten(text: str, limit: int = ECHO_CHARACTERS) -> str:
    """`text` itself if short, else its head with the total length: for error messages."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}… ({len(text)} characters)"


def known_functions() -> str:
    return ", ".join(sorted(FUNCTIONS))


def check_text(text: str, what: str, hint: str = "") -> None:
    """The refusals before parsing (see the module docstring); `what` names the input."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} is empty")
    shown = shorten(text)
    if len(text) > MAX_CHARACTERS:
        raise InputError(f"{what} is too long: {len(text)} characters, at most {MAX_CHARACTERS} "
                         f"({shown!r})")
    hint = f" ({hint})" if hint else ""
    if not _ALLOWED.fullmatch(text) or "__" in text or _NOT_A_NUMBER_DOT.search(text):
        bad = sorted(set(re.sub(r"[A-Za-z0-9_+\-*/^()<>=&|!,\s]", "", text)) - {"."})
        if "__" in text:
            bad.append("__")
        if _NOT_A_NUMBER_DOT.search(text):
            bad.append(".")
        raise InputError(f"cannot parse {what} {shown!r}: unsupported character(s) "
                         f"{' '.join(bad)}{hint}")
    depth = deepest = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
        if depth < 0:
            break
    if text.count("(") != text.count(")") or depth < 0:
        raise InputError(f"cannot parse {what} {shown!r}: unbalanced parentheses "
                         f"({text.count('(')} '(' vs {text.count(')')} ')')")
    if deepest > MAX_DEPTH:
        raise InputError(f"{what} nests parentheses {deepest} deep, at most {MAX_DEPTH} "
                         f"({shown!r})")
    words = re.findall(r"[A-Za-z_]\w*", text)
    bad_words = sorted({w for w in words if keyword.iskeyword(w) and w not in ("True", "False")})
    if bad_words:
        raise InputError(f"cannot parse {what} {shown!r}: Python keyword(s) "
                         f"{', '.join(bad_words)}{hint}")


def _evaluate(expr):
    """Evaluate an unevaluated SymPy tree bottom-up, refusing number powers and factorials whose
    value would have more than `MAX_DIGITS` digits (before computing them)."""
    if not isinstance(expr, sp.Basic):
        return expr
    if not expr.args or isinstance(expr, sp.Symbol | sp.Number):
        return expr
    args = [_evaluate(a) for a in expr.args]
    if isinstance(expr, sp.Pow):
        base, exponent = args
        if base.is_Rational and exponent.is_Rational and base not in (0, 1, -1):
            size = max(abs(math.log10(abs(int(base.p)))), abs(math.log10(int(base.q))))
            if abs(float(exponent)) * size > MAX_DIGITS:
                raise _TooLarge(f"the number {shorten(str(base), 20)}**{shorten(str(exponent), 20)} "
                                f"has more than {MAX_DIGITS} digits")
    if expr.func in (sp.factorial, sp.gamma):
        return _bounded(expr.func)(*args)
    return expr.func(*args)


def _tree_depth(expr: sp.Basic) -> int:
    """The depth of a SymPy tree, without recursion."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_TREE_DEPTH:
            stack.extend((arg, depth + 1) for arg in node.args)
    return deepest


def parse_user_expression(text: str, symbols: Mapping[str, sp.Symbol], *, what: str,
                          dialect: Dialect = Dialect(), hint: str = "") -> sp.Expr:
    """Parse `text` over the declared `symbols`, `FUNCTIONS` and `CONSTANTS`.

    Raises `InputError` (one line, naming `what` and the shortened input) for everything the
    module docstring lists. `hint` is appended to syntax errors (what the syntax allows).
    """
    check_text(text, what, hint)
    shown = shorten(text)
    for name in re.findall(r"([A-Za-z_]\w*)\s*\(", text):
        if name not in FUNCTIONS and name not in symbols:
            raise InputError(f"{what} {shown!r} uses unknown function {name!r} "
                             f"(known: {known_functions()})")
    local = dict(CONSTANTS)
    local.update(FUNCTIONS)
    local.update(symbols)
    limit = sys.getrecursionlimit()
    try:
        # Unevaluated first, then evaluated bottom-up by `_evaluate`, which refuses number
        # powers and factorials too large to compute ("9**9**9" would run for minutes). SymPy's
        # evaluate=False transformer and `_evaluate` recurse in Python over the operator chain
        # (~3 frames a level): `MAX_CHARACTERS` bounds that to ~2000 levels, so the limit is
        # raised for the duration (pure-Python frames, off the C stack since Python 3.11).
        sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
        expr = parse_expr(text, local_dict=local, global_dict=dict(_PARSER_GLOBALS),
                          transformations=dialect.transformations(), evaluate=False)
        if isinstance(expr, sp.Basic) and _tree_depth(expr) > MAX_TREE_DEPTH:
            # e.g. a power tower x**x**…**x (sums and products are flat): evaluating it, and
            # later SymPy work on it (kinks, lambdify), recurses and crawls
            raise InputError(f"cannot parse {what} {shown!r}: its expression tree is more than "
                             f"{MAX_TREE_DEPTH} levels deep")
        expr = _evaluate(expr)
    except InputError:
        raise
    except _TooLarge as error:
        raise InputError(f"{what} {shown!r}: {error}") from None
    except RecursionError:
        raise InputError(f"cannot parse {what} {shown!r}: it nests too deeply (a chain of powers "
                         f"or signs); at most {MAX_DEPTH} levels are meant to be used") from None
    except Exception as error:  # SyntaxError, TokenError, TypeError, ...
        reason = shorten(" ".join(str(error).split()), 120) or type(error).__name__
        raise InputError(f"cannot parse {what} {shown!r}: {reason}{' (' + hint + ')' if hint else ''}"
                         ) from None
    finally:
        sys.setrecursionlimit(limit)
    if not isinstance(expr, sp.Expr):
        raise InputError(f"cannot parse {what} {shown!r}: not a scalar expression")
    undefined = sorted({str(f.func) for f in expr.atoms(sp.core.function.AppliedUndef)})
    if undefined:
        raise InputError(f"{what} {shown!r} uses unknown function(s) {', '.join(undefined)} "
                         f"(known: {known_functions()})")
    declared = set(symbols)
    undeclared = sorted({s.name for s in expr.free_symbols if s.name not in declared})
    if undeclared:
        raise InputError(f"{what} {shown!r} uses undeclared symbol(s) {', '.join(undeclared)}; "
                         f"declared: {', '.join(symbols)}")
    return expr
