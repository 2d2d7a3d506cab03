"""Finite-width GD / SGD, sharpness and residual networks in the sampler (issues 11 and 12).

The reference trainers here are written out by hand (forward map of docs/conventions.md §1,
loss §2, update §2a) and share nothing with dmft.sampler but the initial parameters.
"""

import dataclasses
import json
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_dmft
from jax.flatten_util import ravel_pytree

from dmft import Architecture, InputError, Spec, Training
from dmft._divergence import DIVERGENCE_FACTOR
from dmft.sampler import (
    AdaptiveSteps,
    FiniteNetwork,
    FixedSteps,
    RuleSteps,
    compare,
    gauss_newton_sharpness,
    hessian_sharpness,
    lanczos_top_eigenvalue,
    member_key,
    ntk_sharpness,
    predict_corrections,
    report_table,
    sample,
    train_ensemble,
)
from dmft.spec import teacher_data

DATA = teacher_data(num_train=6, num_test=2, input_dim=4, seed=3)


def _spec(arch, times, **training):
    return Spec(arch, DATA, Training(tuple(float(t) for t in times), **training))


# ---------------------------------------------------------------------------------------------
# an independent trainer: the conventions' forward map, loss and update, written out by hand


def _hand_forward(arch, width, weights, x):
    """f(x) of a plain MLP from its weight list [(W, b or None), ...] (first, hidden..., readout):
    (P,) for one output, (P, C) for a read-out of C rows."""
    D = x.shape[1]
    if arch.parameterization == "mup":
        scales = [1 / np.sqrt(D)] + [1 / np.sqrt(width)] * (len(weights) - 2) \
            + [1 / (arch.gamma0 * width)]
        bias = 0.0
    else:
        scales = [arch.sigma_w / np.sqrt(D)] + [arch.sigma_w / np.sqrt(width)] * (len(weights) - 1)
        bias = arch.sigma_b
    phi = {"tanh": jnp.tanh, "erf": jax.scipy.special.erf}[arch.activation]
    h = x
    for index, ((W, b), scale) in enumerate(zip(weights, scales)):
        inputs = h if index == 0 else phi(h)
        h = scale * inputs @ W.T + (bias * b if b is not None else 0.0)
    return h[:, 0] if h.shape[1] == 1 else h


def _weights(params, keys):
    return [(params[k]["W"], params[k].get("b")) for k in keys]


def _mean_squared_error(f, y):
    """(1/2|B|) Σ_B ‖f − y‖², one output or rows of C."""
    squared = (f - y) ** 2
    return 0.5 * jnp.mean(squared if squared.ndim == 1 else squared.sum(axis=-1))


def _hand_gd(arch, width, weights, x, y, eta0, steps, batches=None, loss_of=_mean_squared_error):
    """θ_{k+1} = θ_k − η0 η ∇𝓛_k with 𝓛_k = loss_of(f, y) on the batch (by default the MSE
    (1/2|B|) Σ_B (f − y)²; all points if batches is None); returns f_train at the steps in `steps`
    and the first step whose loss is non-finite or passes the divergence threshold (−1 if none)."""
    eta = arch.gamma0**2 * width if arch.parameterization == "mup" else 1.0

    def loss(w, xb, yb):
        return loss_of(_hand_forward(arch, width, w, xb), yb)

    grad = jax.jit(jax.value_and_grad(loss))
    reference = float(loss(weights, x, y))
    outputs, first_bad = {}, -1
    for k in range(max(steps) + 1):
        if k in steps:
            outputs[k] = np.asarray(_hand_forward(arch, width, weights, x))
        full = float(loss(weights, x, y))
        if first_bad < 0 and (not np.isfinite(full) or full > DIVERGENCE_FACTOR * reference):
            first_bad = k
        if k == max(steps):
            break
        batch = slice(None) if batches is None else batches[k]
        _, g = grad(weights, x[batch], y[batch])
        weights = jax.tree.map(lambda p, d: p - eta0 * eta * d, weights, g)
    return np.stack([outputs[k] for k in steps]), first_bad


