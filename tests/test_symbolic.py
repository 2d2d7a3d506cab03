"""The symbolic layer: derived equations, their lowering to JAX, printing, and `dmft verify`."""

from __future__ import annotations

import shutil
import subprocess

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import sympy as sp

from dmft._errors import InputError
from dmft.activations import get_activation
from dmft.cli import main
from dmft.kernels import layer_kernels
from dmft.spec import Architecture
from dmft.symbolic import (
    CausalQuadrature, Domain, braces_balanced, derive, field_velocity, gamma0, lower_expression,
    lower_recursion, num_train, parse_expression, parse_latex_expression, substitute, verify,
    verify_dual, verify_quantity,
)
from dmft.symbolic._verify import latex_parser_status
from dmft.symbolic import _ir as ir
from dmft.symbolic._derive import c, q1, q2, theta_prev

RELU_ACOS = "sqrt(q1*q2 - c**2)/(2*pi) + c*(pi - acos(c/sqrt(q1*q2)))/(2*pi)"
RELU_ASIN = "sqrt(q1*q2 - c**2)/(2*pi) + c*(pi/2 + asin(c/sqrt(q1*q2)))/(2*pi)"
ERF = "2/pi*asin(2*c/sqrt((1 + 2*q1)*(1 + 2*q2)))"
ERF_MISSING_2 = "2/pi*asin(c/sqrt((1 + 2*q1)*(1 + 2*q2)))"


def _write_spec(tmp_path, body: str):
    path = tmp_path / "spec.toml"
    path.write_text(body)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Derived recursions equal the closed forms of the notes (symbolic.md §2).


def test_golden_depth_table_relu_sigma_w2_2():
    # symbolic.md §2.6: ReLU, σ_w² = 2, σ_b = 0, ‖x‖²/D = 1, x·x'/D = 0.3.
    golden = [0.661840, 1.034601, 1.404034, 1.765827, 2.119000, 2.463778]
    arch = Architecture(hidden_layers=6, activation="relu", sigma_w=2**0.5)
    d = derive(arch)
    params = {ir.sigma_w: sp.sqrt(2), ir.sigma_b: 0}  # exact σ_w² = 2
    # evaluate layer by layer at 30 digits (SSA: never build the inlined depth-6 expression)
    q, cross, theta = sp.Float(1, 30), sp.Float("0.3", 30), sp.Float("0.3", 30)
    values = []
    for s_map, t_map in zip(d.nngp_recursion[1:], d.ntk_recursion[1:]):
        s_expr, t_expr = s_map.expr.xreplace(params), t_map.expr.xreplace(params)
        theta = t_expr.xreplace({q1: q, q2: q, c: cross, theta_prev: theta}).evalf(30)
        cross, q = (s_expr.xreplace({q1: q, q2: q, c: cross}).evalf(30),
                    s_expr.xreplace({q1: q, q2: q, c: q}).evalf(30))
        values.append(float(theta))
    # the table is printed to 6 decimals: agreement to rounding (5e-7)
    np.testing.assert_allclose(values, golden, atol=5e-7, rtol=0)


@pytest.mark.parametrize("name, k_ref", [
    # symbolic.md §2.6 reference values K(1,2,0.5), K(0.7,1.3,-0.4) (mpmath, 30 digits)
    ("relu", (0.364298881694223, 0.0653780915189423)),
    ("erf", (0.16625797148119, -0.175479656091822)),
    ("sin", (0.116272078967415, -0.15110733607621)),
    ("cos", (0.251607362204028, 0.397704300017816)),
    ("gelu", (0.271337546273993, -0.0119393232650043)),
])
def test_derived_layer_map_reproduces_reference_dual_values(name, k_ref):
    d = derive(Architecture(hidden_layers=1, activation=name))  # σ_w = 1, σ_b = 0
    nngp2 = d.quantity("nngp_L2").numeric()
    for (a, b, cc), ref in zip([(1, 2, 0.5), (0.7, 1.3, -0.4)], k_ref):
        value = float(nngp2.xreplace({q1: a, q2: b, c: sp.Float(cc, 30)}).evalf(30))
        # the reference values carry 15 significant digits
        assert value == pytest.approx(ref, rel=1e-13, abs=1e-15)


