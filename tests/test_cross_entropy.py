"""Cross-entropy (docs/conventions.md §2b, issue 13 item 2): the lazy kernel ODE against an
independent RK4 integration, lazy GD against a hand-written step loop, the two-layer DMFT at
γ0 → 0 against the lazy solve, 3-class two-layer DMFT against real finite-width μP networks
trained by GD, `dmft run` of a 3-class spec, and bad input."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_multi_output import check_against_networks

from dmft import Architecture, Data, InputError, Spec, Training, solve_lazy
from dmft.solvers import ClosedForm, KernelODE, TwoLayerDMFT, TwoLayerMoments

TIMES = (0.0, 0.5, 1.0, 3.0)


def labelled(seed, num_train=6, num_test=3, classes=3, input_dim=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, input_dim))
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, num_train - classes)])
    test = rng.integers(0, classes, num_test)
    return Data(x[:num_train], labels.astype(float), x_test=x[num_train:],
                y_test=test.astype(float))


def ce_spec(data, parameterization="ntk", times=TIMES, **training):
    arch = Architecture(1, "tanh", "mup", gamma0=training.pop("gamma0")) \
        if parameterization == "mup" else Architecture(2, "erf", sigma_w=1.3)
    return Spec(arch, data, Training(times, loss="cross_entropy", **training))


def softmax(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def rk4(ntk, cross, y, times, step=2e-3):
    """Classical RK4 of ∂t f = K(y − softmax f)/P, ∂t f_* = K_{*X}(y − softmax f)/P, written
    here with numpy: a fixed step that lands on every saved time (error O(step⁴))."""
    num_train = y.shape[0]
    f, f_test = np.zeros_like(y), np.zeros((cross.shape[0], y.shape[1]))
    out_train, out_test, now = [], [], 0.0

    def rate(f):
        return (y - softmax(f)) / num_train

    for target in times:
        count = int(np.ceil((target - now) / step - 1e-12))
        h = (target - now) / count if count else 0.0
        for _ in range(count):
            k1 = rate(f)
            k2 = rate(f + 0.5 * h * ntk @ k1)
            k3 = rate(f + 0.5 * h * ntk @ k2)
            k4 = rate(f + h * ntk @ k3)
            mean = (k1 + 2 * k2 + 2 * k3 + k4) / 6
            f, f_test = f + h * ntk @ mean, f_test + h * cross @ mean
        now = target
        out_train.append(f.copy())
        out_test.append(f_test.copy())
    return np.array(out_train), np.array(out_test)


@pytest.mark.slow  # tens of seconds to minutes on 2 cores (ensembles, long solves): -m slow
@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4))
def test_lazy_kernel_ode_agrees_with_an_independent_rk4(seed, classes):
    data = labelled(seed, classes=classes)
    spec = ce_spec(data)
    for method in (ClosedForm(), KernelODE()):
        solution = method.solve(spec)
        assert solution.f_train.shape == (len(TIMES), data.num_train, classes)
        ntk = solution.ntk[0]
        reference = rk4(ntk, solution.ntk_test_train[0], spec.data.y_train, TIMES)
        # Diffrax at rtol = atol = 1e-12 against RK4 with 1500 steps (error ~ 1e-13 here): the
        # issue's 1e-8 is far above both integration errors
        np.testing.assert_allclose(solution.f_train, reference[0], atol=1e-8)
        np.testing.assert_allclose(solution.f_test, reference[1], atol=1e-8)
        assert np.all(solution.ntk == ntk)  # lazy: the kernel is frozen


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 3.0))
def test_lazy_gd_is_the_exact_step_loop(seed, eta):
    data = labelled(seed)
    steps = (0, 1, 3, 7)
    spec = ce_spec(data, times=tuple(eta * k for k in steps), optimizer="gd", learning_rate=eta)
    solution = solve_lazy(spec)
    ntk, cross, y = solution.ntk[0], solution.ntk_test_train[0], spec.data.y_train
    f, f_test = np.zeros_like(y), np.zeros((cross.shape[0], y.shape[1]))
    for k in range(max(steps) + 1):
        if k in steps:
            i = steps.index(k)
            # the same recursion in another order of operations: round-off only
            np.testing.assert_allclose(solution.f_train[i], f, atol=1e-12)
            np.testing.assert_allclose(solution.f_test[i], f_test, atol=1e-12)
        signal = eta / data.num_train * (y - softmax(f))
        f, f_test = f + ntk @ signal, f_test + cross @ signal


def test_lazy_sgd_with_full_batches_is_gd():
    data = labelled(4)
    eta = 0.7
    times = tuple(eta * k for k in (0, 2, 5))
    gd = solve_lazy(ce_spec(data, times=times, optimizer="gd", learning_rate=eta))
    sgd = solve_lazy(ce_spec(data, times=times, optimizer="sgd", learning_rate=eta,
                             batch_size=data.num_train))
    np.testing.assert_array_equal(sgd.f_train, gd.f_train)  # batch weights all 1: the same march


def test_losses_and_accuracy_of_a_lazy_solve():
    data = labelled(9)
    spec = ce_spec(data)
    solution = solve_lazy(spec)
    arrays = solution.arrays(spec.data.y_train, spec.data.y_test)
    f = solution.f_train
    expected = np.mean(np.log(np.exp(f).sum(-1)) - (spec.data.y_train * f).sum(-1), axis=-1)
    np.testing.assert_allclose(arrays["loss_train"], expected, rtol=1e-13)  # round-off
    assert arrays["loss_train"][0] == pytest.approx(np.log(3), rel=1e-15)  # f(0) = 0
    np.testing.assert_array_equal(arrays["accuracy_train"],
                                  np.mean(f.argmax(-1) == spec.data.labels, axis=-1))
    np.testing.assert_array_equal(arrays["accuracy_test"],
                                  np.mean(solution.f_test.argmax(-1) == spec.data.labels_test, -1))
    assert np.all(np.diff(arrays["loss_train"]) < 0)  # gradient flow decreases the loss


def test_cross_entropy_sharpness_is_the_gauss_newton_top_eigenvalue():
    data = labelled(2)
    solution = solve_lazy(ce_spec(data))
    t = -1
    f, ntk = solution.f_train[t], solution.ntk[t]
    p = softmax(f)
    num, classes = p.shape
    # the Gauss–Newton matrix (1/P) Jᵀ H J in function space, H = blockdiag(diag p − ppᵀ)
    hessian = np.zeros((num * classes, num * classes))
    for mu in range(num):
        block = slice(mu * classes, (mu + 1) * classes)
        hessian[block, block] = np.diag(p[mu]) - np.outer(p[mu], p[mu])
    full = np.kron(ntk, np.eye(classes))
    expected = np.max(np.linalg.eigvals(full @ hessian).real) / num
    assert solution.sharpness[t] == pytest.approx(expected, rel=1e-10)  # eig vs eigh round-off


@pytest.mark.parametrize("rule", ["flow", "gd"])
def test_two_layer_particles_at_small_gamma0_are_the_lazy_solve(rule):
    data = labelled(13)
    eta = 0.5
    extra = {} if rule == "flow" else {"optimizer": "gd", "learning_rate": eta}
    times = TIMES if rule == "flow" else tuple(eta * k for k in (0, 1, 3, 6))
    spec = ce_spec(data, "mup", times=times, gamma0=1e-3, **extra)
    lazy = solve_lazy(spec)
    particles = TwoLayerDMFT(particles=512, batches=4).solve(spec)
    # corrections start at γ0² = 1e-6 (the antithetic pairs keep the γ0 → −γ0 symmetry), times
    # an O(1) coefficient; the lazy part is exact at every S through the control variate; the
    # flow is solved to rtol 1e-8
    np.testing.assert_allclose(particles.f_train, lazy.f_train, atol=1e-5)
    np.testing.assert_allclose(particles.f_test, lazy.f_test, atol=1e-5)
    np.testing.assert_allclose(particles.ntk, lazy.ntk, atol=1e-5)


def test_three_class_two_layer_dmft_matches_finite_width_networks():
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6, 3))
    labels = np.array([0, 1, 2, 0, 1, 2], float)
    gamma0, eta, steps = 1.0, 1.0, (0, 3, 8, 16, 24)
    spec = Spec(Architecture(1, "tanh", "mup", gamma0=gamma0), Data(x, labels),
                Training(tuple(eta * k for k in steps), optimizer="gd", learning_rate=eta,
                         loss="cross_entropy"))

    def cross_entropy(f, y):
        return jnp.mean(jnp.log(jnp.sum(jnp.exp(f), axis=-1)) - jnp.sum(y * f, axis=-1))

    check_against_networks(spec, cross_entropy, gamma0, eta, steps)


def test_methods_without_cross_entropy_refuse_it_in_one_line():
    data = labelled(0, num_test=0)
    spec = Spec(Architecture(1, "linear", "mup", gamma0=1.0), data,
                Training(TIMES, loss="cross_entropy"), solver={"method": "two_layer_moments"})
    with pytest.raises(InputError) as info:
        TwoLayerMoments().solve(spec)
    assert "\n" not in str(info.value) and "outputs" in str(info.value)
    spec = ce_spec(labelled(0), times=(0.0, 0.5), optimizer="gd", learning_rate=0.5)
    with pytest.raises(InputError) as info:
        KernelODE().solve(spec)
    assert "\n" not in str(info.value) and "training.optimizer" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Command line


def write_problem(folder, labels_train, labels_test=(0, 2, 1)):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((len(labels_train) + len(labels_test), 3))
    np.save(folder / "x.npy", x[:len(labels_train)])
    np.save(folder / "x_test.npy", x[len(labels_train):])
    np.save(folder / "y.npy", np.asarray(labels_train, float))
    np.save(folder / "y_test.npy", np.asarray(labels_test, float))
    spec = folder / "spec.toml"
    spec.write_text(
        '[architecture]\nhidden_layers = 1\nactivation = "erf"\nparameterization = "ntk"\n'
        '[data]\nx_train = "x.npy"\ny_train = "y.npy"\nx_test = "x_test.npy"\n'
        'y_test = "y_test.npy"\n'
        '[training]\ntimes = [0.0, 1.0, 4.0]\nloss = "cross_entropy"\n')
    return spec


def dmft(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dmft", *map(str, args)], capture_output=True,
                          check=False,
                          text=True, cwd=cwd, timeout=600)


def test_dmft_run_of_a_three_class_spec_writes_accuracy_and_the_figure(tmp_path):
    spec = write_problem(tmp_path, [0, 1, 2, 0, 1, 2])
    done = dmft("run", spec, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = np.load(tmp_path / "out" / "result.npz")
    assert result["f_train"].shape == (3, 6, 3) and result["f_test"].shape == (3, 3, 3)
    assert result["ntk"].shape == (3, 6, 6)
    for key in ("accuracy_train", "accuracy_test", "loss_train", "loss_test", "sharpness"):
        assert result[key].shape == (3,)
    assert result["loss_train"][0] == pytest.approx(np.log(3), rel=1e-15)  # f(0) = 0
    assert np.all((0 <= result["accuracy_train"]) & (result["accuracy_train"] <= 1))
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["outputs"]["loss"] == "cross_entropy"
    assert metadata["outputs"]["num_outputs"] == 3 and "K ⊗ I_C" in metadata["outputs"]["ntk"]
    assert (tmp_path / "out" / "learning_curve.png").is_file()
    assert "accuracy" in done.stdout


@pytest.mark.parametrize("labels, words", [
    ([0, 1, 2, 0, 1, 2.5], ["data.y_train[5]", "integer"]),
    ([0, 1, -1, 0, 1, 2], ["data.y_train[2]", "negative"]),
])
def test_bad_labels_on_the_command_line_are_one_line_errors(tmp_path, labels, words):
    spec = write_problem(tmp_path, labels)
    done = dmft("run", spec, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode != 0
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and all(word in message for word in words), message
    assert not (tmp_path / "out" / "result.npz").exists()