PLAIN = {
    "mup_tanh_L2": (Architecture(2, "tanh", "mup", gamma0=1.5), (0, 2, 4)),
    "ntk_erf_bias": (Architecture(1, "erf", "ntk", sigma_w=1.4, sigma_b=0.3), (0, 2)),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_gd_members_equal_an_independent_gd_loop(name):
    arch, keys = PLAIN[name]
    width, eta0 = 24, 0.2
    spec = _spec(arch, np.array([0, 1, 5, 12]) * eta0, optimizer="gd", learning_rate=eta0)
    samples = sample(spec, [width], [0, 3], hessian_steps=0)
    net = FiniteNetwork(arch, width, DATA.input_dim)
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    for row, seed in enumerate((0, 3)):
        params = net.init(member_key(seed, width))
        expected, _ = _hand_gd(arch, width, _weights(params, keys), x, y, eta0, [0, 1, 5, 12])
        # the same arithmetic in another order: round-off over 12 steps of O(1) numbers
        np.testing.assert_allclose(samples[width]["f_train"][row], expected, rtol=1e-9, atol=1e-11)
    assert samples.diagnostics["diverged"] == {width: {}}
    assert samples.diagnostics["method"] == "RuleSteps"


def test_sgd_follows_the_batches_of_the_training_rule():
    arch, keys = PLAIN["mup_tanh_L2"]
    width, eta0, B = 16, 0.25, 2
    times = np.array([0, 3, 7]) * eta0
    spec = _spec(arch, times, optimizer="sgd", learning_rate=eta0, batch_size=B, seed=11)
    samples = sample(spec, [width], [1], hessian_steps=0)
    batches = spec.training.dynamics.batches(DATA.num_train, 7)
    np.testing.assert_array_equal(RuleSteps(spec.training.dynamics).batches(DATA.num_train, 7),
                                  batches)
    net = FiniteNetwork(arch, width, DATA.input_dim)
    params = net.init(member_key(1, width))
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    expected, _ = _hand_gd(arch, width, _weights(params, keys), x, y, eta0, [0, 3, 7], batches)
    # round-off only (7 steps)
    np.testing.assert_allclose(samples[width]["f_train"][0], expected, rtol=1e-9, atol=1e-11)
    other = sample(_spec(arch, times, optimizer="sgd", learning_rate=eta0, batch_size=B, seed=12),
                   [width], [1], hessian_steps=0)
    # another training.seed draws other batches, hence another trajectory
    assert np.abs(other[width]["f_train"][0, -1] - samples[width]["f_train"][0, -1]).max() > 1e-6


def test_sgd_with_the_whole_batch_is_gd():
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    times = np.array([0, 2, 6]) * 0.3
    gd = sample(_spec(arch, times, optimizer="gd", learning_rate=0.3), [16], 2)
    sgd = sample(_spec(arch, times, optimizer="sgd", learning_rate=0.3,
                       batch_size=DATA.num_train, seed=4), [16], 2)
    for key in ("f_train", "f_test", "ntk", "sharpness", "hessian_sharpness"):
        # identical steps on identical points: only XLA's order of the gathered batch may differ
        np.testing.assert_allclose(sgd[16][key], gd[16][key], rtol=1e-12, atol=1e-13)


def test_gd_approaches_gradient_flow_at_first_order_in_the_learning_rate():
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    times = (0.0, 0.4, 0.8)
    flow = sample(_spec(arch, times), [16], [0], AdaptiveSteps(rtol=1e-10, atol=1e-10),
                  hessian_steps=0)[16]["f_train"]
    errors = []
    for eta0 in (0.04, 0.02):
        gd = sample(_spec(arch, times, optimizer="gd", learning_rate=eta0), [16], [0],
                    hessian_steps=0)[16]["f_train"]
        errors.append(np.abs(gd - flow).max())
    # GD is flow's explicit Euler scheme in t = kη0: halving η0 halves the error, up to O(η0²)
    assert 1.7 < errors[0] / errors[1] < 2.3, errors


# ---------------------------------------------------------------------------------------------
# divergence


def test_diverging_members_are_recorded_not_raised_and_named_with_their_step():
    arch = Architecture(1, "erf", "ntk", sigma_w=1.5)
    eta0, width = 3.0, 16
    steps = [0, 10, 20, 30]
    spec = _spec(arch, np.array(steps) * eta0, optimizer="gd", learning_rate=eta0)
    with pytest.warns(UserWarning, match="diverged"):
        samples = sample(spec, [width], 3, hessian_steps=0)
    net = FiniteNetwork(arch, width, DATA.input_dim)
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    diverged = samples.diagnostics["diverged"][width]
    assert sorted(diverged) == [0, 1, 2]
    for seed in range(3):
        _, first_bad = _hand_gd(arch, width, _weights(net.init(member_key(seed, width)), (0, 2)),
                                x, y, eta0, steps)
        assert diverged[seed] == first_bad == samples[width]["diverged_step"][seed]
    loss = samples[width]["loss_train"]
    assert np.all(~np.isfinite(loss[:, -1]) | (loss[:, -1] > DIVERGENCE_FACTOR * loss[:, 0]))
    comparison = compare(samples, spec)
    assert comparison.widths == ()  # nobody left to compare
    assert "3/3 seeds diverged" in comparison.divergence_note
    assert "nothing to compare" in report_table(comparison)


def test_compare_leaves_out_diverged_members_and_says_so():
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    spec = _spec(arch, (0.0, 0.5, 1.0), optimizer="gd", learning_rate=0.25)
    samples = sample(spec, [16, 32], 4, hessian_steps=0)
    marked = dataclasses.replace(samples, diagnostics={**samples.diagnostics,
                                                       "diverged": {16: {2: 5}, 32: {}}})
    comparison = compare(marked, spec)
    kept = samples[16]["loss_train"][[0, 1, 3]]
    np.testing.assert_allclose(comparison.stats["loss_train"][16]["mean"], kept.mean(axis=0),
                               rtol=1e-14)
    np.testing.assert_allclose(comparison.stats["loss_train"][32]["mean"],
                               samples[32]["loss_train"].mean(axis=0), rtol=1e-14)
    assert "N = 16: 1/4 seeds diverged (seed@first divergent step: 2@5)" in \
        comparison.divergence_note
    assert comparison.divergence_note in report_table(comparison)


# ---------------------------------------------------------------------------------------------
# sharpness


TINY = {
    "mup_tanh_L1": Architecture(1, "tanh", "mup", gamma0=2.0),
    "ntk_erf_bias_L2": Architecture(2, "erf", "ntk", sigma_w=1.3, sigma_b=0.4),
    "mup_residual_L3": Architecture(3, "tanh", "mup", gamma0=1.0, residual_scale=0.8),
}


def _dense_eta_hessian(net, params, x, y):
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda p: net.loss_value(unravel(p), x, y))(flat)
    return net.learning_rate * np.asarray(hessian)


