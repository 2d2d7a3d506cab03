"""The one parser of user expressions (dmft/_parsing.py) and the input bounds around it."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import jax
import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from dmft import _parsing
from dmft._errors import InputError
from dmft.activations import X, get_activation, parse_activation
from dmft.activations import _registry
from dmft.cli import main
from dmft.symbolic import _verify
from dmft.symbolic._verify import COVARIANCE_DOMAIN, parse_expression, verify

SYMBOLS = COVARIANCE_DOMAIN.symbols()


def test_both_entry_points_are_the_one_parser():
    """parse_activation and parse_expression have no parser of their own: both call
    dmft._parsing.parse_user_expression (replace it, and both change)."""
    calls = []
    original = _parsing.parse_user_expression

    def spy(*args, **kwargs):
        calls.append(kwargs["what"])
        return original(*args, **kwargs)

    try:
        _registry.parse_user_expression = spy
        _verify.parse_user_expression = spy
        parse_activation("x*tanh(x)")
        parse_expression("2 c", SYMBOLS)
    finally:
        _registry.parse_user_expression = original
        _verify.parse_user_expression = original
    assert calls == ["activation", "--expr"]
    assert not hasattr(_registry, "_ALLOWED") and not hasattr(_verify, "_TRANSFORMATIONS")


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hi')", "x.__class__", "(lambda: 1)()", "x if x else 1",
    "exec('1')", "open('f')", "[x for x in ()]", "x; import os", "getattr(x, 'func')",
    "x.func", "globals()", "x\\n", "{x}", "x @ x", "`x`", "x.__dict__",
])
def test_malicious_input_is_refused_by_both(text):
    for parse in (parse_activation, lambda t: parse_expression(t.replace("x", "c"), SYMBOLS)):
        with pytest.raises(InputError) as info:
            parse(text)
        assert "\n" not in str(info.value)


def test_the_dialects_keep_their_meaning():
    c, q1 = SYMBOLS["c"], SYMBOLS["q1"]
    assert parse_expression("2 c (q1 + 1)", SYMBOLS) == 2 * c * (q1 + 1)  # implicit product
    assert parse_expression("0.1*c", SYMBOLS) == c / 10  # exact decimals
    assert parse_expression("c^2", SYMBOLS) == c**2
    assert parse_activation("0.5*x") == sp.Float(0.5) * X  # activations: decimals are floats
    assert parse_activation("x^2") == X**2
    assert parse_activation("Piecewise((x, x > 0), (0, True))") == sp.Piecewise((X, X > 0), (0, True))
    assert parse_activation("relu(x) + sigmoid(x)") == sp.Max(X, 0) + 1 / (1 + sp.exp(-X))
    with pytest.raises(InputError, match="cannot parse"):
        parse_activation("2 x")  # no implicit multiplication for activations


@pytest.mark.parametrize("length", [4001, 40_000, 140_000])
def test_long_input_is_one_short_line(length):
    """20,000-term sums used to echo 40 KB and end in a RecursionError."""
    text = ("x+" * length)[: length - 1] + "x"
    for parse, what in ((parse_activation, "activation"),
                        (lambda t: parse_expression(t.replace("x", "c"), SYMBOLS), "--expr")):
        start = time.perf_counter()
        with pytest.raises(InputError, match=f"{what} is too long: {length} characters") as info:
            parse(text)
        message = str(info.value)
        assert "\n" not in message and len(message) < 200
        assert time.perf_counter() - start < 1.0  # refused before parsing (generous for a busy box)


@pytest.mark.parametrize("op,expected", [
    ("+", 1999 * X), ("-", -1997 * X), ("*", X**1999), ("/", X**-1997)])
def test_longest_accepted_chains_still_parse(op, expected):
    text = op.join(["x"] * 1999)  # 3997 characters: ~2000 levels of the parser's recursion
    assert parse_activation(text) == expected
    assert parse_expression(text.replace("x", "c"), SYMBOLS) == expected.subs(X, SYMBOLS["c"])
    assert parse_activation("-" * 3999 + "x") == -X  # 3999 unary minus signs


def test_the_recursion_limit_is_restored():
    before = sys.getrecursionlimit()
    parse_activation("+".join(["x"] * 1999))
    with pytest.raises(InputError):
        parse_activation("x +* x")
    assert sys.getrecursionlimit() == before


@pytest.mark.parametrize("text,needle", [
    ("(" * 49 + "x" + ")" * 49, "nests parentheses 49 deep"),
    ("**".join(["x"] * 1333), "more than 100 levels deep"),
    ("x" + "**2" * 1332, "more than 100 levels deep"),
    ("9**9**9*x", "more than 1000 digits"),
    ("x**2**2**2**2**2**2**2**2**2**2**2**2", "more than 1000 digits"),
    ("factorial(100000)*x", "factorial(100000) has more than"),
    ("x*gamma(10**7)", "gamma"),
    ("sin(10**10**10)*x", "more than 1000 digits"),
    ("x + (1", "unbalanced parentheses"),
    (")x(", "unbalanced parentheses"),
], ids=lambda v: v[:30] if isinstance(v, str) else None)
def test_expensive_or_deep_input_is_refused_quickly(text, needle):
    for parse in (parse_activation, lambda t: parse_expression(t.replace("x", "c"), SYMBOLS)):
        start = time.perf_counter()
        with pytest.raises(InputError, match=re.escape(needle)) as info:
            parse(text)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400
        assert time.perf_counter() - start < 5.0  # 9**9**9 alone would take minutes


def test_nesting_up_to_the_bound_is_accepted():
    assert parse_activation("(" * 48 + "x" + ")" * 48) == X
    assert parse_activation("sin(" * 20 + "x" + ")" * 20).has(sp.sin)


def test_error_messages_quote_a_shortened_input():
    long_bad = "x+" * 1000 + "y"
    with pytest.raises(InputError) as info:
        get_activation(long_bad)
    message = str(info.value)
    assert "undeclared symbol(s) y" in message and "(2001 characters)" in message
    assert len(message) < 300


# ----------------------------------------------------------------------------------------------
# The polynomial tier's float range.


def test_high_degree_polynomial_names_its_variance_limit():
    act = get_activation("x**100")
    assert act.tier == "polynomial" and act.limit_is_hard
    # E[u^200] = 199!! q^100 < 1e300 (the ceiling kept for the terms) ⇔ q < 13.4
    mp.mp.dps = 30
    limit = float((mp.mpf(10) ** 300 / mp.fac2(199)) ** (mp.mpf(1) / 100))
    # the K̇ terms (100² · 197!! q^99) bound it a little lower: within 2 %
    assert 0.97 * limit <= act.variance_limit <= limit
    # inside the range: the exact value E[u^100 v^100] at c = q = 1, 199!!
    value = float(act.dual(1.0, 1.0, 1.0))
    assert abs(value - float(mp.fac2(199))) <= act.dual_error * value
    with pytest.raises(InputError, match=r"variance_limit 1[23]\.\d+") as info:
        act.dual(20.0, 20.0, 5.0)
    assert "x**100" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="variance_limit"):
        act.dual_derivative(np.array([1.0, 14.0]), 1.0, 0.5)
    # traced (jit): NaN beyond the limit, the value inside
    out = np.asarray(jax.jit(act.dual)(np.array([1.0, 20.0]), 1.0, 0.5))
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_polynomial_degree_is_bounded():
    with pytest.raises(InputError, match="degree 151; at most 150"):
        get_activation("x**151 + x")
    assert math.isinf(get_activation("x").variance_limit)  # closed-form linear: no limit


def test_low_degree_polynomials_keep_a_far_limit():
    act = get_activation("x**3 - 2*x")
    assert act.variance_limit > 1e90 and float(act.dual(1.0, 2.0, 0.5)) == pytest.approx(
        # E[(u³ − 2u)(v³ − 2v)] = 9 q1 q2 c + 6c³ − 6 q1 c − 6 q2 c + 4c (Isserlis)
        9 * 2 * 0.5 + 6 * 0.125 - 6 * 0.5 - 12 * 0.5 + 2.0, rel=1e-14)  # a few ulps


# ----------------------------------------------------------------------------------------------
# --timeout and --points.


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf"])
def test_bad_timeout_is_a_one_line_error_naming_it(value, capsys):
    assert main(["verify", "--activation", "relu", "--expr", "c", f"--timeout={value}"]) == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and err.count("\n") == 1


def test_bad_timeout_in_the_python_api():
    for value in (-5, 0.0, float("nan"), float("inf"), "soon"):
        with pytest.raises(InputError, match="timeout"):
            verify("c", SYMBOLS["c"], timeout=value)
    with pytest.raises(InputError, match="points"):
        verify("c", SYMBOLS["c"], points=0)


def test_verify_refuses_an_undefined_derived_function_without_numeric_functions():
    derived = sp.Function("K_phi")(SYMBOLS["q1"], SYMBOLS["q2"], SYMBOLS["c"])
    with pytest.raises(InputError, match="K_phi.*no closed form.*verify_dual"):
        verify("c", derived)


def test_bad_timeout_through_the_console_script():
    done = subprocess.run([sys.executable, "-m", "dmft", "verify", "--activation", "relu",
                           "--expr", "c", "--timeout", "-5"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "--timeout" in done.stderr
    assert done.stderr.strip().count("\n") == 0
