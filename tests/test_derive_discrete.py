"""The discrete-step (GD / SGD) equations that ``dmft derive`` prints are the ones the solvers
integrate: the printed lazy closed form and step recursion, lowered to JAX, against the lazy
solver; the printed step-sum DMFT of the two-layer family, evaluated on samples, against the
moment solvers (φ = identity, moment-matched samples) and against a width-S network trained by
GD with autodiff (tanh, the samples being its neurons). Plus: the flow output is unchanged, text
and LaTeX print the step sum, and ``dmft derive`` reads the spec's training rule."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from dmft import Architecture, InputError, Spec, Training, solve_lazy
from dmft.activations import get_activation
from dmft.solvers import DeepLinearDMFT, TwoLayerMoments
from dmft.symbolic import (
    ErrorSignal, MatrixForm, Mul, Scalar, StepSum, braces_balanced, derive, eta0, gamma0,
    lower_expression, lower_matrix_form, lower_recursion, num_train, step_k,
)

from _derive_helpers import (
    at_step, equations, gd_training, lower_on_steps, march_printed_deep_linear, printed_average,
    small_data,
)
from conftest import one_line_error, run_dmft


# ----------------------------------------------------------------------------------------------
# Flow: byte-identical to the output before the discrete rules existed.

FLOW_CASES = {
    "ntk_relu_L2": (Architecture(2, "relu", "ntk", sigma_w=1.5, sigma_b=0.05), None),
    "mup_tanh_L1": (Architecture(1, "tanh", "mup", gamma0=1.0), None),
    "mup_linear_L3": (Architecture(3, "linear", "mup", gamma0=0.5), None),
    "mup_erf_L3_res": (Architecture(3, "erf", "mup", gamma0=1.0), 1.0),
    "ntk_erf_L3_res": (Architecture(3, "erf", "ntk", sigma_w=1.2, sigma_b=0.1), 0.7),
}
# SHA-256 of str(derive(...)) and derive(...).latex() at commit 14e6bb1 (before `training=`),
# SymPy 1.14.0, whose printers make the text.
FLOW_SHA256 = {
    "ntk_relu_L2": ("bac08d4489659328f22f6847d86c690b070a5f1392a19eb86a07d95f26495006",
                    "aaad944067e6b18c0152b3155237278c1954d49ff9c181554ed32a416b3a2489"),
    "mup_tanh_L1": ("62793a2499047a9af068f0f2a7b73e9d34f5f3b6509d757611f0e7cbfc030704",
                    "07a459f0c999a40dae83424c64be079b9b026844fc23a267b509a46cf522fdef"),
    "mup_linear_L3": ("c1375f9ffe5341fc7d47b9965dd39fb3d415985a3c40682f980fb6c25cd45e84",
                      "0395f2ea7d760a5ed346c40354f9507fb8d172efb3f474e575433afee257d293"),
    "mup_erf_L3_res": ("a84e5ec25a66b2298f3dc81d06b293869885d23a4e752655037b7b7766d95ddf",
                       "2c08d536c721a72e926d4735eb377638896a543bebd894cc7d1f9b7ceed3379e"),
    "ntk_erf_L3_res": ("73ba686931090cf211a49a026d1b06d05a9e48435beb166d2676d53c261bbaa0",
                       "f4afd3dc12db64eca6bf7e8b09aa79555f30afc8d4e2ff4a749c97f6ce12e71b"),
}


def assert_digests(d, expected: tuple[str, str]) -> None:
    """SHA-256 of the text and the LaTeX of derivation `d` equal the recorded ones (skipped on
    another SymPy than the 1.14.0 whose printing they record)."""
    if sp.__version__ != "1.14.0":
        pytest.skip(f"the recorded digests are SymPy 1.14.0's printing, this is {sp.__version__}")
    assert tuple(hashlib.sha256(t.encode()).hexdigest() for t in (str(d), d.latex())) == expected


@pytest.mark.parametrize("name", sorted(FLOW_CASES))
def test_flow_output_is_byte_identical(name):
    arch, residual = FLOW_CASES[name]
    plain = derive(arch, residual_scale=residual)
    for training in (None, Training()):
        d = derive(arch, residual_scale=residual, training=training)
        assert str(d) == str(plain) and d.latex() == plain.latex()
        assert d.training is None
    assert_digests(plain, FLOW_SHA256[name])


# ----------------------------------------------------------------------------------------------
# Printing.


@pytest.mark.parametrize("parameterization", ["mup", "ntk"])
@pytest.mark.parametrize("optimizer", ["gd", "sgd"])
def test_text_and_latex_print_the_discrete_rule(parameterization, optimizer):
    rule = {"batch_size": 2, "seed": 7} if optimizer == "sgd" else {}
    d = derive(Architecture(2, "tanh", parameterization),
               training=gd_training(0.25, optimizer=optimizer, **rule))
    text, latex = str(d), d.latex()
    assert f"training: {optimizer}, learning rate η0 = 0.25" in text
    assert "∫" not in text.split("## Dual activation")[1]  # no time integral left
    assert braces_balanced(latex) and "[U+" not in latex
    if parameterization == "mup":
        assert "h^2_μ(k) = u^2_μ(k) + γ0 η0 Σ_{s<k} Σ_α [A^1_μα(k,s)" in text
        assert r"\eta_0\sum_{s<k}" in latex and r"\eta_0\sum_{s\le k}" in latex
        assert "f_μ(k) = (1/γ0) ⟨z^2(k) φ(h^2_μ(k))⟩" in text
    else:
        assert "f_μ(k+1) = f_μ(k) + (η0/P) Σ_α K_μα" in text
    assert ("ω_α(s) Δ_α(s)" in text or "ω_α(k) Δ_α(k)" in text) == (optimizer == "sgd")
    assert ("numpy.random.default_rng(seed = 7)" in text) == (optimizer == "sgd")
    assert ("[(I − ((−η0/P) K + I)^k) y]_μ" in text) == (optimizer == "gd")


def test_step_sum_node_prints_and_lowers_a_strict_left_sum():
    body = Mul((Scalar(sp.Integer(2)), ErrorSignal("alpha", "s")))
    node = StepSum("s", "k", body)
    assert node.text() == "η0 Σ_{s<k} 2 Δ_α(s)"
    assert node.latex() == r"\eta_0\sum_{s<k}\, 2\,\Delta_{\alpha}(s)"
    delta = np.arange(6.0).reshape(2, 3)  # (α, s)
    lowered = lower_expression(node, times=jnp.zeros(3), scalars={eta0: 0.5})
    assert lowered.axes == ("k", "alpha")
    expected = 0.5 * 2 * np.stack([delta[:, :k].sum(axis=1) for k in range(3)])  # (k, α)
    np.testing.assert_array_equal(np.asarray(lowered({"Delta": delta})), expected)
    inclusive = lower_expression(StepSum("s", "k", body, inclusive=True), times=jnp.zeros(3),
                                 scalars={eta0: 0.5})
    np.testing.assert_array_equal(np.asarray(inclusive({"Delta": delta})),
                                  expected + 0.5 * 2 * delta.T)


# ----------------------------------------------------------------------------------------------
# NTK parameterization: the printed lazy closed form and step recursion against the lazy solver.


def _lazy_kernels(arch, data):
    """K (P, P) and K_⋆X (Q, P) from the printed recursion, lowered (x over train ∪ test)."""
    x = np.concatenate([data.x_train, data.x_test])
    _, ntk = lower_recursion(derive(arch))(x)
    full, p = np.asarray(ntk[-1]), data.x_train.shape[0]
    return full[:p, :p], full[p:, :p]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_printed_lazy_gd_closed_form_equals_the_lazy_solver(seed):
    arch = Architecture(2, "relu", "ntk", sigma_w=1.5, sigma_b=0.1)
    data = small_data(seed)
    kernel, cross = _lazy_kernels(arch, data)
    p = kernel.shape[0]
    eta = 1.7 * p / np.linalg.eigvalsh(kernel)[-1]  # near the edge of stability
    steps = 12
    solution = solve_lazy(Spec(arch, data, gd_training(eta, steps)))
    eqs = equations(derive(arch, training=gd_training(eta)))
    assert isinstance(eqs["lazy_f"].rhs, MatrixForm) and isinstance(eqs["lazy_test"].rhs,
                                                                   MatrixForm)
    env = {"K": kernel, "y": data.y_train[:, None], "K_starX": cross}
    for k in range(steps + 1):
        scalars = {eta0: eta, num_train: p, step_k: k}
        f_train = lower_matrix_form(eqs["lazy_f"].rhs, env, scalars)[:, 0]
        f_test = lower_matrix_form(eqs["lazy_test"].rhs, env, scalars)[:, 0]
        np.testing.assert_allclose(f_train, solution.f_train[k], atol=1e-10, rtol=0)
        np.testing.assert_allclose(f_test, solution.f_test[k], atol=1e-10, rtol=0)


def _march_lazy_steps(eqs, kernel, cross, y, omega, eta):
    """f(k) over train and test by iterating the printed step equations f(k+1) = rhs."""
    p, num_steps = y.size, omega.shape[0]
    times = jnp.zeros(1)
    scalars = {eta0: eta, num_train: p}
    train = lower_expression(eqs["lazy_step"].rhs, times=times, scalars=scalars)
    test = lower_expression(eqs["lazy_step_test"].rhs, times=times, scalars=scalars)
    f, f_test, out = np.zeros(p), np.zeros(cross.shape[0]), []
    for k in range(num_steps + 1):
        out.append((f, f_test))
        if k == num_steps:
            break
        env = {"Delta": (y - f)[:, None], "omega": omega[k][:, None], "K": kernel}
        f_next = np.asarray(train({**env, "f": f[:, None]}))[:, 0]
        f_test = np.asarray(test({**env, "f": f_test[:, None], "K": cross}))[:, 0]
        f = f_next
    return np.array([a for a, _ in out]), np.array([b for _, b in out])


@pytest.mark.parametrize("optimizer,seed", [("gd", 3), ("sgd", 4), ("sgd", 5)])
def test_printed_lazy_step_recursion_equals_the_lazy_solver(optimizer, seed):
    arch = Architecture(2, "erf", "ntk", sigma_w=1.3)
    data = small_data(seed, num_train=6)
    kernel, cross = _lazy_kernels(arch, data)
    eta, steps = 1.2 * 6 / np.linalg.eigvalsh(kernel)[-1], 10
    rule = {"optimizer": optimizer, **({"batch_size": 2, "seed": seed} if optimizer == "sgd"
                                       else {})}
    training = gd_training(eta, steps, **rule)
    solution = solve_lazy(Spec(arch, data, training))
    omega = training.dynamics.batch_weights(6, steps)
    f, f_test = _march_lazy_steps(equations(derive(arch, training=training)), kernel, cross,
                                  data.y_train, np.asarray(omega), eta)
    np.testing.assert_allclose(f, solution.f_train, atol=1e-10, rtol=0)
    np.testing.assert_allclose(f_test, solution.f_test, atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------------------------
# μP, two-layer family: the printed step sums evaluated on samples of the single-site process.


def march_printed_two_layer(derivation, kx, y, omega, eta, u, r, num_steps):
    """f(k) (train ∪ test) and K(k) (train) from the printed L = 1 step equations.

    The samples u (S, Q) and r (S,) are the sources u^1, r^1; at step k the printed
    h^1(k), z^1(k), g^1(k) are evaluated from the stored steps s < k, f(k) from the printed
    read-out, Δ(k) = y − f(k). Entries not computed yet hold large random numbers, so a sum that
    reached a step it must not see would be visibly wrong.
    """
    arch = derivation.architecture
    p, q, samples = y.size, kx.shape[0], u.shape[0]
    activation = get_activation(arch.activation)
    scalars = {gamma0: arch.gamma0, eta0: eta, num_train: p}
    eqs = equations(derivation)
    h_fn, z_fn, g_fn = (lower_on_steps(eqs[n].rhs, num_steps, scalars, activation)
                        for n in ("h1", "z1", "g1"))
    readout = printed_average(eqs["readout"].rhs, num_steps, scalars, activation)
    junk = np.random.default_rng(99)
    h, z, g, delta = (jnp.asarray(1e3 * junk.standard_normal(shape)) for shape in (
        (samples, q, num_steps + 1), (samples, num_steps + 1), (samples, q, num_steps + 1),
        (p, num_steps + 1)))
    shared = {"Kx": kx[:, :p], "omega": jnp.asarray(omega[: num_steps + 1].T)}
    f = []
    for k in range(num_steps + 1):
        env = {**shared, "Delta": delta}
        h_k = jax.vmap(lambda u_i, g_i: at_step(h_fn, k)({**env, "u1": u_i, "g1": g_i[:p]}))(u, g)
        h = h.at[:, :, k].set(h_k)
        z_k = jax.vmap(lambda r_i, h_i: at_step(z_fn, k)({**env, "r1": r_i, "h1": h_i[:p]}))(r, h)
        z = z.at[:, k].set(z_k)
        g_k = jax.vmap(lambda h_i, z_i: at_step(g_fn, k)({"h1": h_i, "z1": z_i}))(h, z)
        g = g.at[:, :, k].set(g_k)
        f_k = at_step(readout, k)(env, {"z1": z, "h1": h})
        f.append(f_k)
        delta = delta.at[:, k].set(y - f_k[:p])
    phi = printed_average(eqs["Phi1"].rhs, num_steps, scalars, activation)
    gg = printed_average(eqs["G1"].rhs, num_steps, scalars, activation)
    assert phi.axes == gg.axes == ("mu", "k", "alpha", "s")
    ntk = lower_on_steps(eqs["ntk"].rhs, num_steps, scalars, activation)
    values = ntk({"Phi1": phi.fn({}, {"h1": h[:, :p]}), "G1": gg.fn({}, {"g1": g[:, :p]}),
                  "Kx": kx[:p, :p]})
    order = [ntk.axes.index(a) for a in ("k", "mu", "alpha")]
    return np.asarray(jnp.stack(f)), np.transpose(np.asarray(values), order)


def moment_matched_sources(kx, samples, seed):
    """S samples (u, r) whose empirical second moments are exactly Φ^0 = K^x, 0 and 1."""
    q = kx.shape[0]
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((samples, q + 1)))
    white = np.sqrt(samples) * basis  # whiteᵀ white / S = I
    return white[:, :q] @ np.linalg.cholesky(kx).T, white[:, q]


def _two_layer_problem(seed, optimizer, ratio=1.5, steps=8, gamma0_value=1.3):
    data = small_data(seed, num_train=5, num_test=2, input_dim=8)
    x = np.concatenate([data.x_train, data.x_test])
    kx = x @ x.T / x.shape[1]
    k0 = 2 * kx[:5, :5]  # the lazy NTK of a linear two-layer network: K = Φ^0 + Φ^0
    eta = ratio * 5 / np.linalg.eigvalsh(k0)[-1]
    rule = {"optimizer": optimizer, **({"batch_size": 2, "seed": seed} if optimizer == "sgd"
                                       else {})}
    training = gd_training(eta, steps, **rule)
    arch = Architecture(1, "linear", "mup", gamma0=gamma0_value)
    return Spec(arch, data, training), kx


@pytest.mark.parametrize("optimizer,seed", [("gd", 0), ("gd", 1), ("sgd", 2), ("sgd", 3)])
def test_printed_two_layer_step_sums_equal_the_moment_solvers(optimizer, seed):
    # SGD's batch weights P/B = 2.5 scale each step's kernel up: a smaller η0 keeps it stable
    spec, kx = _two_layer_problem(seed, optimizer, ratio=1.5 if optimizer == "gd" else 0.5)
    training, steps = spec.training, len(spec.training.times) - 1
    omega = np.asarray(training.dynamics.batch_weights(5, steps + 1))
    u, r = moment_matched_sources(kx, 64, seed)
    f, ntk = march_printed_two_layer(derive(spec.architecture, training=training), kx,
                                     spec.data.y_train, omega, training.learning_rate, u, r, steps)
    for solution in (TwoLayerMoments().solve(spec), DeepLinearDMFT().solve(spec)):
        reference = np.concatenate([solution.f_train, solution.f_test], axis=1)
        # both sides are exact maps in float64 over 8 steps on O(1) values: round-off only
        np.testing.assert_allclose(f, reference, atol=1e-11, rtol=0)
        np.testing.assert_allclose(ntk, solution.ntk, atol=1e-10, rtol=0)
    assert np.abs(f[-1, :5] - f[1, :5]).max() > 0.1  # the run moved: the check has content


def gd_width_s_network(x, y, omega, gamma0_value, eta, weights, readout, num_steps, activation):
    """f after each step of a width-S μP network f = a·φ(W x/√D)/(γ0 S) trained by
    θ ← θ − η0 γ0² S ∇𝓛_k, 𝓛_k = (1/2P) Σ_μ ω_kμ (f_μ − y_μ)², gradients by autodiff."""
    p, d, width = y.size, x.shape[1], readout.size
    phi = get_activation(activation).phi

    def forward(params, points):
        w, a = params
        return phi(points @ w.T / np.sqrt(d)) @ a / (gamma0_value * width)

    def loss(params, weights_k):
        return 0.5 * jnp.sum(weights_k * (forward(params, x[:p]) - y) ** 2) / p

    params, out = (jnp.asarray(weights), jnp.asarray(readout)), []
    for k in range(num_steps + 1):
        out.append(forward(params, x))
        grads = jax.grad(loss)(params, omega[k])
        params = tuple(v - eta * gamma0_value**2 * width * dv for v, dv in zip(params, grads))
    return np.asarray(jnp.stack(out))


@pytest.mark.parametrize("optimizer,seed", [("gd", 6), ("sgd", 7)])
def test_printed_tanh_step_sums_are_a_width_s_network_trained_by_gd(optimizer, seed):
    # For L = 1 the sources are static and there are no responses: S samples (u_i, r_i) =
    # (W_i x/√D, a_i) are the neurons of a width-S network, and the printed step sums are its
    # GD update exactly (derivations/finite_step_dmft.md, eq:gd_particles).
    spec, kx = _two_layer_problem(seed, optimizer, ratio=1.2, gamma0_value=0.8)
    arch = Architecture(1, "tanh", "mup", gamma0=0.8)
    training, steps = spec.training, len(spec.training.times) - 1
    x = np.concatenate([spec.data.x_train, spec.data.x_test])
    rng = np.random.default_rng(seed)
    weights, readout = rng.standard_normal((128, x.shape[1])), rng.standard_normal(128)
    omega = np.asarray(training.dynamics.batch_weights(5, steps + 1))
    f, _ = march_printed_two_layer(derive(arch, training=training), kx, spec.data.y_train, omega,
                                   training.learning_rate, weights @ x.T / np.sqrt(x.shape[1]),
                                   readout, steps)
    network = gd_width_s_network(x, spec.data.y_train, omega, 0.8, training.learning_rate,
                                 weights, readout, steps, "tanh")
    np.testing.assert_allclose(f, network, atol=1e-12, rtol=0)
    assert np.abs(f[-1] - f[0]).max() > 0.1


# ----------------------------------------------------------------------------------------------
# Command line.


def _spec_file(tmp_path, training: str, parameterization="mup", data=False) -> str:
    arch = (f'[architecture]\nhidden_layers = 2\nactivation = "tanh"\nparameterization = '
            f'"{parameterization}"\n' + ("gamma0 = 1.0\n" if parameterization == "mup" else ""))
    table = ""
    if data:
        rng = np.random.default_rng(0)
        np.save(tmp_path / "x.npy", rng.standard_normal((4, 3)))
        np.save(tmp_path / "y.npy", rng.standard_normal(4))
        table = '[data]\nx_train = "x.npy"\ny_train = "y.npy"\n'
    path = tmp_path / "spec.toml"
    path.write_text(arch + table + "[training]\ntimes = [0.0, 0.5]\n" + training)
    return str(path)


def test_cli_derive_latex_of_a_gd_spec_contains_the_step_sum(tmp_path):
    spec = _spec_file(tmp_path, 'optimizer = "gd"\nlearning_rate = 0.25\n')
    out = tmp_path / "eq.tex"
    result = run_dmft("derive", spec, "--latex", "--out", out)
    assert result.returncode == 0, result.stderr
    latex = out.read_text()
    assert latex.startswith(r"\documentclass") and r"\eta_0\sum_{s<k}" in latex
    assert braces_balanced(latex)
    text = run_dmft("derive", spec)
    assert text.returncode == 0 and "h^2_μ(k) = u^2_μ(k) + γ0 η0 Σ_{s<k}" in text.stdout
    assert text.stdout == str(derive(Architecture(2, "tanh", "mup", gamma0=1.0),
                                     training=gd_training(0.25)))


def test_cli_derive_of_a_flow_spec_prints_the_flow_equations(tmp_path):
    spec = _spec_file(tmp_path, "")
    result = run_dmft("derive", spec)
    assert result.returncode == 0
    assert result.stdout == str(derive(Architecture(2, "tanh", "mup", gamma0=1.0)))


def test_cli_derive_overrides_the_training_rule(tmp_path):
    spec = _spec_file(tmp_path, "", parameterization="ntk")
    result = run_dmft("derive", spec, "--optimizer", "sgd", "--learning-rate", "0.5",
                      "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == str(derive(Architecture(2, "tanh", "ntk"),
                                       training=gd_training(0.5, optimizer="sgd", batch_size=3)))
    bad = run_dmft("derive", spec, "--optimizer", "adam", "--learning-rate", "0.5")
    assert bad.returncode == 2 and "training.optimizer must be one of" in bad.stderr


@pytest.mark.parametrize("training,key", [
    ('optimizer = "gd"\nlearning_rate = -1.0\n', "training.learning_rate"),
    ('optimizer = "gd"\n', "training.learning_rate"),
    ('optimizer = "adam"\nlearning_rate = 0.1\n', "training.optimizer"),
    ('optimizer = "sgd"\nlearning_rate = 0.1\nbatch_size = 0\n', "training.batch_size"),
    ('learning_rate = 0.1\n', "training.learning_rate"),
    ('optimizer = "gd"\nlearning_rate = 0.1\nmomentum = 0.9\n', "training.momentum"),
])
def test_cli_derive_refuses_a_bad_training_rule_as_dmft_run_does(tmp_path, training, key):
    spec = _spec_file(tmp_path, training, data=True)
    derived, ran = run_dmft("derive", spec), run_dmft("run", spec, "--out", tmp_path / "out")
    assert derived.returncode == ran.returncode == 2
    message = derived.stderr.strip().removeprefix("dmft derive: error: ")
    assert "\n" not in message and key in message
    assert message == ran.stderr.strip().removeprefix("dmft run: error: ")


def test_derive_refuses_a_training_of_the_wrong_type():
    one_line_error(lambda: derive(Architecture(1, "relu"), training={"optimizer": "gd"}),
                   "Training")
    with pytest.raises(InputError):
        derive(Architecture(1, "relu"), training="gd")


# ----------------------------------------------------------------------------------------------
# μP, deep linear (L = 2): the printed step sums with their responses, on the Gaussian sources.


@pytest.mark.parametrize("optimizer,seed,residual", [("gd", 0, None), ("gd", 1, None),
                                                     ("sgd", 2, None), ("gd", 3, 1.3),
                                                     ("sgd", 4, 0.8)])
def test_printed_deep_linear_step_sums_equal_the_deep_linear_solver(optimizer, seed, residual):
    # residual: h^2 = h^1 + β[u^2 + …] with β = α/√L (derivations/finite_step_dmft.md
    # eq:res_process; DeepLinearDMFT's residual march, derivations/deep_linear_gd_residual.md §4)
    data = small_data(seed, num_train=4, num_test=1, input_dim=6)
    x = np.concatenate([data.x_train, data.x_test])
    kx = x @ x.T / x.shape[1]
    eta = (1.2 if optimizer == "gd" else 0.5) * 4 / np.linalg.eigvalsh(3 * kx[:4, :4])[-1]
    rule = {"optimizer": optimizer, **({"batch_size": 2, "seed": seed} if optimizer == "sgd"
                                       else {})}
    training, steps = gd_training(eta, 6, **rule), 6
    spec = Spec(Architecture(2, "linear", "mup", gamma0=1.2, residual_scale=residual), data,
                training)
    omega = np.asarray(training.dynamics.batch_weights(4, steps + 1))
    f, ntk = march_printed_deep_linear(derive(spec.architecture, training=training), kx,
                                       data.y_train, steps, eta=eta, omega=omega)
    solution = DeepLinearDMFT().solve(spec)
    reference = np.concatenate([solution.f_train, solution.f_test], axis=1)
    np.testing.assert_allclose(f, reference, atol=1e-10, rtol=0)
    np.testing.assert_allclose(ntk, solution.ntk, atol=1e-10, rtol=0)
    assert np.abs(f[-1, :4] - f[1, :4]).max() > 0.05
