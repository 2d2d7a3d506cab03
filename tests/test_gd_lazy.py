"""Lazy-limit gradient descent and SGD (docs/conventions.md §2a): the closed form and the step
recursion against independent NumPy loops, the flow limit η0 → 0, seeded batches, divergence, and
one-line errors for bad training rules through the API and ``dmft run``."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmft import Architecture, Data, InputError, Spec, Training, solve_lazy
from dmft._errors import SolveError
from dmft.cli import main
from dmft.network import SGD
from dmft.solvers import ClosedForm, KernelODE, lazy_closed_form
from dmft.solvers._lazy import lazy_gd_closed_form, lazy_sgd_recursion

# ----------------------------------------------------------------------------------------------
# Independent references: plain loops over the steps, no eigendecomposition.


def gd_loop(ntk, ntk_test_train, y, eta, steps):
    """f_k = (I − (I − ηK/P)^k) y by `np.linalg.matrix_power`; f_* by summing the step updates."""
    num_train = y.size
    step_matrix = np.eye(num_train) - eta * ntk / num_train
    f_train = np.array([y - np.linalg.matrix_power(step_matrix, int(k)) @ y for k in steps])
    f_test, current, out = np.zeros(ntk_test_train.shape[0]), np.zeros(num_train), []
    for k in range(int(max(steps)) + 1):
        if k in {int(s) for s in steps}:
            out.append(f_test.copy())
        residual = y - current
        f_test = f_test + eta / num_train * ntk_test_train @ residual
        current = current + eta / num_train * ntk @ residual
    return f_train, np.array(out)


def sgd_loop(ntk, y, eta, batches, steps):
    """Each step descends (1/2B) Σ_{μ∈batch} (f_μ − y_μ)²: f += (η/B) K[:, batch] (y − f)[batch]."""
    f, out = np.zeros(y.size), []
    for k in range(int(max(steps)) + 1):
        if k in {int(s) for s in steps}:
            out.append(f.copy())
        if k < len(batches):
            batch = batches[k]
            f = f + eta / len(batch) * ntk[:, batch] @ (y - f)[batch]
    return np.array(out)


@st.composite
def kernel_problems(draw):
    """A PSD kernel over P train + Q test points (of rank r <= P + Q, so K may be singular),
    targets y and a learning rate with η0 λ_max/P in (0, 1.95]."""
    num_train = draw(st.integers(2, 7))
    num_test = draw(st.integers(0, 3))
    rank = draw(st.integers(1, num_train + num_test))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((num_train + num_test, rank))
    kernel = a @ a.T
    y = rng.standard_normal(num_train)
    ntk, cross = kernel[:num_train, :num_train], kernel[num_train:, :num_train]
    lam = np.linalg.eigvalsh(ntk)[-1]
    ratio = draw(st.floats(0.01, 1.95))
    steps = np.unique(draw(st.lists(st.integers(0, 60), min_size=1, max_size=6)))
    return ntk, cross, y, ratio * num_train / lam, steps


@settings(max_examples=60, deadline=None)
@given(kernel_problems())
def test_gd_closed_form_equals_matrix_power_loop(problem):
    ntk, cross, y, eta, steps = problem
    f_train, f_test = lazy_gd_closed_form(jnp.asarray(ntk), jnp.asarray(cross), jnp.asarray(y),
                                          jnp.asarray(steps), eta)
    ref_train, ref_test = gd_loop(ntk, cross, y, eta, steps)
    # Both are O(|y|) sums of at most 60 products of factors |1 − x| <= 1: round-off is a few
    # hundred ulps of the kernel's scale, far below the 1e-10.
    scale = 1.0 + np.abs(ntk).max()
    np.testing.assert_allclose(np.asarray(f_train), ref_train, atol=1e-10 * scale)
    np.testing.assert_allclose(np.asarray(f_test).reshape(ref_test.shape), ref_test,
                               atol=1e-10 * scale)


@settings(max_examples=40, deadline=None)
@given(kernel_problems(), st.integers(1, 7), st.integers(0, 1000))
def test_sgd_recursion_equals_batch_loop(problem, batch_size, seed):
    ntk, cross, y, eta, steps = problem
    batch_size = min(batch_size, y.size)
    rule = SGD(eta, batch_size=batch_size, seed=seed)
    num_steps = max(int(steps[-1]), 1)
    f_train, _, bad = lazy_sgd_recursion(
        jnp.asarray(ntk), jnp.asarray(cross), jnp.asarray(y),
        jnp.asarray(rule.batch_weights(y.size, num_steps)), jnp.asarray(steps), eta)
    reference = sgd_loop(ntk, y, eta, rule.batches(y.size, num_steps), steps)
    if int(bad) >= 0:  # a small batch can blow up where GD would not: then it must really grow
        # the criterion's loss above 10⁶ 𝓛(0) is an rms of f − y above 10³ rms(y); the saved
        # steps may end before the flagged one grows fully, so ask for a tenth of that
        assert np.abs(reference).max() > 100 * np.sqrt(np.mean(y**2)), (reference, y)
        return
    # Same recursion, different summation order: round-off of O(steps) ulps of the f scale.
    np.testing.assert_allclose(np.asarray(f_train), reference,
                               atol=1e-10 * (1.0 + np.abs(reference).max()))


# ----------------------------------------------------------------------------------------------
# Through the spec and the API


def make_spec(rng, num_train=6, num_test=2, activation="relu", layers=1, **training):
    x = rng.standard_normal((num_train + num_test, 3))
    y = np.sin(x[:, 0]) + 0.3 * rng.standard_normal(num_train + num_test)
    data = Data(x[:num_train], y[:num_train], x_test=x[num_train:], y_test=y[num_train:])
    return Spec(Architecture(layers, activation), data, Training(**training))


def lam_over_p(spec):
    return float(solve_lazy(spec.replace(training=Training((0.0,)))).sharpness[0])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.05, 1.9), st.sampled_from(["relu", "tanh", "erf"]))
def test_sgd_with_full_batches_is_gd(seed, ratio, activation):
    rng = np.random.default_rng(seed)
    base = make_spec(rng, activation=activation)
    eta = ratio / lam_over_p(base)
    times = tuple(eta * k for k in (0, 1, 3, 10, 25))
    gd = solve_lazy(base.replace(training=Training(times, optimizer="gd", learning_rate=eta)))
    sgd = solve_lazy(base.replace(training=Training(times, optimizer="sgd", learning_rate=eta,
                                                    batch_size=6, seed=seed % 1000)))
    # Closed form against the recursion of the same steps: round-off only (see above).
    np.testing.assert_allclose(sgd.f_train, gd.f_train, atol=1e-10)
    np.testing.assert_allclose(sgd.f_test, gd.f_test, atol=1e-10)
    np.testing.assert_allclose(sgd.sharpness, gd.sharpness, rtol=1e-12)  # same frozen kernel


def test_gd_tends_to_flow_at_first_order(rng):
    base = make_spec(rng, activation="tanh", layers=2)
    scale = lam_over_p(base)
    t_end = 2.0 / scale
    flow = solve_lazy(base.replace(training=Training((0.0, t_end))))
    errors = []
    for divisor in (16, 32, 64, 128):
        eta = t_end / divisor
        gd = solve_lazy(base.replace(training=Training((0.0, t_end), optimizer="gd",
                                                       learning_rate=eta)))
        errors.append(np.abs(gd.f_train[-1] - flow.f_train[-1]).max())
        np.testing.assert_allclose(gd.f_train[0], 0.0, atol=0)  # f(0) = 0 exactly
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    # Explicit Euler of a linear ODE: global error c·η0 + O(η0²); halving η0 halves it up to the
    # O(η0) relative correction (η0 λ/P <= 1/8 here), so each ratio is within 0.5 ± 0.07.
    np.testing.assert_allclose(ratios, 0.5, atol=0.07)
    assert errors[-1] < 1e-2 * np.abs(flow.f_train[-1]).max()


def test_same_seed_same_batches_and_results(rng):
    base = make_spec(rng, num_train=8)
    eta = 0.5 / lam_over_p(base)
    times = tuple(eta * k for k in (0, 4, 12))

    def run(seed):
        return solve_lazy(base.replace(training=Training(times, optimizer="sgd", learning_rate=eta,
                                                         batch_size=3, seed=seed))).f_train

    np.testing.assert_array_equal(run(7), run(7))  # deterministic given the seed
    assert np.abs(run(7) - run(8)).max() > 1e-6  # another seed draws other batches
    np.testing.assert_array_equal(SGD(eta, 3, 7).batches(8, 12), SGD(eta, 3, 7).batches(8, 12))


def test_singular_kernel_gd_test_points_are_exact():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # duplicated input: singular NTK
    spec = Spec(Architecture(1, "linear"), Data(x, np.array([1.0, 1.0, -1.0]), x_test=x),
                Training((0.0, 0.5, 50.0), optimizer="gd", learning_rate=0.5))
    solution = solve_lazy(spec)
    ntk = solution.ntk[0]
    _, ref_test = gd_loop(ntk, solution.ntk_test_train[0], spec.data.y_train, 0.5, [0, 1, 100])
    # A test point equal to a train point predicts like it; exact up to round-off.
    np.testing.assert_allclose(solution.f_test, ref_test, atol=1e-12)
    np.testing.assert_allclose(solution.f_test, solution.f_train, atol=1e-12)


def test_gd_minus_flow_is_the_first_order_euler_term(rng):
    spec = make_spec(rng)
    ntk = solve_lazy(spec.replace(training=Training((0.0,)))).ntk[0]
    y = spec.data.y_train
    eta, steps = 1e-6, 1000
    t = steps * eta
    f_gd, _ = lazy_gd_closed_form(jnp.asarray(ntk), jnp.zeros((0, 6)), jnp.asarray(y),
                                  jnp.asarray([steps]), eta)
    f_flow, _ = lazy_closed_form(jnp.asarray(ntk), jnp.zeros((0, 6)), jnp.asarray(y),
                                 jnp.asarray([t]))
    # Series in t: flow (t/P)Ky − (t²/2P²)K²y + ..., GD (kη/P)Ky − (k(k−1)η²/2P²)K²y + ...,
    # so GD − flow = (η t/2P²) K² y up to relative O(tλ/P, η/t) = O(1e-3) corrections.
    predicted = eta * t / (2 * 6**2) * ntk @ ntk @ y
    np.testing.assert_allclose(np.asarray(f_gd)[0] - np.asarray(f_flow)[0], predicted,
                               atol=1e-2 * np.abs(predicted).max())


# ----------------------------------------------------------------------------------------------
# Divergence: a SolveError naming the step and the loss, nothing written


@pytest.mark.parametrize("optimizer", ["gd", "sgd"])
def test_unstable_learning_rate_is_a_solve_error(rng, optimizer):
    base = make_spec(rng)
    eta = 2.6 / lam_over_p(base)
    extra = {"batch_size": 6} if optimizer == "sgd" else {}
    times = tuple(eta * k for k in range(0, 400, 50))
    with pytest.raises(SolveError, match=r"diverged at step \d+ .*loss") as caught:
        solve_lazy(base.replace(training=Training(times, optimizer=optimizer, learning_rate=eta,
                                                  **extra)))
    step = int(str(caught.value).split("step ")[1].split()[0])
    # the error carries the place it names, for callers that mark divergent runs
    assert caught.value.step == step and caught.value.time == pytest.approx(step * eta)
    assert caught.value.loss > 1e6 * float(np.mean(np.asarray(base.data.y_train) ** 2)) / 2
    # The top mode grows by |1 − 2.6| = 1.6 per step; its loss passes 1e6 × 𝓛(0) after about
    # log(1e6)/(2 log 1.6) ≈ 15 steps (less when it carries more than its share of y), and
    # the step is the first one past the threshold, not a saved one.
    assert 5 <= step <= 60 and step % 50 != 0


def test_stable_edge_runs(rng):
    base = make_spec(rng)
    eta = 1.99 / lam_over_p(base)
    times = tuple(eta * k for k in (0, 10, 100))
    solution = solve_lazy(base.replace(training=Training(times, optimizer="gd", learning_rate=eta)))
    losses = solution.losses(base.data.y_train)["loss_train"]
    assert losses[-1] < losses[0]  # |1 − x| < 1 in every mode: it converges, however slowly


# ----------------------------------------------------------------------------------------------
# Bad input: one line naming the key, through the API and `dmft run`

BAD_TRAINING = {
    "learning_rate = 0": (dict(optimizer="gd", learning_rate=0.0), "training.learning_rate"),
    "learning_rate < 0": (dict(optimizer="gd", learning_rate=-0.1), "training.learning_rate"),
    "missing learning_rate": (dict(optimizer="gd"), "training.learning_rate"),
    "times not multiples": (dict(optimizer="gd", learning_rate=0.3, times=(0.0, 0.5)),
                            "training.times"),
    "batch_size > P": (dict(optimizer="sgd", learning_rate=0.5, batch_size=7), "training.batch_size"),
    "batch_size < 1": (dict(optimizer="sgd", learning_rate=0.5, batch_size=0), "training.batch_size"),
    "unknown optimizer": (dict(optimizer="adam", learning_rate=0.5), "training.optimizer"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINING))
def test_bad_training_rule_through_the_api(rng, case):
    training, key = BAD_TRAINING[case]
    training = {"times": (0.0, 1.0), **training}
    with pytest.raises(InputError, match=key.replace(".", r"\.")) as caught:
        make_spec(rng, **training)
    assert "\n" not in str(caught.value)


def test_sgd_with_a_method_that_cannot_honour_it(rng):
    spec = make_spec(rng, times=(0.0, 1.0), optimizer="sgd", learning_rate=0.5, batch_size=2)
    with pytest.raises(InputError, match=r"training\.optimizer = 'sgd'.*KernelODE"):
        solve_lazy(spec, KernelODE())
    with pytest.raises(InputError, match=r"training\.optimizer"):
        solve_lazy(spec.replace(solver={"method": "ode"}))
    assert solve_lazy(spec, ClosedForm()).f_train.shape == (2, 6)


def write_spec(folder, rng, training: str, solver: str = ""):
    np.save(folder / "x.npy", rng.standard_normal((6, 3)))
    np.save(folder / "y.npy", rng.standard_normal(6))
    path = folder / "spec.toml"
    path.write_text(f"""