def test_ntk_layer_map_is_sigma_plus_sigmadot_theta_for_erf_closed_form():
    arch = Architecture(hidden_layers=2, activation="erf", sigma_w=1.5, sigma_b=0.1)
    d = derive(arch)
    expected = ("sigma_w**2*2/pi*asin(2*c/sqrt((1+2*q1)*(1+2*q2))) + sigma_b**2"
                " + sigma_w**2*4/(pi*sqrt((1+2*q1)*(1+2*q2)-4*c**2))*theta_prev")
    verdict = verify_quantity(d, "ntk_L3", expected, timeout=10)
    assert verdict.equal, verdict.message()


def test_lowered_recursion_equals_layer_kernels(rng):
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    for name in ("relu", "erf", "tanh"):  # two closed forms and one quadrature-tier activation
        arch = Architecture(hidden_layers=2, activation=name, sigma_w=1.3, sigma_b=0.2)
        recursion = lower_recursion(derive(arch))
        for pair in ((x1, x2), (x1, None)):  # cross kernels, and x = x' with its diagonal
            nngp, ntk = recursion(*pair)
            reference = layer_kernels(arch, *pair)
            for ours, theirs in zip(nngp + ntk, reference.nngp + reference.ntk):
                # one source of truth: both evaluate the same closed forms in float64
                np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-12, atol=1e-12)


def test_lowered_recursion_is_jittable_and_differentiable(rng):
    arch = Architecture(hidden_layers=2, activation="erf")
    recursion = lower_recursion(derive(arch))
    x1, x2 = jnp.asarray(rng.standard_normal((3, 2))), jnp.asarray(rng.standard_normal((2, 2)))
    out = jax.jit(lambda a: recursion(a, x2)[1][-1])(x1)
    grad = jax.grad(lambda a: jnp.sum(recursion(a, x2)[1][-1]))(x1)
    assert out.shape == (3, 2) and np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------------------------
# The DMFT equations and their lowering.


def test_mup_dmft_has_boundary_conditions_of_the_single_site_process():
    d = derive(Architecture(hidden_layers=3, activation="tanh", parameterization="mup", gamma0=0.5))
    h1, h2 = d.dmft.fields[1].rhs, d.dmft.fields[2].rhs
    nodes1, nodes2 = list(h1.walk()), list(h2.walk())
    # A^0 = 0 (no response in the first layer), A^1 present in the second
    assert not any(isinstance(n, ir.Response) for n in nodes1)
    assert ir.Response("A", 1) in nodes2
    # B^L = 0 and G^{L+1} = 1 in the last backward field; z^L carries no data index
    z_last = d.dmft.backward[3]
    assert z_last.lhs.data is None
    assert not any(isinstance(n, (ir.Response, ir.Kernel)) for n in z_last.rhs.walk())
    # K = Σ_{ℓ=0}^{L} G^{ℓ+1}(t,t) Φ^ℓ(t,t): L+1 terms
    ntk = [eq for eq in d.dmft.equations() if eq.label == "ntk"][0]
    assert len(ntk.rhs.terms) == 4


def test_lowered_field_equation_equals_naive_causal_loop(rng):
    arch = Architecture(hidden_layers=2, activation="tanh", parameterization="mup", gamma0=0.7)
    rhs = derive(arch).dmft.fields[2].rhs  # h² = u² + γ0∫ds Σ_α [A¹ + Φ¹Δ/P] g²
    P, T = 3, 7
    times = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 2.0, T - 1))])
    env = {"u2": rng.standard_normal((P, T)), "A1": rng.standard_normal((P, T, P, T)),
           "Phi1": rng.standard_normal((P, T, P, T)), "g2": rng.standard_normal((P, T)),
           "Delta": rng.standard_normal((P, T))}
    lowered = lower_expression(rhs, times=times, scalars={gamma0: 0.7, num_train: P},
                               activation=get_activation("tanh"))
    ours = np.asarray(jax.jit(lowered.fn)(env))
    expected = env["u2"].copy()
    for m in range(P):
        for i in range(T):
            for j in range(i):  # left Riemann: strictly causal
                dt = times[j + 1] - times[j]
                for a in range(P):
                    kernel = env["A1"][m, i, a, j] + env["Phi1"][m, i, a, j] * env["Delta"][a, j] / P
                    expected[m, i] += 0.7 * dt * kernel * env["g2"][a, j]
    assert lowered.axes == ("mu", "t")
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-13)  # float64 summation order