@pytest.mark.parametrize("name", sorted(TINY))
def test_lanczos_hessian_sharpness_equals_dense_hessian_top_eigenvalue(name):
    net = FiniteNetwork(TINY[name], 3, DATA.input_dim)
    params = net.init(jax.random.key(5))
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    dense = np.linalg.eigvalsh(_dense_eta_hessian(net, params, x, y))
    n = dense.size
    for steps in (n, 2 * n):  # a full Krylov space, and past it (breakdown / ghosts)
        top = float(hessian_sharpness(net, params, x, y, jax.random.key(1), steps))
        # Lanczos on the full space is exact up to round-off of n matrix-vector products
        assert abs(top - dense[-1]) < 1e-9 * abs(dense).max(), (steps, top, dense[-1])


@pytest.mark.parametrize("name", sorted(TINY))
def test_gauss_newton_top_eigenvalue_is_ntk_over_p(name):
    net = FiniteNetwork(TINY[name], 5, DATA.input_dim)
    params = net.init(jax.random.key(2))
    x = jnp.asarray(DATA.x_train)
    expected = float(np.linalg.eigvalsh(np.asarray(net.ntk_by_jacobian(params, x)))[-1]) / len(x)
    # η JᵀJ/P and η J Jᵀ/P = K/P share their nonzero spectrum: equal up to round-off
    assert float(ntk_sharpness(net.kernels(params, x)["ntk"])) == pytest.approx(expected, rel=1e-11)
    lanczos = float(gauss_newton_sharpness(net, params, x, jax.random.key(3), 2 * len(x)))
    # the Gauss–Newton operator has rank ≤ P: 2P Lanczos steps span its range
    assert lanczos == pytest.approx(expected, rel=1e-9)