[architecture]
hidden_layers = 1
activation = "relu"

[data]
x_train = "x.npy"
y_train = "y.npy"

[training]
{training}
{solver}
""")
    return path


CLI_BAD = {
    "learning_rate = 0": ('times = [0.0, 1.0]\noptimizer = "gd"\nlearning_rate = 0.0',
                          "training.learning_rate"),
    "missing learning_rate": ('times = [0.0, 1.0]\noptimizer = "gd"', "training.learning_rate"),
    "times not multiples": ('times = [0.0, 0.5]\noptimizer = "gd"\nlearning_rate = 0.3',
                            "training.times"),
    "batch_size > P": ('times = [0.0, 1.0]\noptimizer = "sgd"\nlearning_rate = 0.5\nbatch_size = 9',
                       "training.batch_size"),
    "batch_size < 1": ('times = [0.0, 1.0]\noptimizer = "sgd"\nlearning_rate = 0.5\nbatch_size = 0',
                       "training.batch_size"),
    "unknown optimizer": ('times = [0.0, 1.0]\noptimizer = "adam"', "training.optimizer"),
    "sgd with ode": (('times = [0.0, 1.0]\noptimizer = "sgd"\nlearning_rate = 0.5\nbatch_size = 2'
                      '\n[solver]\nmethod = "ode"'), "training.optimizer"),
}


@pytest.mark.parametrize("case", sorted(CLI_BAD))
def test_bad_training_rule_through_dmft_run(tmp_path, rng, capsys, case):
    training, key = CLI_BAD[case]
    out = tmp_path / "out"
    code = main(["run", str(write_spec(tmp_path, rng, training)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and key in err
    assert not (out / "result.npz").exists() and not (out / "metadata.json").exists()


def test_divergent_run_exits_3_and_writes_nothing(tmp_path, rng, capsys):
    path = write_spec(tmp_path, rng, 'times = [0.0, 1.0]\noptimizer = "gd"\nlearning_rate = 1.0')
    spec = Spec(Architecture(1, "relu"), Data(np.load(tmp_path / "x.npy"),
                                              np.load(tmp_path / "y.npy")), Training((0.0,)))
    eta = 3.0 / float(solve_lazy(spec).sharpness[0])
    times = ", ".join(f"{eta * k!r}" for k in (0, 100, 200))
    path.write_text(path.read_text().replace("times = [0.0, 1.0]", f"times = [{times}]")
                    .replace("learning_rate = 1.0", f"learning_rate = {eta!r}"))
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3
    assert len(err.strip().splitlines()) == 1 and "diverged at step" in err
    assert not out.exists() or not any(out.iterdir())


def test_gd_run_writes_rule_and_sharpness(tmp_path, rng):
    path = write_spec(tmp_path, rng, 'times = [0.0, 0.5, 1.0]\noptimizer = "gd"\nlearning_rate = 0.25')
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    result = np.load(out / "result.npz")
    assert result["sharpness"].shape == (3,)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"]["optimizer"] == "gd"
    assert metadata["training"]["learning_rate"] == 0.25
    assert metadata["training"]["steps"] == [0, 2, 4]
    assert metadata["solver"]["steps"] == 4 and metadata["solver"]["learning_rate"] == 0.25
    path = write_spec(tmp_path, rng, 'times = [0.0, 0.5, 1.0]\noptimizer = "sgd"\n'
                                     'learning_rate = 0.25\nbatch_size = 2\nseed = 5')
    assert main(["run", str(path), "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"] == {"optimizer": "sgd", "learning_rate": 0.25, "batch_size": 2,
                                    "seed": 5, "steps": [0, 2, 4]}
    path = write_spec(tmp_path, rng, "times = [0.0, 0.5, 1.0]")
    assert main(["run", str(path), "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"] == {"optimizer": "flow", "learning_rate": None}


# ----------------------------------------------------------------------------------------------
# Result plumbing: sharpness once, its stderr, the figure's sharpness panel


def test_sharpness_is_computed_once_and_its_stderr_is_written(rng):
    from dmft.solvers import Solution

    ntk = rng.standard_normal((3, 4, 4))
    ntk = ntk @ np.swapaxes(ntk, 1, 2)
    solution = Solution(t=np.arange(3.0), f_train=np.zeros((3, 4)), ntk=ntk,
                        stderr={"sharpness": np.full(3, 0.01)})
    first = solution.sharpness
    assert solution.sharpness is first and not first.flags.writeable
    # the top eigenvalue over P, against NumPy's general eigenvalue routine (round-off only)
    np.testing.assert_allclose(first, [np.max(np.linalg.eigvals(k).real) / 4 for k in ntk],
                               rtol=1e-12)
    arrays = solution.arrays(np.zeros(4))
    np.testing.assert_array_equal(arrays["sharpness"], first)
    np.testing.assert_array_equal(arrays["sharpness_stderr"], 0.01)


def test_learning_curve_has_a_sharpness_panel_for_discrete_rules(rng, monkeypatch):
    import matplotlib.pyplot as plt

    import dmft.figures._learning_curve as module

    kept = []
    monkeypatch.setattr(module, "save_figure", lambda figure, stem: kept.append(figure) or [])
    base = make_spec(rng)
    eta = 1.2 / lam_over_p(base)
    for training in (Training((0.0, 1.0, 2.0)),
                     Training(tuple(eta * k for k in range(8)), optimizer="gd", learning_rate=eta),
                     Training(tuple(eta * k for k in range(8)), optimizer="sgd", learning_rate=eta,
                              batch_size=3, seed=1)):
        spec = base.replace(training=training)
        arrays = solve_lazy(spec).arrays(spec.data.y_train, spec.data.y_test)
        module.plot_learning_curve(arrays, "unused", spec=spec)
    flow, gd, sgd = kept
    assert len(flow.axes) == 1  # gradient flow: the loss panel only, as before
    for figure, name in ((gd, "GD"), (sgd, "SGD")):
        loss_ax, sharp_ax = figure.axes
        assert name in loss_ax.get_title() and "eta_0" in loss_ax.get_title()
        edges = [line for line in sharp_ax.get_lines() if line.get_linestyle() == "--"]
        assert len(edges) == 1
        np.testing.assert_allclose(edges[0].get_ydata(), 2 / eta)  # the edge of stability
        (curve,) = [line for line in sharp_ax.get_lines() if line.get_linestyle() != "--"]
        np.testing.assert_allclose(curve.get_ydata(), arrays["sharpness"] if figure is sgd
                                   else solve_lazy(base.replace(training=gd_training(eta)))
                                   .sharpness)
    for figure in kept:
        plt.close(figure)


def gd_training(eta):
    return Training(tuple(eta * k for k in range(8)), optimizer="gd", learning_rate=eta)
