"""``dmft verify``: check a hand-derived expression against the derived one.

Two forms:
  dmft verify --activation relu --kernel nngp --expr "..."     (E[φ(u)φ(v)]; ntk: E[φ'(u)φ'(v)])
  dmft verify --spec SPEC --quantity ntk_L2 --expr "..."        (a layer map of the spec)
  dmft verify --document derivations/kernels.md                 (every ```verify block)
Exit code 0: proven equal or numerically equal to 30 digits; 1: counterexample; 2: bad input.
"""

from __future__ import annotations

import sympy as sp

from .._errors import InputError
from ._derive import add_architecture_arguments, read_architecture

_EPILOG = """symbols:
  --activation/--kernel: q1, q2, c with (u, v) ~ N(0, [[q1, c], [c, q2]]) (q1, q2 > 0,
      |c| < sqrt(q1*q2)).
  --spec/--quantity (nngp_L<l>, ntk_L<l>, nngp_derivative_L<l>, l = 1..L+1):
      layer 1: kx = x.x'/D;
      layer l >= 2: q1 = Sigma^(l-1)(x,x), q2 = Sigma^(l-1)(x',x'), c = Sigma^(l-1)(x,x'),
      theta_prev = Theta^(l-1)(x,x'); sigma_w, sigma_b (alpha_res, L for residual nets) may be
      written by name and take the spec's values.
syntax: SymPy (** or ^ for powers, sqrt, exp, log, asin/arcsin, acos, atan, erf, pi, ...).
answers: "proven equal" (exit 0), "numerically equal to 30 digits ... (no proof found)"
  (exit 0), "counterexample at ...: yours=..., derived=..." (exit 1), bad input (exit 2)."""


def configure(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("--activation", help="activation name or SymPy expression in x")
    parser.add_argument("--kernel", choices=("nngp", "ntk"), default="nngp",
                        help="nngp: E[φ(u)φ(v)]; ntk: E[φ'(u)φ'(v)] (default nngp)")
    parser.add_argument("--spec", help="spec file (TOML; only [architecture] is read)")
    parser.add_argument("--quantity", help="layer map of the spec, e.g. ntk_L2, nngp_L3")
    parser.add_argument("--document", metavar="FILE.md",
                        help="check every ```verify block of a derivation document "
                             "(format: derivations/README.md)")
    parser.add_argument("--expr", help="your expression, SymPy syntax")
    parser.add_argument("--expr-latex", help="your expression as LaTeX (needs "
                                              "antlr4-python3-runtime 4.11)")
    parser.add_argument("--points", type=int, default=200,
                        help="random points for the numeric check (plus edges; default 200)")
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds allowed for the symbolic proof (default 20)")
    add_architecture_arguments(parser)


def execute(args) -> int:
    from ..symbolic import _verify, derive

    _verify.check_timeout(args.timeout, "--timeout")
    if args.document is not None:
        from ..symbolic import check_document

        results = check_document(args.document, show=True, timeout=args.timeout)
        failed = sum(not r.passed for r in results)
        print(f"{len(results) - failed} of {len(results)} checks passed"
              + ("" if results else " (the document has no ```verify blocks)"))
        return 1 if failed else 0
    if (args.expr is None) == (args.expr_latex is None):
        raise InputError("give exactly one of --expr or --expr-latex")
    if (args.activation is None) == (args.spec is None):
        raise InputError("give either --activation (with --kernel) or --spec (with --quantity)")
    if args.points < 1:
        raise InputError(f"--points must be >= 1, got {args.points}")
    if args.spec is not None:
        if not args.quantity:
            raise InputError("--spec needs --quantity (e.g. ntk_L2)")
        derivation = derive(read_architecture(args.spec), residual_scale=args.residual_scale)
        layer_map = derivation.quantity(args.quantity)
        domain = _verify.quantity_domain(layer_map)
        constants = {s.name: v for s, v in layer_map.parameters.items()}
        derived = layer_map.numeric()
        label = f"{args.quantity} of {args.spec}"
    else:
        derived = _verify.dual_expression(args.activation, args.kernel)
        domain, constants = _verify.COVARIANCE_DOMAIN, {}
        label = ("E[φ(u)φ(v)]" if args.kernel == "nngp" else "E[φ'(u)φ'(v)]") + \
            f" for φ = {args.activation}"
    names = dict(domain.symbols())
    names.update({k: sp.Symbol(k) for k in constants})
    if args.expr is not None:
        yours = _verify.parse_expression(args.expr, names)
    else:
        yours = _verify.parse_latex_expression(args.expr_latex, names)
    print(f"parsed:  {sp.sstr(yours)}")
    print(f"latex:   {sp.latex(yours)}")
    print(f"derived: {sp.sstr(derived)}   [{label}]")
    # The same entry points as the Python API: they pick the tier's comparison (mpmath and a
    # proof attempt for closed forms and polynomials; float64 against the numeric dual, on the
    # variances where its error bound holds, for the quadrature tier).
    options = {"points": args.points, "timeout": args.timeout}
    if args.spec is not None:
        verdict = _verify.verify_quantity(derivation, args.quantity, yours, **options)
    else:
        verdict = _verify.verify_dual(args.activation, args.kernel, yours, **options)
    print(verdict.message())
    return verdict.exit_code