def test_lanczos_top_eigenvalue_of_a_known_matrix():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    eigenvalues = np.concatenate([[5.0, 3.0], rng.uniform(-1, 1, 38)])
    matrix = jnp.asarray(q @ np.diag(eigenvalues) @ q.T)
    top = lanczos_top_eigenvalue(lambda v: matrix @ v, jnp.asarray(rng.normal(size=40)), 25)
    # gap 5 → 3 with the rest in [−1, 1]: 25 steps converge far below 1e-10
    assert float(top) == pytest.approx(5.0, abs=1e-10)
    with pytest.raises(ValueError):
        lanczos_top_eigenvalue(lambda v: v, jnp.ones(3), 0)


def test_sampled_sharpness_keys_match_their_definitions():
    arch = Architecture(1, "tanh", "mup", gamma0=1.5)
    width = 4
    spec = _spec(arch, (0.0, 0.6), optimizer="gd", learning_rate=0.3)
    net = FiniteNetwork(arch, width, DATA.input_dim)
    n = net.num_params
    samples = sample(spec, [width], [0, 1], hessian_steps=2 * n)
    arrays = samples.arrays()
    assert arrays[f"N{width}_sharpness"].shape == (2, 2)
    assert arrays[f"N{width}_hessian_sharpness"].shape == (2, 2)
    ntk = samples[width]["ntk"]
    # λ_max of the recorded NTK over P, per member and time (round-off of eigvalsh)
    np.testing.assert_allclose(samples[width]["sharpness"],
                               np.linalg.eigvalsh(ntk)[..., -1] / DATA.num_train, rtol=1e-12)
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    for row, seed in enumerate((0, 1)):
        params = net.init(member_key(seed, width))
        dense = np.linalg.eigvalsh(_dense_eta_hessian(net, params, x, y))[-1]
        # full Krylov space at t = 0: exact up to round-off
        assert samples[width]["hessian_sharpness"][row, 0] == pytest.approx(dense, rel=1e-9)


@pytest.mark.parametrize("centered", [False, True])
def test_flow_members_record_the_hessian_sharpness_of_their_own_loss(centered):
    arch = Architecture(1, "tanh", "mup", gamma0=2.0)
    width = 4
    net = FiniteNetwork(arch, width, DATA.input_dim)
    members = sample(_spec(arch, (0.0, 0.5)), [width], [2], centered=centered,
                     hessian_steps=2 * net.num_params)[width]
    assert members["hessian_sharpness"].shape == members["sharpness"].shape == (1, 2)
    params = net.init(member_key(2, width))
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    if centered:  # the loss of f(θ) − f(θ0) is the plain loss with targets y + f(θ0)
        y = y + net.predict(params, x)
    dense = np.linalg.eigvalsh(_dense_eta_hessian(net, params, x, y))[-1]
    # full Krylov space at t = 0: exact up to round-off
    assert members["hessian_sharpness"][0, 0] == pytest.approx(dense, rel=1e-9)
    assert np.isfinite(members["hessian_sharpness"][0, 1])


# ---------------------------------------------------------------------------------------------
# residual networks