def test_causal_quadrature_rules():
    times = jnp.asarray([0.0, 0.3, 0.5, 1.2])
    left = np.asarray(CausalQuadrature("left").weights(times))
    assert np.allclose(np.triu(left), 0.0)  # strictly causal
    trap = np.asarray(CausalQuadrature("trapezoid").weights(times))
    # the trapezoid rule integrates a linear function exactly: ∫_0^t (1 + 2s) ds = t + t²
    np.testing.assert_allclose(trap @ (1 + 2 * np.asarray(times)), times + times**2, atol=1e-14)
    with pytest.raises(InputError, match="quadrature rule"):
        CausalQuadrature("midpoint")


def _two_layer_velocity_nodes(activation="tanh"):
    d = derive(Architecture(hidden_layers=1, activation=activation, parameterization="mup",
                            gamma0=0.8))
    g_def = d.dmft.backward[1]
    g_eq = [eq for eq in d.dmft.equations() if eq.label == "g1"][0]
    g_at_t = ir.rename_index(ir.rename_index(g_eq.rhs, "mu", "alpha"), "s", "t")
    dh = substitute(field_velocity(d.dmft.fields[1]), {ir.Field("g", 1, "alpha", "t"): g_at_t})
    return dh, field_velocity(g_def)


def test_lowered_two_layer_field_derivative_equals_the_solver_expression(rng):
    # L = 1: ∂t h_μ = (γ0/P) Σ_α Δ_α Φ^0_{μα} z φ'(h_α), ∂t z = (γ0/P) Σ_α Δ_α φ(h_α)
    # (dmft/solvers/_two_layer.py); derived here from d/dt of the printed integral equations.
    dh, dz = _two_layer_velocity_nodes()
    act = get_activation("tanh")
    S, P = 16, 4
    h, z = rng.standard_normal((S, P)), rng.standard_normal(S)
    delta, kx = rng.standard_normal(P), rng.standard_normal((P, P))
    scalars = {gamma0: 0.8, num_train: P}
    low_h = lower_expression(dh, times=jnp.zeros(1), scalars=scalars, activation=act)
    low_z = lower_expression(dz, times=jnp.zeros(1), scalars=scalars, activation=act)

    def ours(hi, zi):
        env = {"h1": hi[:, None], "z1": zi[None], "Delta": delta[:, None], "Kx": kx}
        return low_h(env)[:, 0], low_z(env)[0]

    dh_ours, dz_ours = jax.vmap(ours)(jnp.asarray(h), jnp.asarray(z))
    from dmft.solvers import _two_layer

    solver_velocities = getattr(_two_layer, "particle_velocities", None)
    if solver_velocities is not None:  # the solver's own function, once it is exported
        dh_ref, dz_ref = solver_velocities(act, kx, 0.8, h, z, delta)[:2]
    else:  # the solver's documented vector field, written out
        dact = np.asarray(act.dphi(h))
        dh_ref = 0.8 / P * ((dact * delta) @ kx.T) * z[:, None]
        dz_ref = 0.8 / P * (np.asarray(act.phi(h)) @ delta)
    np.testing.assert_allclose(np.asarray(dh_ours), dh_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(dz_ours), dz_ref, rtol=1e-12, atol=1e-14)


def test_lazy_limit_of_lowered_field_is_the_source(rng):
    arch = Architecture(hidden_layers=2, activation="tanh", parameterization="mup", gamma0=1.0)
    rhs = derive(arch).dmft.fields[2].rhs
    P, T = 2, 4
    env = {"u2": rng.standard_normal((P, T)), "A1": rng.standard_normal((P, T, P, T)),
           "Phi1": rng.standard_normal((P, T, P, T)), "g2": rng.standard_normal((P, T)),
           "Delta": rng.standard_normal((P, T))}
    low = lower_expression(rhs, times=jnp.linspace(0, 1, T), scalars={gamma0: 0.0, num_train: P})
    np.testing.assert_array_equal(np.asarray(low(env)), env["u2"])  # γ0 → 0: h = u exactly


