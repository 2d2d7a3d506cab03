"""Check a hand-derived expression against a derived one: proof, 30-digit numerics, counterexample.

Pipeline (notes/symbolic.md §4):
1. parse the user's string with `sympy.parsing.sympy_parser.parse_expr` over a whitelist of
   functions and declared symbols (never Python `eval` of the raw string; unknown names and
   undeclared symbols are one-line errors);
2. evaluate both sides with mpmath at 80 digits at random points of the domain plus its edges
   (c = 0, |c| = (1 − 1e-12)√(q1 q2), q1 = q2); the worst relative error above 1e-30 is a counterexample;
3. otherwise try a proof: canonicalize (rewrite acos → asin, trig/hyperbolic → exp) and
   ``simplify(a − b) == 0``, in a subprocess under a wall-clock limit.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Literal

import mpmath
import numpy as np
import sympy as sp

from .._errors import InputError
from .._parsing import MAX_CHARACTERS, FUNCTIONS, Dialect, parse_user_expression, shorten

_FUNCTIONS = FUNCTIONS  # the whitelist of the one parser (also used to fix LaTeX input)
_DIALECT = Dialect(implicit=True, exact_decimals=True)  # `2 c`; 0.1 is 1/10, as written
_SYNTAX_HINT = "use SymPy syntax: + - * / ** ^ ( ) and functions"

EQUAL_DIGITS = 30
"""Digits to which two expressions must agree at every sampled point to be called equal."""
_WORK_DPS = 80  # working precision: well beyond EQUAL_DIGITS so rounding never decides


def parse_expression(text: str, symbols: Mapping[str, sp.Symbol], what: str = "--expr") -> sp.Expr:
    """Parse a SymPy-syntax string over the declared ``symbols`` and a whitelist of functions
    (`dmft._parsing.parse_user_expression`, the parser activations use too).

    ``^`` means power; implicit multiplication (``2 c``) is allowed; decimals are exact
    rationals (``0.1`` is 1/10). Raises `InputError` with one line for syntax errors, unknown
    functions, undeclared symbols (naming them) and inputs beyond the length and nesting bounds
    (quoting at most the start of the input).
    """
    return parse_user_expression(text, symbols, what=what, dialect=_DIALECT, hint=_SYNTAX_HINT)


# ----------------------------------------------------------------------------------------------
# Domains.


@dataclasses.dataclass(frozen=True)
class Domain:
    """Where two expressions are compared.

    ``variables`` are (name, kind) pairs, kind "positive" (log-uniform on [0.05, 20]), "real"
    (uniform on [-3, 3]) or a range (lo, hi) (uniform). ``covariance`` names a (q1, q2, c) triple constrained to a valid
    2×2 covariance: c = ρ √(q1 q2) with |ρ| < 1, including the edges ρ = 0 and |ρ| → 1.
    """

    variables: tuple[tuple[str, Literal["positive", "real"] | tuple[float, float]], ...]
    covariance: tuple[str, str, str] | None = None
    positive_max: float = 20.0

    def symbols(self) -> dict[str, sp.Symbol]:
        def positive(kind) -> bool:
            return kind == "positive" or (isinstance(kind, tuple) and kind[0] >= 0)

        return {name: sp.Symbol(name, positive=True) if positive(kind)
                else sp.Symbol(name, real=True) for name, kind in self.variables}

    def points(self, count: int, seed: int) -> list[dict[str, mpmath.mpf]]:
        rng = np.random.default_rng(seed)
        out = []
        # Random interior points, then edges: c = 0, |c| → √(q1 q2), equal variances.
        rhos = list(rng.uniform(-1.0, 1.0, count))
        edges = [0.0, 1.0, -1.0, 1.0, -1.0, 0.5, 0.0]
        for i, rho in enumerate(rhos + edges):
            point = {}
            for name, kind in self.variables:
                if kind == "positive":
                    point[name] = mpmath.mpf(float(np.exp(rng.uniform(
                        np.log(0.05), np.log(self.positive_max)))))
                elif isinstance(kind, tuple):
                    point[name] = mpmath.mpf(float(rng.uniform(*kind)))
                else:
                    point[name] = mpmath.mpf(float(rng.uniform(-3.0, 3.0)))
            if self.covariance is not None:
                a, b, cname = self.covariance
                if i >= count + 3:  # equal-variance edge points
                    point[b] = point[a]
                if abs(rho) == 1.0:
                    # |ρ| = 1 − 1e-12: close to the edge, yet far enough that expressions
                    # with 1/√(1 − ρ²) (derivatives, K̇) keep > 30 digits at _WORK_DPS
                    r = mpmath.mpf(rho) * (1 - mpmath.mpf(10) ** -12)
                else:
                    r = mpmath.mpf(float(rho))
                point[cname] = r * mpmath.sqrt(point[a] * point[b])
            out.append(point)
        return out


COVARIANCE_DOMAIN = Domain((("q1", "positive"), ("q2", "positive"), ("c", "real")),
                           covariance=("q1", "q2", "c"))


# ----------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of `verify`.

    Attributes:
        status: "proven" (SymPy showed a − b = 0), "numeric" (equal to `EQUAL_DIGITS` digits at
            every sampled point, no proof found) or "counterexample".
        yours, derived: the two SymPy expressions compared.
        max_rel_error: worst relative difference over the points.
        points: how many points were evaluated.
        counterexample: the worst point with both values (status "counterexample" only).
        method: how equality was proven (e.g. "simplify after rewrite(asin)").
    """

    status: Literal["proven", "numeric", "counterexample"]
    yours: sp.Expr
    derived: sp.Expr
    max_rel_error: float
    points: int
    counterexample: Mapping[str, float] | None = None
    method: str = ""
    digits: int = EQUAL_DIGITS
    note: str = "no proof found"

    @property
    def equal(self) -> bool:
        return self.status != "counterexample"

    @property
    def exit_code(self) -> int:
        return 0 if self.equal else 1

    def message(self) -> str:
        if self.status == "proven":
            return f"proven equal ({self.method})"
        if self.status == "numeric":
            return (f"numerically equal to {self.digits} digits over the domain "
                    f"({self.points} points, worst relative difference "
                    f"{self.max_rel_error:.1e}; {self.note})")
        ce = dict(self.counterexample or {})
        yours, derived = ce.pop("yours"), ce.pop("derived")
        where = ", ".join(f"{k}={_fmt(v)}" for k, v in ce.items())
        return (f"counterexample at {where}: yours={_fmt(yours)}, derived={_fmt(derived)} "
                f"(relative difference {self.max_rel_error:.3g})")

    def __str__(self) -> str:
        return self.message()