def test_residual_network_at_vanishing_alpha_is_first_layer_plus_readout():
    arch = Architecture(3, "tanh", "mup", gamma0=1.0, residual_scale=1e-9)
    width, eta0 = 16, 0.25
    spec = _spec(arch, np.array([0, 2, 8]) * eta0, optimizer="gd", learning_rate=eta0)
    samples = sample(spec, [width], [0, 1], hessian_steps=0)
    net = FiniteNetwork(arch, width, DATA.input_dim)
    plain = Architecture(1, "tanh", "mup", gamma0=1.0)
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    for row, seed in enumerate((0, 1)):
        params = net.init(member_key(seed, width))
        first, readout = min(params), max(params)  # the chain's first and last dense layers
        weights = [(params[first]["W"], None), (params[readout]["W"], None)]
        expected, _ = _hand_gd(plain, width, weights, x, y, eta0, [0, 2, 8])
        # the branches add O(α/√L) = O(1e-9) to every pre-activation and gradient
        np.testing.assert_allclose(samples[width]["f_train"][row], expected, rtol=1e-7,
                                   atol=1e-9)


def test_residual_ntk_ensemble_at_init_matches_the_lazy_residual_kernels():
    arch = Architecture(3, "tanh", "ntk", sigma_w=1.2, sigma_b=0.1, residual_scale=1.0)
    spec = _spec(arch, (0.0,))
    width, seeds = 512, 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dual-kernel range notes of the quadrature tier
        samples = sample(spec, [width], seeds, hessian_steps=0)
        comparison = compare(samples, spec)
    assert comparison.limit is not None, comparison.limit_note
    for name in ("phi_L1", "phi_L2", "phi_L3", "g_L1", "g_L2", "g_L3", "ntk", "sharpness"):
        stats = comparison.stats[name][width]
        scale = np.abs(comparison.limit[name]).max()
        # 16 members: 5 standard errors of the mean, plus an O(1/N) bias of a few times 1/N
        assert np.all(np.abs(stats["deviation"]) < 5 * stats["stderr"] + 4 * scale / width), name
    notes = predict_corrections(spec, samples).notes
    assert notes["vertex"].startswith("no prediction") and "residual" in notes["vertex"]
    assert notes["training"].startswith("lazy limit")


def test_residual_specs_train_by_flow_and_euler_steps():
    arch = Architecture(2, "erf", "mup", gamma0=1.0, residual_scale=0.7)
    spec = _spec(arch, (0.0, 0.5))
    flow = sample(spec, [16], 2, hessian_steps=0)[16]
    euler = sample(spec, [16], 2, FixedSteps(1e-3), hessian_steps=0)[16]
    # Euler steps dt = 1e-3 of the same flow: first-order error O(dt · t)
    np.testing.assert_allclose(euler["f_train"], flow["f_train"], atol=2e-3)
    assert np.all(flow["loss_train"][:, 1] < flow["loss_train"][:, 0])


# ---------------------------------------------------------------------------------------------
# bad input through the API


def test_flow_methods_and_their_options_are_refused_for_discrete_rules():
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    gd = _spec(arch, (0.0, 0.5), optimizer="gd", learning_rate=0.25)
    for method in (FixedSteps(0.25), AdaptiveSteps()):
        with pytest.raises(InputError, match="numerical integration of gradient flow"):
            sample(gd, [8], 2, method)
    for table in ({"method": "flow"}, {"dt": 0.25}, {"rtol": 1e-6}):
        spec = dataclasses.replace(gd, sampler=table)
        with pytest.raises(InputError, match=f"sampler.{next(iter(table))}"):
            sample(spec, [8], 2)
    with pytest.raises(InputError, match="training.optimizer = 'flow'"):
        sample(_spec(arch, (0.0, 0.5)), [8], 2, RuleSteps(gd.training.dynamics))
    other = _spec(arch, (0.0, 0.5), optimizer="gd", learning_rate=0.5)
    with pytest.raises(InputError, match="not the spec's training rule"):
        sample(gd, [8], 2, RuleSteps(other.training.dynamics))
    with pytest.raises(InputError, match="multiples of training.learning_rate"):
        train_ensemble(FiniteNetwork(arch, 8, DATA.input_dim), (0.0, 0.3), DATA.x_train,
                       DATA.y_train, method=RuleSteps(gd.training.dynamics))
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="hessian_steps"):
            sample(gd, [8], 2, hessian_steps=bad)
    with pytest.raises(InputError, match="hessian_steps"):
        sample(dataclasses.replace(gd, sampler={"hessian_steps": "many"}), [8], 2)
    with pytest.raises(InputError, match="RuleSteps needs"):
        RuleSteps("gd")