def test_time_derivative_keeps_memory_terms_unevaluated():
    arch = Architecture(hidden_layers=2, activation="tanh", parameterization="mup", gamma0=1.0)
    d = derive(arch)
    # with a response A¹(t,s) the integrand depends on t: Leibniz's rule alone does not apply
    derivative = field_velocity(d.dmft.fields[2])
    assert any(isinstance(n, ir.TimeDerivative) for n in derivative.walk())


# ----------------------------------------------------------------------------------------------
# verify.


def test_verify_proves_arcsin_form_of_relu_kernel_equal_to_arccos_form():
    verdict = verify(RELU_ASIN, parse_expression(RELU_ACOS, Domain(
        (("q1", "positive"), ("q2", "positive"), ("c", "real"))).symbols()), timeout=30)
    assert verdict.status == "proven", verdict.message()
    assert verdict.max_rel_error < 1e-30  # the numeric check ran too


def test_verify_erf_missing_factor_2_gives_a_valid_counterexample():
    verdict = verify_dual("erf", "nngp", ERF_MISSING_2)
    assert verdict.status == "counterexample" and verdict.exit_code == 1
    ce = dict(verdict.counterexample)
    a, b, cc = ce["q1"], ce["q2"], ce["c"]
    assert a > 0 and b > 0 and abs(cc) <= np.sqrt(a * b)  # inside the covariance domain
    with mpmath.workdps(30):
        yours = 2 / mpmath.pi * mpmath.asin(cc / mpmath.sqrt((1 + 2 * a) * (1 + 2 * b)))
        derived = 2 / mpmath.pi * mpmath.asin(2 * cc / mpmath.sqrt((1 + 2 * a) * (1 + 2 * b)))
    # the reported values are the two expressions at the reported point (10 digits printed)
    assert ce["yours"] == pytest.approx(float(yours), rel=1e-9)
    assert ce["derived"] == pytest.approx(float(derived), rel=1e-9)
    assert "counterexample at q1=" in verdict.message()


def test_verify_reports_numeric_equality_when_no_proof_is_found():
    # a zero proof budget forces the "no proof found" answer for an expression that needs one
    verdict = verify_dual("relu", "nngp", RELU_ASIN, timeout=1e-3)
    assert verdict.status == "numeric" and verdict.exit_code == 0
    assert "numerically equal to 30 digits" in verdict.message()


def test_verify_against_a_quadrature_dual_compares_in_float64():
    # a quadrature-tier derived side (undefined K_phi evaluated by JAX): the erf closed form
    # against erf's own JAX dual agrees to float64 rounding
    derived = sp.Function("K_phi")(q1, q2, c)
    equal = verify(ERF, derived, numeric_functions={"K_phi": get_activation("erf").dual},
                   numeric_tolerance=1e-12)
    assert equal.status == "numeric" and "no proof" in equal.message()
    wrong = verify(ERF_MISSING_2, derived, numeric_functions={"K_phi": get_activation("erf").dual},
                   numeric_tolerance=1e-12)
    assert wrong.status == "counterexample"
    # tanh has no closed form: its NNGP dual is checked numerically, and it is not the identity
    assert verify_dual("tanh", "nngp", "c").status == "counterexample"


def test_verify_quantity_accepts_spec_parameters_by_name():
    arch = Architecture(hidden_layers=2, activation="relu", sigma_w=1.5, sigma_b=0.05)
    d = derive(arch)
    ok = verify_quantity(d, "ntk_L2", f"sigma_w**2*({RELU_ACOS}) + sigma_b**2 "
                                      "+ sigma_w**2*(pi - acos(c/sqrt(q1*q2)))/(2*pi)*theta_prev")
    assert ok.equal
    wrong = verify_quantity(d, "ntk_L2", f"sigma_w**2*({RELU_ACOS}) + sigma_b**2 + theta_prev")
    assert wrong.status == "counterexample"
    first = verify_quantity(d, "nngp_L1", "2.25*kx + 0.0025")
    assert first.status == "proven"