def _fmt(value) -> str:
    if isinstance(value, complex):
        return f"{value.real:.10g}{value.imag:+.10g}j"
    return f"{value:.10g}"


# ----------------------------------------------------------------------------------------------
# Numeric comparison.


def _evaluator(expr: sp.Expr, names: Sequence[str]):
    symbols = [s for s in expr.free_symbols]
    by_name = {s.name: s for s in symbols}
    args = [by_name.get(n, sp.Symbol(n)) for n in names]
    try:
        f = sp.lambdify(args, expr, modules="mpmath")
    except Exception:  # pragma: no cover - printer gaps: fall back to evalf
        f = None

    def evaluate(point):
        values = [point[n] for n in names]
        if f is not None:
            try:
                return mpmath.mpmathify(f(*values))
            except Exception:
                pass
        subs = {args[i]: sp.Float(values[i], _WORK_DPS) for i in range(len(names))}
        value = sp.N(expr.xreplace(subs), _WORK_DPS)
        return mpmath.mpmathify(complex(value)) if not value.is_real else mpmath.mpf(str(value))

    return evaluate


def check_timeout(value, what: str = "timeout") -> float:
    """`value` as a float if it is a positive, finite number of seconds, else a one-line
    `InputError` naming `what` (e.g. "--timeout")."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return seconds


def _numeric_compare(yours, derived, domain: Domain, count: int, seed: int):
    names = [n for n, _ in domain.variables]
    f_yours, f_derived = _evaluator(yours, names), _evaluator(derived, names)
    rows = []
    with mpmath.workdps(_WORK_DPS):
        for point in domain.points(count, seed):
            try:
                a, b = f_yours(point), f_derived(point)
            except (ZeroDivisionError, ValueError, TypeError) as error:
                raise InputError(f"cannot evaluate the expressions at "
                                 f"{ {k: float(v) for k, v in point.items()} }: {error}") from None
            rows.append((point, a, b))
        scale = max((max(abs(a), abs(b)) for _, a, b in rows
                     if mpmath.isfinite(abs(a)) and mpmath.isfinite(abs(b))), default=1)
        floor = mpmath.mpf(10) ** -20 * (scale if scale > 0 else 1)
        worst, worst_row = mpmath.mpf(0), rows[0]
        for row in rows:
            _, a, b = row
            if not (mpmath.isfinite(abs(a)) and mpmath.isfinite(abs(b))):
                err = mpmath.mpf(0) if a == b else mpmath.inf
            else:
                err = abs(a - b) / max(abs(a), abs(b), floor)
            if err > worst:
                worst, worst_row = err, row
    point, a, b = worst_row

    def py(v):
        v = mpmath.mpmathify(v)
        return complex(v) if isinstance(v, mpmath.mpc) and v.imag != 0 else float(mpmath.re(v))

    example = {k: float(v) for k, v in point.items()}
    example.update(yours=py(a), derived=py(b))
    return float(worst), len(rows), example


# ----------------------------------------------------------------------------------------------
# Symbolic proof, in a subprocess so that a runaway `simplify` can be stopped.

_PROVER = r"""
import json, pickle, sys
import sympy as sp
a, b = pickle.loads(sys.stdin.buffer.read())
d = a - b
if sp.expand(d) == 0:
    print(json.dumps({"proven": True, "method": "expand"}))
    sys.exit(0)