def test_sgd_batch_larger_than_the_data_is_refused_before_work():
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    with pytest.raises(InputError, match="batch_size"):
        _spec(arch, (0.0, 0.5), optimizer="sgd", learning_rate=0.25,
              batch_size=DATA.num_train + 1)
    from dmft.network import SGD

    rule = RuleSteps(SGD(0.25, batch_size=DATA.num_train + 1, seed=0))
    with pytest.raises(InputError, match="batch_size"):
        train_ensemble(FiniteNetwork(arch, 8, DATA.input_dim), (0.0, 0.5), DATA.x_train,
                       DATA.y_train, method=rule)


# ---------------------------------------------------------------------------------------------
# command line


def _write_spec(folder, training, residual=""):
    data = teacher_data(num_train=5, num_test=2, input_dim=3, seed=4)
    np.save(folder / "x.npy", data.x_train)
    np.save(folder / "y.npy", data.y_train)
    np.save(folder / "xt.npy", data.x_test)
    (folder / "spec.toml").write_text(textwrap.dedent(f"""
        [architecture]
        hidden_layers = 2
        activation = "erf"
        parameterization = "ntk"
        sigma_w = 1.2
        {residual}
        [data]
        x_train = "x.npy"
        y_train = "y.npy"
        x_test = "xt.npy"
        [training]
        {training}
    """))
    return folder / "spec.toml"


GD_TRAINING = 'times = [0.0, 0.5, 2.0]\noptimizer = "gd"\nlearning_rate = 0.5'


@pytest.mark.slow  # tens of seconds to minutes on 2 cores (ensembles, long solves): -m slow
def test_cli_sample_gd_residual_writes_sharpness_keys(tmp_path):
    spec = _write_spec(tmp_path, GD_TRAINING, "residual_scale = 1.0")
    out = tmp_path / "out"
    result = run_dmft("sample", str(spec), "--widths", "8,16", "--seeds", "3", "--out", str(out),
                   "--hessian-steps", "8")
    assert result.returncode == 0, result.stderr
    arrays = np.load(out / "samples.npz")
    for width in (8, 16):
        assert arrays[f"N{width}_sharpness"].shape == (3, 3)
        assert arrays[f"N{width}_hessian_sharpness"].shape == (3, 3)
        assert np.all(arrays[f"N{width}_diverged_step"] == -1)
    assert "limit_sharpness" in arrays and "fit_sharpness_limit" in arrays
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["sampler"]["method"] == "RuleSteps"
    assert metadata["sampler"]["method_options"]["rule"]["learning_rate"] == 0.5
    assert "gd (eta0 = 0.5)" in result.stdout and "residual" in result.stdout
    assert "sharpness" in result.stdout
    assert (out / "sample_comparison.png").stat().st_size > 0