@pytest.mark.parametrize("text, message", [
    ("2/pi*asin(c/sqrt((1+2*q1)*(1+2*q2))", "unbalanced parentheses"),
    ("c +* q1", "cannot parse"),
    ("foo(c)", "unknown function 'foo'"),
    ("c*q3 + z", r"undeclared symbol\(s\) q3, z"),
    ("c.__class__", "unsupported character"),
    ("__import__('os')", "unsupported character|unknown function"),
    ("", "empty"),
])
def test_parse_errors_are_one_line_input_errors(text, message):
    with pytest.raises(InputError, match=message) as info:
        verify_dual("erf", "nngp", text)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(latex_parser_status() is None, reason="a LaTeX parser is installed")
def test_latex_input_without_its_parser_is_a_one_line_error(capsys):
    assert main(["verify", "--activation", "relu", "--expr-latex", r"\frac{c}{2}"]) == 2
    err = capsys.readouterr().err
    assert "antlr4-python3-runtime==4.11" in err and err.count("\n") == 1


@pytest.mark.skipif(latex_parser_status() is not None, reason="needs antlr4-python3-runtime 4.11")
def test_latex_input_is_parsed_with_the_known_pitfalls_fixed():
    symbols = Domain((("q1", "positive"), ("q2", "positive"), ("c", "real"),
                      ("theta_prev", "real"))).symbols()
    relu = (r"\frac{\sqrt{q_1 q_2 - c^2}}{2\pi} + \frac{c\left(\pi - \arccos\left("
            r"\frac{c}{\sqrt{q_{1} q_{2}}}\right)\right)}{2\pi}")
    parsed = parse_latex_expression(relu, symbols)  # \pi, q_{1} and c\left(…\right) fixed
    assert sp.simplify(parsed - parse_expression(RELU_ACOS, symbols)) == 0
    assert parse_latex_expression(r"\operatorname{erf}(c) \theta_{prev}", symbols) == \
        sp.erf(symbols["c"]) * symbols["theta_prev"]
    with pytest.raises(InputError, match="undeclared"):
        parse_latex_expression(r"q_3 c", symbols)


def test_unknown_quantity_names_the_known_ones():
    d = derive(Architecture(hidden_layers=1, activation="relu"))
    with pytest.raises(InputError, match=r"unknown quantity 'ntk_L5'.*ntk_L2"):
        d.quantity("ntk_L5")


def test_derived_side_with_symbols_outside_the_domain_is_an_error():
    with pytest.raises(InputError, match="outside the domain: w"):
        verify("c", sp.Symbol("w") * sp.Symbol("c"))


# ----------------------------------------------------------------------------------------------
# Printing.


@pytest.mark.parametrize("arch, residual", [
    (Architecture(hidden_layers=2, activation="relu", sigma_w=1.5, sigma_b=0.1), None),
    (Architecture(hidden_layers=3, activation="erf", parameterization="mup", gamma0=0.5), None),
    (Architecture(hidden_layers=1, activation="tanh", parameterization="mup", gamma0=2.0), None),
    (Architecture(hidden_layers=3, activation="gelu"), 1.0),
    (Architecture(hidden_layers=2, activation="x*tanh(x)", parameterization="mup"), 1.0),
])
def test_latex_document_is_balanced_and_text_names_every_layer(arch, residual):
    d = derive(arch, residual_scale=residual)
    doc = d.latex()
    assert doc.startswith(r"\documentclass") and doc.rstrip().endswith(r"\end{document}")
    assert braces_balanced(doc)
    text = str(d)
    for l in range(1, arch.hidden_layers + 2):
        assert f"Σ^({l})(x,x')" in text and f"Θ^({l})(x,x')" in text
    if arch.parameterization == "mup":
        assert "∂_t f_μ(t) = (1/P) Σ_α K_μα(t) Δ_α(t)" in text


def test_braces_balanced_detects_problems():
    assert braces_balanced(r"\frac{a}{b} \left( x \right) \{")
    assert not braces_balanced(r"\frac{a}{b")
    assert not braces_balanced(r"\left( x")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine installed")
@pytest.mark.parametrize("arch, residual", [
    (Architecture(hidden_layers=2, activation="erf", parameterization="mup"), None),
    (Architecture(hidden_layers=3, activation="relu", sigma_w=1.5, sigma_b=0.1), 1.0),
])
def test_latex_document_compiles_with_pdflatex(tmp_path, arch, residual):
    d = derive(arch, residual_scale=residual)
    (tmp_path / "eq.tex").write_text(d.latex())
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "eq.tex"],
                         cwd=tmp_path, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stdout.decode()[-2000:]