steps = [
    ("simplify", lambda e: e),
    ("simplify after rewrite(asin)", lambda e: e.rewrite(sp.asin)),
    ("simplify after rewrite(exp)", lambda e: e.rewrite(sp.exp)),
    ("simplify after rewrite(asin) and rewrite(exp)", lambda e: e.rewrite(sp.asin).rewrite(sp.exp)),
]
for name, step in steps:
    try:
        if sp.simplify(step(d)) == 0:
            print(json.dumps({"proven": True, "method": name}))
            sys.exit(0)
    except Exception:
        pass
print(json.dumps({"proven": False}))
"""


def _cheap_to_expand(e: sp.Expr) -> bool:
    """Expanding `e` is quick: few operations and no power of a sum above the 8th."""
    if sp.count_ops(e) > 400:
        return False
    return all(not (p.base.is_Add and p.exp.is_Integer and abs(int(p.exp)) > 8) for p in e.atoms(sp.Pow))


def _prove(yours: sp.Expr, derived: sp.Expr, timeout: float) -> str | None:
    """The method that proved ``yours == derived``, or None (not proven within ``timeout`` s)."""
    if _cheap_to_expand(yours - derived) and sp.expand(yours - derived) == 0:
        return "expand"  # in this process only when small: (c + q1 + q2)**3000 is 4.5M terms
    try:
        done = subprocess.run([sys.executable, "-c", _PROVER], input=pickle.dumps((yours, derived)),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    try:
        answer = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None
    return answer["method"] if answer.get("proven") else None


def verify(
    expr: str | sp.Expr,
    against: sp.Expr,
    *,
    domain: Domain = COVARIANCE_DOMAIN,
    constants: Mapping[str, sp.Expr] | None = None,
    points: int = 200,
    seed: int = 0,
    timeout: float = 20.0,
    numeric_functions: Mapping[str, object] | None = None,
    numeric_tolerance: float = 1e-9,
) -> Verdict:
    """Compare ``expr`` (a SymPy string or expression) with the derived expression ``against``.

    Args:
        expr: the user's expression in the domain's variables (and the names in ``constants``).
        against: the derived expression (its symbols are matched to the domain's by name).
        domain: the variables and their ranges.
        constants: named constants (e.g. the spec's ``sigma_w``) that may appear on either side
            and are substituted before comparing.
        points: random points (plus edge points) for the numeric check.
        timeout: wall-clock seconds for the symbolic proof attempt.
        numeric_functions: JAX implementations of undefined functions in ``against`` (the
            quadrature-tier duals ``K_phi``, ``Kdot_phi``); both sides are then compared in
            float64 to ``numeric_tolerance`` (no proof is possible).
    """
    check_timeout(timeout, "timeout")
    if not isinstance(points, int | np.integer) or isinstance(points, bool) or points < 1:
        raise InputError(f"points must be an integer >= 1, got {points!r}")
    declared = domain.symbols()
    constants = dict(constants or {})
    names = dict(declared)
    names.update({k: sp.Symbol(k) for k in constants})
    yours = parse_expression(expr, names) if isinstance(expr, str) else sp.sympify(expr)

    def canonical(e: sp.Expr) -> sp.Expr:
        mapping = {s: declared[s.name] for s in e.free_symbols if s.name in declared}
        mapping.update({s: constants[s.name] for s in e.free_symbols if s.name in constants})
        return e.xreplace(mapping)

    yours, derived = canonical(yours), canonical(sp.sympify(against))
    undefined = derived.atoms(sp.core.function.AppliedUndef)
    if undefined and numeric_functions:
        return _verify_float64(yours, derived, domain, numeric_functions, numeric_tolerance,
                               points, seed)
    if undefined:
        names = ", ".join(sorted({str(f.func) for f in undefined}))
        raise InputError(f"the derived expression uses {names}, which has no closed form (a "
                         "quadrature-tier dual): compare with verify_dual / verify_quantity, which "
                         "evaluate it numerically, or pass numeric_functions")
    for side, e in (("expression", yours), ("derived expression", derived)):
        extra = sorted(s.name for s in e.free_symbols if s.name not in declared)
        if extra:
            raise InputError(f"the {side} has symbols outside the domain: {', '.join(extra)}")
    error, count, example = _numeric_compare(yours, derived, domain, points, seed)
    if not error < 10.0 ** -EQUAL_DIGITS:
        return Verdict("counterexample", yours, derived, error, count, example)
    method = _prove(yours, derived, timeout)
    if method is not None:
        return Verdict("proven", yours, derived, error, count, method=method)
    return Verdict("numeric", yours, derived, error, count)


# ----------------------------------------------------------------------------------------------
# The two forms `dmft verify` offers.


def _verify_float64(yours, derived, domain, functions, tolerance, count, seed) -> Verdict:
    """Both sides in float64 (JAX, vectorized over the points) for quadrature-tier duals."""
    import jax

    from ._lower import lambdify_jax

    names = [n for n, _ in domain.variables]
    pts = domain.points(count, seed)
    columns = [np.array([float(p[n]) for p in pts]) for n in names]
    values = []
    if not jax.config.jax_enable_x64:
        raise InputError("verifying against a quadrature dual needs float64: enable "
                         "jax_enable_x64 (the dmft command line does)")
    for e in (yours, derived):
        by_name = {s.name: s for s in e.free_symbols}
        f = lambdify_jax([by_name.get(n, sp.Symbol(n)) for n in names], e, functions)
        values.append(np.broadcast_to(np.asarray(f(*columns), dtype=np.float64),
                                      columns[0].shape))
    a, b = values
    scale = max(float(np.max(np.abs(b))), 1e-300)
    errors = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-8 * scale)
    errors = np.where(np.isfinite(errors), errors, np.inf)
    worst = int(np.argmax(errors))
    error = float(errors[worst])
    digits = int(np.floor(-np.log10(tolerance)))
    if not error <= tolerance:
        example = {n: float(col[worst]) for n, col in zip(names, columns)}
        example.update(yours=float(a[worst]), derived=float(b[worst]))
        return Verdict("counterexample", yours, derived, error, len(pts), example, digits=digits)
    return Verdict("numeric", yours, derived, error, len(pts), digits=digits,
                   note="float64: the dual kernel has no closed form (quadrature), so no proof")


def _quadrature_functions(activation_name: str):
    """(numeric K_phi and Kdot_phi, tolerance, largest variance to sample)."""
    from ._derive import _activation

    act = _activation(activation_name)
    functions = {"K_phi": act.dual, "Kdot_phi": act.dual_derivative}
    if act.variance_limit < 0.1:
        raise InputError(f"the dual kernels of {shorten(activation_name)!r} keep their error bound "
                         f"only for variances up to {act.variance_limit:.3g}: nothing to compare on")
    return functions, max(100 * act.dual_error, 1e-12), min(_QUADRATURE_Q_MAX, act.variance_limit)


# Quadrature-tier duals state their error bound for variances up to `variance_limit` (about 4.6
# for the Mehler series of tanh); points are drawn up to this or that limit, whichever is less.
_QUADRATURE_Q_MAX = 4.5
_QUADRATURE_DOMAIN = Domain(COVARIANCE_DOMAIN.variables, COVARIANCE_DOMAIN.covariance,
                            _QUADRATURE_Q_MAX)


def dual_expression(activation: str, kernel: Literal["nngp", "ntk"]) -> sp.Expr:
    """E[φ(u)φ(v)] ("nngp") or E[φ'(u)φ'(v)] ("ntk") of an activation, in q1, q2, c."""
    from ._derive import _activation, _rename_to_declared

    if kernel not in ("nngp", "ntk"):
        raise InputError(f"--kernel must be 'nngp' or 'ntk', got {kernel!r}")
    from ._derive import c, q1, q2

    act = _activation(activation)
    expr = act.dual_expr if kernel == "nngp" else act.dual_derivative_expr
    if expr is None:  # quadrature tier: an undefined function evaluated numerically
        return sp.Function("K_phi" if kernel == "nngp" else "Kdot_phi")(q1, q2, c)
    return _rename_to_declared(expr)


def verify_dual(activation: str, kernel: Literal["nngp", "ntk"], expr: str | sp.Expr,
                **options) -> Verdict:
    """Verify ``expr`` (in q1, q2, c) against an activation's dual kernel.

    For quadrature-tier activations (no closed form) the comparison is in float64 against the
    activation's numeric dual, to 100× its stated error bound, on variances up to 4.5.
    """
    derived = dual_expression(activation, kernel)
    if derived.atoms(sp.core.function.AppliedUndef):
        functions, tolerance, q_max = _quadrature_functions(activation)
        domain = dataclasses.replace(_QUADRATURE_DOMAIN, positive_max=q_max)
        return verify(expr, derived, domain=domain, numeric_functions=functions,
                      numeric_tolerance=tolerance, **options)
    return verify(expr, derived, domain=COVARIANCE_DOMAIN, **options)


def quantity_domain(layer_map) -> Domain:
    names = [s.name for s in layer_map.inputs]
    if names == ["kx"]:
        return Domain((("kx", "real"),))
    variables = [("q1", "positive"), ("q2", "positive"), ("c", "real")]
    if "theta_prev" in names:
        variables.append(("theta_prev", "real"))
    return Domain(tuple(variables), covariance=("q1", "q2", "c"))


def verify_quantity(derivation, quantity: str, expr: str | sp.Expr, **options) -> Verdict:
    """Verify ``expr`` against one layer map of a `Derivation` (e.g. ``"ntk_L2"``).

    The layer map's inputs are the declared symbols (see `LAYER_SYMBOLS_DOC`); the spec's
    parameters ``sigma_w``, ``sigma_b`` (and ``alpha_res``, ``L``) may be written by name.
    """
    layer_map = derivation.quantity(quantity)
    derived = layer_map.numeric()
    constants = {s.name: v for s, v in layer_map.parameters.items()}
    domain = quantity_domain(layer_map)
    if derived.atoms(sp.core.function.AppliedUndef):
        functions, tolerance, q_max = _quadrature_functions(derivation.architecture.activation)
        domain = dataclasses.replace(domain, positive_max=q_max)
        options = {"numeric_functions": functions, "numeric_tolerance": tolerance, **options}
    return verify(expr, derived, domain=domain, constants=constants, **options)


def latex_parser_status() -> str | None:
    """None when LaTeX input works, else why not (antlr4-python3-runtime 4.11 is required)."""
    try:
        import antlr4  # noqa: F401
        from importlib.metadata import version

        found = version("antlr4-python3-runtime")
    except Exception:
        return "LaTeX input needs the optional antlr4-python3-runtime==4.11.* (not installed)"
    if not found.startswith("4.11"):
        return (f"LaTeX input needs antlr4-python3-runtime==4.11.* (found {found}, which "
                "SymPy's parse_latex cannot use); pass a SymPy string with --expr instead")
    return None


_LATEX_MACROS = (
    (r"\\operatorname\{(\w+)\}", r"\\\1"),
    (r"\\mathrm\{(\w+)\}", r"\\\1"),
    (r"\\left|\\right", ""),
    (r"\\,|\\;|\\!|\\quad", " "),
)


def parse_latex_expression(text: str, symbols: Mapping[str, sp.Symbol]) -> sp.Expr:
    """Parse LaTeX (``\\frac{...}{...}``, ``\\arccos``, ``q_1``) into a SymPy expression.

    Needs antlr4-python3-runtime 4.11. ``\\pi`` and ``e`` become the constants, ``q_{1}`` /
    ``q_1`` become ``q1``; undeclared symbols and functions are errors.
    """
    problem = latex_parser_status()
    if problem:
        raise InputError(problem)
    from sympy.parsing.latex import parse_latex

    if not isinstance(text, str) or not text.strip():
        raise InputError("--expr-latex is empty")
    if len(text) > MAX_CHARACTERS:
        raise InputError(f"--expr-latex is too long: {len(text)} characters, at most "
                         f"{MAX_CHARACTERS} ({shorten(text)!r})")
    cleaned = text
    for pattern, repl in _LATEX_MACROS:
        cleaned = re.sub(pattern, repl, cleaned)
    # Multi-letter subscripts (\theta_{prev}) parse as products: swap in placeholders first.
    placeholders = {}
    for i, name in enumerate(n for n in symbols if "_" in n and len(n.split("_", 1)[1]) > 1):
        base, sub = name.split("_", 1)
        pattern = rf"\\?{base}_\{{(?:\\mathrm\{{|\\text\{{)?{sub}\}}?\}}|{name}"
        token = rf"\Xi_{{{i}}}"
        if re.search(pattern, cleaned):
            cleaned = re.sub(pattern, lambda m, token=token: token, cleaned)
            placeholders[f"Xi_{{{i}}}"] = symbols[name]
    try:
        expr = parse_latex(cleaned)
    except Exception as error:
        raise InputError(f"cannot parse --expr-latex {shorten(text)!r}: "
                         f"{' '.join(str(error).split())[:200]}") from None
    # Undefined applications: known function names (\operatorname{erf} → erf) become the
    # functions; a declared symbol "applied" to one argument (c\left(…\right)) is a product.
    def fix(e):
        name = str(e.func)
        if name in _FUNCTIONS and callable(_FUNCTIONS[name]):
            return _FUNCTIONS[name](*e.args)
        if name in symbols and len(e.args) == 1:
            return symbols[name] * e.args[0]
        return e

    expr = expr.replace(lambda e: isinstance(e, sp.core.function.AppliedUndef), fix)
    mapping = {s: placeholders[s.name] for s in expr.free_symbols if s.name in placeholders}
    for s in expr.free_symbols:
        if s in mapping:
            continue
        name = re.sub(r"[{}\\]", "", s.name)  # \theta_{prev} → theta_prev, q_{1} → q_1
        if name not in symbols:
            name = name.replace("_", "")  # q_1 → q1
        if name == "pi":
            mapping[s] = sp.pi
        elif name == "e":
            mapping[s] = sp.E
        elif name in symbols:
            mapping[s] = symbols[name]
    expr = expr.xreplace(mapping)
    undeclared = sorted(s.name for s in expr.free_symbols if s not in set(symbols.values()))
    if undeclared:
        raise InputError(f"--expr-latex uses undeclared symbol(s) {', '.join(undeclared)}; "
                         f"declared: {', '.join(symbols)}")
    undefined = sorted({str(f.func) for f in expr.atoms(sp.core.function.AppliedUndef)})
    if undefined:
        raise InputError(f"--expr-latex applies undeclared function(s) {', '.join(undefined)}")
    return expr


__all__ = [
    "COVARIANCE_DOMAIN", "Domain", "EQUAL_DIGITS", "Verdict", "check_timeout", "dual_expression",
    "parse_expression", "parse_latex_expression", "quantity_domain", "verify", "verify_dual",
    "verify_quantity",
]
