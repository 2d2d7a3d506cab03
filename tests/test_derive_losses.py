"""``derive`` and ``dmft derive`` honour ``[training] loss`` and the number of outputs
(docs/conventions.md §2b, derivations/multi_output_dmft.md): cross-entropy prints the error
signal Δ = y − softmax(f), the loss, the kernel ODE / step recursion in place of the MSE closed
forms and the output-index structure of the μP process; the printed cross-entropy step
recursion, lowered, is the lazy solver's GD / SGD; MSE output is unchanged."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from dmft import Architecture, Data, InputError, Spec, Training, solve_lazy
from dmft.symbolic import braces_balanced, derive, eta0, lower_expression, num_train

from _derive_helpers import equations, gd_training
from conftest import one_line_error, run_dmft
from test_derive_discrete import FLOW_CASES, FLOW_SHA256, _lazy_kernels, assert_digests

CE = "cross_entropy"
SOFTMAX_TEXT = "softmax(f_μ("
SOFTMAX_LATEX = r"\operatorname{softmax}"
LOSS_TEXT = "(1/P) Σ_μ [logsumexp(f_μ) − y_μ · f_μ]"
# a control word run into the next letter (\langlez): an undefined macro for LaTeX
GLUED_MACRO = re.compile(r"\\(langle|rangle|cdot|Delta|Phi|delta|otimes|ell|alpha|mu|star)"
                         r"[A-Za-z]")
MSE_CLOSED_FORMS = ("exp(−K t/P)", "(I − ((−η0/P) K + I)^k)", "e^{-K t/P}")


def _rule(optimizer, loss=CE, eta=0.25, steps=1):
    if optimizer == "flow":
        return Training((0.0, 1.0), loss=loss)
    extra = {"batch_size": 2, "seed": 5} if optimizer == "sgd" else {}
    return gd_training(eta, steps, optimizer=optimizer, loss=loss, **extra)


# ----------------------------------------------------------------------------------------------
# Printing.


@pytest.mark.parametrize("parameterization", ["ntk", "mup"])
@pytest.mark.parametrize("optimizer", ["flow", "gd", "sgd"])
def test_cross_entropy_prints_the_softmax_error_signal_and_no_mse_closed_form(parameterization,
                                                                              optimizer):
    d = derive(Architecture(2, "tanh", parameterization), training=_rule(optimizer), outputs=3)
    text, latex = str(d), d.latex()
    eqs = equations(d)
    assert SOFTMAX_TEXT in eqs["error_signal"].text() and "y_μc −" in eqs["error_signal"].text()
    assert SOFTMAX_LATEX in eqs["error_signal"].latex()
    assert LOSS_TEXT.replace("(1/P)", "(1/B)").replace("Σ_μ", "Σ_(μ ∈ batch k)") in text \
        if optimizer == "sgd" else LOSS_TEXT in text
    assert "y − softmax(f)" in text and "C = 3 classes" in text
    assert "Δ = y − f," not in text and "Δ = y − f;" not in text  # no MSE convention left
    assert "lazy_f" not in eqs and "lazy_test" not in eqs
    for form in MSE_CLOSED_FORMS:
        assert form not in text and form not in latex
    assert braces_balanced(latex) and "[U+" not in latex and SOFTMAX_LATEX in latex
    assert not GLUED_MACRO.search(latex), GLUED_MACRO.search(latex)
    if parameterization == "ntk":
        label = "lazy_flow" if optimizer == "flow" else "lazy_step"
        assert "Σ_α K_μα" in eqs[label].text() and "Δ_αc" in eqs[label].text()
        assert "no closed form" in eqs[label].note
        assert "K_⋆α" in eqs[label + "_test"].text()
    else:
        structure = eqs["outputs"]
        assert "Σ_c Δ_αc" in structure.text() and "δ_cd" in structure.note
        assert "z^l_μc" in structure.note and "f_μc = γ0⁻¹ ⟨ z^L_c φ(h^L_μ) ⟩" in structure.note
        assert "f_μc" in eqs["readout"].text() and "z^2_c" in eqs["readout"].text()


def test_cross_entropy_without_a_class_count_prints_c_classes():
    d = derive(Architecture(1, "relu", "ntk"), training=_rule("gd"))
    assert "C classes" in str(d) and SOFTMAX_TEXT in str(d)
    named = derive(Architecture(1, "relu", "ntk"),
                   training=Training((0.0,), loss=CE, num_classes=4))
    assert "C = 4 classes" in str(named)


@pytest.mark.parametrize("name", sorted(FLOW_CASES))
def test_mse_with_one_output_is_byte_identical(name):
    arch, residual = FLOW_CASES[name]
    d = derive(arch, residual_scale=residual, training=Training(loss="mse"), outputs=1)
    assert_digests(d, FLOW_SHA256[name])


# SHA-256 of str(derive(...)) and derive(...).latex() at commit a038e1c (before the loss entered
# derive), SymPy 1.14.0.
_GD, _SGD = gd_training(0.25, 2), gd_training(0.25, 2, optimizer="sgd", batch_size=2, seed=3)
DISCRETE_CASES = {
    "ntk_relu_L2_gd": (Architecture(2, "relu", "ntk", sigma_w=1.5, sigma_b=0.05), None, _GD),
    "ntk_erf_L1_sgd": (Architecture(1, "erf", "ntk"), None, _SGD),
    "mup_tanh_L2_gd": (Architecture(2, "tanh", "mup", gamma0=1.0), None, _GD),
    "mup_erf_L3_res_sgd": (Architecture(3, "erf", "mup", gamma0=0.5), 1.0, _SGD),
}
DISCRETE_SHA256 = {
    "ntk_relu_L2_gd": ("7503315d48e2d24504d572ebc79f8292e19e0d828b7032bd5d8460131f63d3ae",
                       "b6394f06b631d994a31bb28c01c1c60eb17e6fadbfa279cdf47c012e73fe497c"),
    "ntk_erf_L1_sgd": ("490ece9104641b3864b0f3579ce8e05ef20f4af48e1026242ff98f1eb4ac9acc",
                       "3f0d67e787533f82d103435273a6b1b74988506a404f5c92265e31b5a92cd375"),
    "mup_tanh_L2_gd": ("6411ac0a3eaaeaeecbaa3d6f08956174f06e1281c45835589d466c7f902b44c4",
                       "44ca63f7e5034196f2f1e9ea5229ba0cabd03e741ba76a1a6f17023053df948b"),
    "mup_erf_L3_res_sgd": ("ab765198a17274fafdbe193b5406bafd894c098999a1d75e47d53bab8fd35f37",
                           "fc0b6657af376e6ac7ab322675e275409a2120996c1e5ab75ae2285b030a6a10"),
}


@pytest.mark.parametrize("name", sorted(DISCRETE_CASES))
def test_mse_discrete_rules_are_byte_identical(name):
    arch, residual, training = DISCRETE_CASES[name]
    d = derive(arch, residual_scale=residual, training=training)
    assert str(d) == str(derive(arch, residual_scale=residual, training=training, outputs=1))
    assert "softmax" not in str(d) and "outputs" not in equations(d)
    assert_digests(d, DISCRETE_SHA256[name])


@pytest.mark.parametrize("parameterization", ["ntk", "mup"])
@pytest.mark.parametrize("optimizer", ["flow", "gd"])
def test_mse_with_several_outputs_keeps_the_closed_form_and_states_the_index(parameterization,
                                                                              optimizer):
    d = derive(Architecture(2, "erf", parameterization), training=_rule(optimizer, "mse"),
               outputs=2)
    text, eqs = str(d), equations(d)
    assert "softmax" not in text and "Σ_c (f_μc − y_μc)²" in text and "C = 2 outputs" in text
    if parameterization == "ntk" or optimizer == "gd":  # μP flow prints no lazy closed form
        assert "y is (P, C), C = 2" in eqs["lazy_f"].note
    assert braces_balanced(d.latex()) and "[U+" not in d.latex()
    assert not GLUED_MACRO.search(d.latex()), GLUED_MACRO.search(d.latex())
    if parameterization == "mup":
        assert "G^(L+1)(c, d) = δ_cd" in eqs["outputs"].note
        if optimizer == "gd":
            assert eqs["error_signal"].text().startswith("Δ_μc(k) = y_μc − f_μc(k)")


def test_derive_refuses_bad_output_counts():
    arch = Architecture(1, "relu")
    one_line_error(lambda: derive(arch, training=_rule("gd"), outputs=1), "cross_entropy", "2")
    one_line_error(lambda: derive(arch, outputs=0), "outputs")
    one_line_error(lambda: derive(arch, outputs=2.0), "outputs")
    one_line_error(lambda: derive(arch, training=Training(loss=CE, num_classes=3), outputs=4),
                   "num_classes")


# ----------------------------------------------------------------------------------------------
# The printed cross-entropy step recursion against the lazy solver.


def _labelled_data(seed, num_train=6, num_test=2, input_dim=5, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, input_dim))
    labels = np.argmax(x @ rng.standard_normal((input_dim, classes)), axis=1)
    labels[:classes] = np.arange(classes)  # every class present
    return Data(x[:num_train], labels[:num_train], x_test=x[num_train:],
                y_test=labels[num_train:])


def _softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def march_printed_cross_entropy(eqs, kernel, cross, y, omega, eta, error=None):
    """f(k) (train (K+1, P, C), test (K+1, Q, C)) by iterating the printed steps
    f(k+1) = f(k) + (η0/P) Σ_α K_μα ω_α(k) Δ_αc(k) with Δ = y − softmax(f) (eq error_signal),
    or Δ = ``error(f)``."""
    if error is None:
        assert eqs["error_signal"].text().startswith("Δ_μc(k) = y_μc − softmax(f_μ(k))_c")
        error = lambda f_k: y - _softmax(f_k)  # noqa: E731
    p, num_steps = y.shape[0], omega.shape[0]
    scalars = {eta0: eta, num_train: p}
    train = lower_expression(eqs["lazy_step"].rhs, times=jnp.zeros(1), scalars=scalars)
    test = lower_expression(eqs["lazy_step_test"].rhs, times=jnp.zeros(1), scalars=scalars)
    assert train.axes == ("mu", "c", "k") and test.axes == ("star", "c", "k")
    f, f_test = np.zeros(y.shape), np.zeros((cross.shape[0], y.shape[1]))
    out, out_test = [f], [f_test]
    for k in range(num_steps):
        env = {"Delta": error(f)[:, :, None], "omega": omega[k][:, None], "K": kernel}
        f_test = np.asarray(test({**env, "f": f_test[:, :, None], "K": cross}))[:, :, 0]
        f = np.asarray(train({**env, "f": f[:, :, None]}))[:, :, 0]
        out.append(f)
        out_test.append(f_test)
    return np.array(out), np.array(out_test)


@pytest.mark.parametrize("optimizer,seed", [("gd", 0), ("gd", 1), ("gd", 2), ("sgd", 3)])
def test_printed_cross_entropy_step_recursion_equals_the_lazy_solver(optimizer, seed):
    arch = Architecture(2, "erf", "ntk", sigma_w=1.3)
    data = _labelled_data(seed)
    kernel, cross = _lazy_kernels(arch, data)
    # the softmax Hessian has eigenvalues <= 1/2: steps far past the MSE edge 2P/λ_max stay stable
    eta, steps = 3.0 * 6 / np.linalg.eigvalsh(kernel)[-1], 12
    training = _rule(optimizer, eta=eta, steps=steps)
    spec = Spec(arch, data, training)
    solution = solve_lazy(spec)
    omega = np.asarray(training.dynamics.batch_weights(6, steps))
    y = np.asarray(spec.data.y_train)  # one-hot rows (P, C)
    derivation = derive(arch, training=training, outputs=y.shape[1])
    f, f_test = march_printed_cross_entropy(equations(derivation), kernel, cross, y, omega, eta)
    np.testing.assert_allclose(f, solution.f_train, atol=1e-10, rtol=0)
    np.testing.assert_allclose(f_test, solution.f_test, atol=1e-10, rtol=0)
    assert np.abs(f[-1]).max() > 0.5  # the run moved
    # the same printed step with the MSE error signal y − f is visibly off: the check sees Δ
    wrong, _ = march_printed_cross_entropy(equations(derivation), kernel, cross, y, omega, eta,
                                           error=lambda f_k: y - f_k)
    assert np.abs(wrong[3] - solution.f_train[3]).max() > 1e-2


# ----------------------------------------------------------------------------------------------
# Command line.


def _spec_file(tmp_path, training, parameterization="ntk", labels=(0, 1, 2, 1)):
    arch = (f'[architecture]\nhidden_layers = 1\nactivation = "tanh"\nparameterization = '
            f'"{parameterization}"\n')
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((len(labels), 3)))
    np.save(tmp_path / "y.npy", np.asarray(labels))
    path = tmp_path / "spec.toml"
    path.write_text(arch + '[data]\nx_train = "x.npy"\ny_train = "y.npy"\n'
                    + "[training]\ntimes = [0.0, 0.5]\n" + training)
    return str(path)


def test_cli_derive_of_a_cross_entropy_spec_prints_the_softmax_line(tmp_path):
    spec = _spec_file(tmp_path, 'optimizer = "gd"\nlearning_rate = 0.25\nloss = "cross_entropy"\n')
    result = run_dmft("derive", spec)
    assert result.returncode == 0, result.stderr
    assert "Δ_μc(k) = y_μc − softmax(f_μ(k))_c" in result.stdout
    assert "C = 3 classes" in result.stdout  # from the labels 0, 1, 2
    assert "(I − ((−η0/P) K + I)^k)" not in result.stdout
    assert result.stdout == str(derive(Architecture(1, "tanh", "ntk"),
                                       training=gd_training(0.25, loss=CE), outputs=3))
    latex = run_dmft("derive", spec, "--latex")
    assert latex.returncode == 0 and SOFTMAX_LATEX in latex.stdout


def test_cli_derive_loss_override(tmp_path):
    spec = _spec_file(tmp_path, "", parameterization="mup")
    plain = run_dmft("derive", spec)
    assert plain.returncode == 0 and "softmax" not in plain.stdout
    assert plain.stdout == str(derive(Architecture(1, "tanh", "mup")))
    result = run_dmft("derive", spec, "--loss", "cross_entropy")
    assert result.returncode == 0, result.stderr
    assert "Δ_μc(t) = y_μc − softmax(f_μ(t))_c" in result.stdout
    assert "Σ_c Δ_αc(t) g^ℓ_αc(t)" in result.stdout
    bad = run_dmft("derive", spec, "--loss", "hinge")
    assert bad.returncode == 2 and "training.loss must be one of" in bad.stderr


def test_cli_derive_reads_several_mse_outputs(tmp_path):
    spec = _spec_file(tmp_path, "")
    np.save(tmp_path / "y.npy", np.ones((4, 2)))
    result = run_dmft("derive", spec)
    assert result.returncode == 0 and "C = 2 outputs" in result.stdout
    (tmp_path / "y.npy").unlink()  # missing data files play no part: one output is printed
    missing = run_dmft("derive", spec)
    assert missing.returncode == 0
    assert missing.stdout == str(derive(Architecture(1, "tanh", "ntk")))


def test_cli_derive_refuses_an_invalid_loss_as_dmft_run_does(tmp_path):
    spec = _spec_file(tmp_path, 'loss = "hinge"\n', labels=(0.5, -0.2, 1.0, 0.3))
    derived, ran = run_dmft("derive", spec), run_dmft("run", spec, "--out", tmp_path / "out")
    assert derived.returncode == ran.returncode == 2
    message = derived.stderr.strip().removeprefix("dmft derive: error: ")
    assert "\n" not in message and "training.loss" in message
    assert message == ran.stderr.strip().removeprefix("dmft run: error: ")


def test_training_loss_reaches_derive_as_an_input_error_for_bad_types():
    with pytest.raises(InputError):
        derive(Architecture(1, "relu"), training=Training(loss=CE), outputs="3")