def test_cli_sample_reports_diverged_members(tmp_path):
    # η0 λ_max(K)/P far above the catapult window (≈ 2–4): geometric blow-up within 20 steps
    training = 'times = [0.0, 100.0, 200.0]\noptimizer = "gd"\nlearning_rate = 10.0'
    spec = _write_spec(tmp_path, training)
    out = tmp_path / "out"
    result = run_dmft("sample", str(spec), "--widths", "8", "--seeds", "2", "--out", str(out),
                   "--hessian-steps", "0", "--no-predictions")
    assert result.returncode == 0, result.stderr
    arrays = np.load(out / "samples.npz")
    count = int(np.sum(arrays["N8_diverged_step"] >= 0))
    assert count >= 1, arrays["N8_diverged_step"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert f"{count}/2 seeds diverged" in metadata["divergence"]
    assert "diverged" in result.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--dt", "0.1"], "--dt sets a numerical integration of gradient flow"),
        (["--method", "euler"], "--method sets a numerical integration"),
        (["--rtol", "1e-6"], "--rtol"),
        (["--hessian-steps", "-2"], "--hessian-steps"),
        (["--hessian-steps", "x"], "--hessian-steps"),
    ],
)
def test_cli_gd_bad_flags_fail_with_one_line_and_write_nothing(tmp_path, flags, needle):
    spec = _write_spec(tmp_path, GD_TRAINING)
    out = tmp_path / "out"
    result = run_dmft("sample", str(spec), "--widths", "8", "--seeds", "2", "--out", str(out),
                      *flags)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not (out / "samples.npz").exists()


def test_cli_sgd_batch_too_large_and_flow_euler_alias(tmp_path):
    sgd = 'times = [0.0, 0.5]\noptimizer = "sgd"\nlearning_rate = 0.5\nbatch_size = 9'
    spec = _write_spec(tmp_path, sgd)
    result = run_dmft("sample", str(spec), "--widths", "8", "--seeds", "2", "--out",
                   str(tmp_path / "a"))
    assert result.returncode != 0 and "batch_size" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "a" / "samples.npz").exists()
    flow = _write_spec(tmp_path, "times = [0.0, 0.3]")
    result = run_dmft("sample", str(flow), "--widths", "8", "--seeds", "2", "--out",
                   str(tmp_path / "b"), "--method", "euler", "--dt", "0.25", "--no-predictions")
    assert result.returncode != 0 and "multiples" in result.stderr  # 0.3 is not k·0.25


# ---------------------------------------------------------------------------------------------
# lazy responses of the discrete rules (control variates and the NTK variance prediction)


def test_lazy_response_of_gd_and_sgd_equals_the_step_products():
    from dmft.sampler._propagator import lazy_response

    rng = np.random.default_rng(2)
    a = rng.normal(size=(DATA.num_train, DATA.num_train))
    theta = a @ a.T / DATA.num_train + 0.1 * np.eye(DATA.num_train)
    P, eta0 = DATA.num_train, 0.3
    arch = Architecture(1, "erf", "ntk")
    steps = [0, 1, 4, 9]
    gd = _spec(arch, np.array(steps) * eta0, optimizer="gd", learning_rate=eta0)
    sgd = _spec(arch, np.array(steps) * eta0, optimizer="sgd", learning_rate=eta0, batch_size=2,
                seed=5)
    weights = sgd.training.dynamics.batch_weights(P, 9)
    for spec in (gd, sgd):
        decay, growth = lazy_response(spec, theta)
        a_k, m_k = np.eye(P), np.zeros((P, P))
        for k in range(10):
            if k in steps:
                i = steps.index(k)
                # exact recursions in float64: round-off of ≤ 9 products of O(1) matrices
                np.testing.assert_allclose(decay[i], a_k, atol=1e-12)
                np.testing.assert_allclose(growth[i], m_k, atol=1e-12)
            if k == steps[-1]:
                break
            omega = np.ones(P) if spec is gd else weights[k]
            step = np.eye(P) - eta0 / P * theta @ np.diag(omega)
            m_k = m_k + eta0 / P * np.diag(omega) @ a_k
            a_k = step @ a_k
    flow = _spec(arch, (0.0, 0.7))
    decay, growth = lazy_response(flow, theta)
    eigvals, eigvecs = np.linalg.eigh(theta)
    expected = eigvecs @ np.diag(np.exp(-eigvals * 0.7 / P)) @ eigvecs.T
    np.testing.assert_allclose(decay[1], expected, atol=1e-13)  # e^{−Θt/P}, round-off
    np.testing.assert_allclose(growth[1], np.linalg.solve(theta, np.eye(P) - expected), atol=1e-12)
