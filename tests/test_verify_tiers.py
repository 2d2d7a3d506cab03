"""`dmft verify` on every tier: a wrong kernel is refuted (exit 1, a counterexample), a right one
accepted (exit 0), through the command line and the Python API alike.

The "right" expressions are independent derivations: closed forms from the literature (Cho &
Saul), Isserlis moments by hand, and for quadrature-tier activations duals that have a closed
form the registry does not recognise: sin x + cos x (E[e^{i(au+bv)}] gives
K = K̇ = exp(c − (q1+q2)/2)) and cos² x = (1 + cos 2x)/2 (K = 1/4 + e^{−2q1}/4 + e^{−2q2}/4 +
e^{−2(q1+q2)} cosh(4c)/4).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from dmft._errors import InputError
from dmft.activations import get_activation
from dmft.cli import main
from dmft import Architecture
from dmft.symbolic import derive, verify_dual, verify_quantity

RELU = "sqrt(q1*q2 - c**2)/(2*pi) + c*(pi - acos(c/sqrt(q1*q2)))/(2*pi)"
SIN_COS = "exp(c - (q1 + q2)/2)"
COS2 = "1/4 + exp(-2*q1)/4 + exp(-2*q2)/4 + exp(-2*(q1 + q2))*cosh(4*c)/4"
COS2_DOT = "exp(-2*(q1 + q2))*sinh(4*c)"  # ∂K/∂c = E[−sin 2u · −sin 2v] (Price)

# (activation, kernel, tier, right expression, wrong expression)
CASES = [
    ("relu", "nngp", "closed-form", RELU, "c/2"),
    ("relu", "ntk", "closed-form", "(pi - acos(c/sqrt(q1*q2)))/(2*pi)", "1/2"),
    ("x**3", "nngp", "polynomial", "9*q1*q2*c + 6*c**3", "6*c**3"),
    ("x**3 - x", "ntk", "polynomial", "(3*q1 - 1)*(3*q2 - 1) + 18*c**2", "18*c**2"),
    ("sin(x) + cos(x)", "nngp", "quadrature", SIN_COS, "exp(c - (q1 + q2))"),
    ("cos(x)**2", "nngp", "quadrature", COS2, "1/4 + exp(-2*(q1 + q2))*cosh(4*c)/4"),
    ("cos(x)**2", "ntk", "quadrature", COS2_DOT, "exp(-2*(q1 + q2))*cosh(4*c)"),
]
# Quadrature-tier duals with no closed form at all: only refutation can be tested.
WRONG_ONLY = [
    ("tanh", "nngp", "c"),
    ("tanh", "ntk", "exp(-(q1 + q2)/2)*cosh(c)"),
    ("x*tanh(x)", "nngp", "c"),
    ("tanh", "nngp", "2/pi*asin(2*c/sqrt((1 + 2*q1)*(1 + 2*q2)))"),  # erf's dual, not tanh's
]


@pytest.mark.parametrize("activation,kernel,tier,right,wrong", CASES)
def test_tiers_are_what_the_cases_claim(activation, kernel, tier, right, wrong):
    assert get_activation(activation).tier == tier


@pytest.mark.parametrize("activation,kernel,tier,right,wrong", CASES)
def test_python_api_accepts_right_and_refutes_wrong(activation, kernel, tier, right, wrong):
    ok = verify_dual(activation, kernel, right, points=60, timeout=10)
    assert ok.equal and ok.exit_code == 0, ok.message()
    if tier == "quadrature":  # float64 against the numeric dual: 100× its stated error
        assert ok.status == "numeric" and ok.max_rel_error <= 100 * get_activation(activation).dual_error
    bad = verify_dual(activation, kernel, wrong, points=60, timeout=10)
    assert bad.status == "counterexample" and bad.exit_code == 1
    assert set(bad.counterexample) >= {"q1", "q2", "c", "yours", "derived"}
    assert bad.max_rel_error > 1e-3  # a real difference, not rounding


@pytest.mark.parametrize("activation,kernel,tier,right,wrong", CASES)
def test_command_line_accepts_right_and_refutes_wrong(activation, kernel, tier, right, wrong, capsys):
    base = ["verify", "--activation", activation, "--kernel", kernel, "--points", "60",
            "--timeout", "10"]
    assert main(base + ["--expr", right]) == 0
    out = capsys.readouterr().out
    assert "proven equal" in out or "numerically equal" in out
    assert main(base + ["--expr", wrong]) == 1
    out = capsys.readouterr().out
    assert "counterexample at q1=" in out and "yours=" in out and "derived=" in out


@pytest.mark.parametrize("activation,kernel,wrong", WRONG_ONLY)
def test_quadrature_duals_without_closed_form_are_refuted(activation, kernel, wrong, capsys):
    bad = verify_dual(activation, kernel, wrong, points=40)
    assert bad.status == "counterexample" and bad.max_rel_error > 1e-3
    assert main(["verify", "--activation", activation, "--kernel", kernel, "--expr", wrong,
                 "--points", "40"]) == 1
    assert "counterexample at" in capsys.readouterr().out


def test_the_reported_case_through_the_console_script():
    """`dmft verify --activation tanh --kernel nngp --expr c` used to exit 2 ("cannot evaluate
    the expressions ... Cannot convert expression to float")."""
    done = subprocess.run([sys.executable, "-m", "dmft", "verify", "--activation", "tanh",
                           "--kernel", "nngp", "--expr", "c"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr
    assert "counterexample at" in done.stdout and "Cannot convert" not in done.stderr


def test_kinked_quadrature_tier_is_refuted():
    """max(x,0) + max(x−1,0): kinks at 0 and 1, no closed form (the kink-aware quadrature).
    φ' = H(x) + H(x − 1) ∈ {0, 1, 2}, so K̇ = E[φ'(u)φ'(v)] is not constant: "1" is refuted."""
    act = get_activation("Max(x, 0) + Max(x - 1, 0)")
    assert act.tier == "quadrature"
    bad = verify_dual("Max(x, 0) + Max(x - 1, 0)", "ntk", "1", points=8)
    assert bad.status == "counterexample" and bad.max_rel_error > 1e-3


def test_quantity_of_a_quadrature_spec_uses_the_numeric_dual(tmp_path, capsys):
    """--spec with a quadrature-tier activation went through the closed-form path as well."""
    arch = Architecture(hidden_layers=1, activation="sin(x) + cos(x)", sigma_w=1.5, sigma_b=0.1)
    d = derive(arch)
    right = f"2.25*({SIN_COS}) + 0.01"
    assert verify_quantity(d, "nngp_L2", right, points=40).equal
    assert verify_quantity(d, "nngp_L2", "2.25*c + 0.01", points=40).status == "counterexample"
    spec = tmp_path / "spec.toml"
    spec.write_text('[architecture]\nhidden_layers = 1\nactivation = "sin(x) + cos(x)"\n'
                    "sigma_w = 1.5\nsigma_b = 0.1\n")
    assert main(["verify", "--spec", str(spec), "--quantity", "nngp_L2", "--expr", right,
                 "--points", "40"]) == 0
    assert main(["verify", "--spec", str(spec), "--quantity", "nngp_L2", "--expr",
                 "2.25*c + 0.01", "--points", "40"]) == 1
    capsys.readouterr()


def test_unparseable_expression_is_still_exit_2(capsys):
    assert main(["verify", "--activation", "tanh", "--expr", "c +* q1"]) == 2
    assert main(["verify", "--activation", "tanh", "--expr", "K_phi(q1, q2, c)"]) == 2
    err = capsys.readouterr().err
    assert "unknown function 'K_phi'" in err


def test_python_verify_dual_rejects_bad_options():
    with pytest.raises(InputError, match="timeout"):
        verify_dual("tanh", "nngp", "c", timeout=-1)
    with pytest.raises(InputError, match="points"):
        verify_dual("relu", "nngp", "c", points=0)