# ----------------------------------------------------------------------------------------------
# Command line (in-process).


def test_cli_verify_exit_codes(capsys):
    assert main(["verify", "--activation", "relu", "--kernel", "nngp", "--expr", RELU_ASIN]) == 0
    out = capsys.readouterr().out
    assert "parsed:" in out and "latex:" in out and "proven equal" in out
    assert main(["verify", "--activation", "erf", "--expr", ERF_MISSING_2]) == 1
    assert "counterexample at q1=" in capsys.readouterr().out
    assert main(["verify", "--activation", "erf", "--expr", "asin(c"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmft verify: error:") and err.count("\n") == 1
    assert main(["verify", "--activation", "relu", "--kernel", "ntk",
                 "--expr", "1/4 + asin(c/sqrt(q1*q2))/(2*pi)"]) == 0


def test_cli_verify_spec_quantity(tmp_path, capsys):
    spec = _write_spec(tmp_path, '[architecture]\nhidden_layers = 2\nactivation = "erf"\n'
                                 'sigma_w = 1.5\n')
    expr = "2.25*2/pi*asin(2*c/sqrt((1+2*q1)*(1+2*q2)))"
    assert main(["verify", "--spec", spec, "--quantity", "nngp_L2", "--expr", expr]) == 0
    assert main(["verify", "--spec", spec, "--quantity", "nngp_L9", "--expr", expr]) == 2
    assert "unknown quantity 'nngp_L9'" in capsys.readouterr().err
    assert main(["verify", "--spec", spec, "--quantity", "nngp_L2", "--expr", "c*w"]) == 2
    assert "undeclared symbol(s) w" in capsys.readouterr().err
    assert main(["verify", "--spec", spec, "--expr", "c"]) == 2  # --quantity missing


def test_cli_verify_document(tmp_path, capsys):
    doc = tmp_path / "d.md"
    doc.write_text(f"ok\n```verify\nactivation: erf\nexpr: {ERF}\n```\n")
    assert main(["verify", "--document", str(doc)]) == 0
    assert "1 of 1 checks passed" in capsys.readouterr().out
    doc.write_text(f"bad\n```verify\nactivation: erf\nexpr: {ERF_MISSING_2}\n```\n")
    assert main(["verify", "--document", str(doc)]) == 1
    assert main(["verify", "--document", str(tmp_path / "missing.md")]) == 2


def test_cli_verify_help_names_the_declared_symbols(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    out = capsys.readouterr().out
    assert "theta_prev" in out and "q1" in out and "kx" in out


def test_cli_derive_prints_text_and_writes_latex(tmp_path, capsys):
    spec = _write_spec(tmp_path, '[architecture]\nhidden_layers = 2\nactivation = "relu"\n'
                                 'parameterization = "mup"\ngamma0 = 0.5\n')
    assert main(["derive", spec]) == 0
    out = capsys.readouterr().out
    assert "## Forward fields" in out and "h^2_μ(t) = u^2_μ(t) + γ0 ∫_0^t ds" in out
    out_file = tmp_path / "eq.tex"
    assert main(["derive", spec, "--latex", "--out", str(out_file)]) == 0
    assert braces_balanced(out_file.read_text())
    bad = _write_spec(tmp_path, '[architecture]\nhidden_layers = 2\nactivation = "nope"\n')
    assert main(["derive", bad]) == 2
    assert "unknown activation 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Residual MLP (depth-μP branch scale α/√L) against finite-width networks at initialization.


def _residual_output_kernel_mc(arch, alpha, x, width, nets, seed):
    """E[f(x) f(x')] over `nets` random width-N residual networks (NTK parameterization)."""
    L, D = arch.hidden_layers, x.shape[1]
    act = get_activation(arch.activation)
    sw, sb, beta = arch.sigma_w, arch.sigma_b, alpha / np.sqrt(L)

    def one(key):
        keys = jax.random.split(key, 2 * L + 2)
        h = sw * x @ jax.random.normal(keys[0], (D, width)) / np.sqrt(D)
        h = h + sb * jax.random.normal(keys[1], (width,))
        for l in range(1, L):
            w = jax.random.normal(keys[2 * l], (width, width))
            b = jax.random.normal(keys[2 * l + 1], (width,))
            h = h + beta * (sw * act.phi(h) @ w / np.sqrt(width) + sb * b)
        w = jax.random.normal(keys[2 * L], (width,))
        f = sw * act.phi(h) @ w / np.sqrt(width) + sb * jax.random.normal(keys[2 * L + 1], ())
        return f[:, None] * f[None, :]

    products = jax.lax.map(one, jax.random.split(jax.random.PRNGKey(seed), nets), batch_size=200)
    products = np.asarray(products)
    return products.mean(axis=0), products.std(axis=0) / np.sqrt(nets)


def test_residual_recursion_matches_finite_width_residual_networks(rng):
    arch = Architecture(hidden_layers=3, activation="relu", sigma_w=1.4, sigma_b=0.1)
    alpha, width, nets = 1.5, 128, 2000
    x = rng.standard_normal((3, 5))
    nngp, _ = lower_recursion(derive(arch, residual_scale=alpha))(x)
    plain, _ = lower_recursion(derive(arch))(x)
    theory, wrong = np.asarray(nngp[-1]), np.asarray(plain[-1])
    mean, stderr = _residual_output_kernel_mc(arch, alpha, x, width, nets, seed=0)
    # 4 standard errors of the Monte Carlo mean plus an O(L/N) finite-width bias allowance
    tolerance = 4 * stderr + 3 * arch.hidden_layers / width * np.abs(theory)
    assert np.all(np.abs(mean - theory) < tolerance), (mean, theory, stderr)
    # the test has power: the plain (non-residual) recursion is rejected by the same bound
    assert np.any(np.abs(mean - wrong) > tolerance)


def test_residual_layer_map_is_the_depth_mup_recursion():
    arch = Architecture(hidden_layers=4, activation="erf", sigma_w=1.2)
    d = derive(arch, residual_scale=1.0)
    expected = f"c + (1**2/4)*(1.44*{ERF})"  # Σ^l + (α²/L) σ_w² K_erf, σ_b = 0
    assert verify_quantity(d, "nngp_L3", expected).equal
    assert verify_quantity(d, "nngp_L3", f"c + 1.44*{ERF}").status == "counterexample"
    with pytest.raises(InputError, match="residual_scale"):
        derive(arch, residual_scale=-1.0)


def test_residual_mup_dmft_lazy_ntk_equals_the_residual_recursion(rng):
    # γ0 → 0 in the printed residual single-site process: h static, z = r, so the printed
    # backward rule g^l = g^{l+1} + β φ'(h^l) r^l gives G^l = G^{l+1} (1 + β² Ġ^l), G^L = Ġ^L;
    # the printed NTK equation (with its β² branch terms) must then be the residual Θ^(L+1).
    L, alpha = 3, 1.5
    arch = Architecture(hidden_layers=L, activation="erf", parameterization="mup", gamma0=1.0)
    d = derive(arch, residual_scale=alpha)
    x = rng.standard_normal((4, 3))
    nngp, ntk = lower_recursion(d)(x)
    act, beta2 = get_activation("erf"), alpha**2 / L
    phi, gdot = {}, {}
    for l in range(1, L + 1):
        sigma = np.asarray(nngp[l - 1])
        q = np.diag(sigma)
        phi[l] = np.asarray(act.dual(q[:, None], q[None, :], sigma))
        gdot[l] = np.asarray(act.dual_derivative(q[:, None], q[None, :], sigma))
    g = {L: gdot[L]}
    for l in range(L - 1, 0, -1):
        g[l] = g[l + 1] * (1 + beta2 * gdot[l])
    env = {f"Phi{l}": phi[l][:, None, :, None] for l in phi}
    env.update({f"G{l}": g[l][:, None, :, None] for l in g})
    env["Kx"] = x @ x.T / x.shape[1]
    ntk_eq = [eq for eq in d.dmft.equations() if eq.label == "ntk"][0]
    scalars = {ir.residual_alpha: alpha, ir.num_hidden: L}
    lowered = lower_expression(ntk_eq.rhs, times=jnp.zeros(1), scalars=scalars)
    ours = np.asarray(lowered(env))[:, 0, :]
    # both sides are float64 evaluations of closed forms
    np.testing.assert_allclose(ours, np.asarray(ntk[-1]), rtol=1e-12, atol=1e-12)
