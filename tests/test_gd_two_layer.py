"""Exact infinite-width GD and SGD of two-layer μP networks (derivations/finite_step_two_layer.md):
the particle map against the exact moment map (φ = identity), the lazy GD closed form at γ0 → 0,
gradient flow as η0 → 0, SGD with full batches, and the catapult / edge-of-stability regime
against real finite-width networks trained by plain GD (an independent trainer, written here)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmft import Architecture, Data, InputError, Spec, Training, solve_lazy
from dmft._errors import SolveError
from dmft.solvers import TwoLayerDMFT, TwoLayerMoments

SMALL = TwoLayerDMFT(particles=512, batches=4)  # enough for exact-in-expectation comparisons


def problem(seed, num_train=6, num_test=2, input_dim=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, input_dim))
    y = np.tanh(x @ rng.standard_normal(input_dim) / np.sqrt(input_dim)) + 0.2
    return Data(x[:num_train], y[:num_train], x_test=x[num_train:], y_test=y[num_train:])


def lazy_sharpness(data, activation):
    """λ_max(K0)/P of the lazy NTK (γ0 → 0) of a two-layer network."""
    return float(solve_lazy(Spec(Architecture(1, activation), data, Training((0.0,))))
                 .sharpness[0])


def gd_spec(data, activation, gamma0, ratio, steps, **rule):
    """A two-layer μP spec trained with η0 = ratio·P/λ_max(K0), saved at `steps`."""
    eta = ratio / lazy_sharpness(data, activation)
    rule = {"optimizer": "gd", **rule}
    return Spec(Architecture(1, activation, "mup", gamma0=gamma0), data,
                Training(tuple(eta * k for k in steps), learning_rate=eta, **rule))


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 3.0), st.floats(0.1, 1.9))
def test_linear_particles_take_the_exact_moment_map(seed, gamma0, ratio):
    # For φ = identity with moment matching the particle map depends on the sources only through
    # their second moments, which it shares with the moment closure: both are the same exact GD.
    spec = gd_spec(problem(seed), "linear", gamma0, ratio, (0, 1, 4, 15))
    try:
        moments = TwoLayerMoments().solve(spec)
    except SolveError as error:  # large γ0 η0 can blow up: then both blow up at the same step
        step = str(error).split("diverged at step ")[1].split()[0]
        assert error.step == int(step)
        with pytest.raises(SolveError, match=f"diverged at step {step} "):
            SMALL.solve(spec)
        return
    particles = SMALL.solve(spec)
    # The two differ only by round-off in sums over 512 particles over 15 steps.
    np.testing.assert_allclose(particles.f_train, moments.f_train, atol=1e-10)
    np.testing.assert_allclose(particles.f_test, moments.f_test, atol=1e-10)
    np.testing.assert_allclose(particles.ntk, moments.ntk, atol=1e-9 * np.abs(moments.ntk).max())


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_small_gamma0_gd_is_the_lazy_gd_closed_form(activation):
    data = problem(11)
    spec = gd_spec(data, activation, 1e-3, 1.5, (0, 1, 3, 10, 30))
    lazy = solve_lazy(spec)  # the γ0 → 0 limit by the closed form (I − (I − η0K/P)^k) y
    for method in (SMALL, TwoLayerMoments()) if activation == "linear" else (SMALL,):
        solution = method.solve(spec)
        # Corrections start at γ0² = 1e-6 (eq:odd_orders; the antithetic particles keep the
        # symmetry exactly), times an O(1) coefficient that grows with the step count; the
        # control variate makes the lazy part exact at every S.
        np.testing.assert_allclose(solution.f_train, lazy.f_train, atol=2e-5)
        np.testing.assert_allclose(solution.f_test, lazy.f_test, atol=2e-5)
        np.testing.assert_allclose(solution.ntk, lazy.ntk, atol=2e-5)


def test_gd_tends_to_flow_at_first_order():
    data = problem(5)
    scale = lazy_sharpness(data, "tanh")
    t_end = 1.5 / scale
    arch = Architecture(1, "tanh", "mup", gamma0=1.0)
    method = TwoLayerDMFT(particles=512, batches=4, rtol=1e-11, atol=1e-12)
    flow = method.solve(Spec(arch, data, Training((0.0, t_end))))
    errors = []
    for divisor in (8, 16, 32):
        eta = t_end / divisor
        gd = method.solve(Spec(arch, data, Training((0.0, t_end), optimizer="gd",
                                                     learning_rate=eta)))
        errors.append(np.abs(gd.f_train[-1] - flow.f_train[-1]).max())
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    # The same particles (same seed) under an explicit first-order map: the global error is
    # c·η0 + O(η0²), so halving η0 halves it up to an O(η0 λ/P) <= 0.2 relative correction.
    np.testing.assert_allclose(ratios, 0.5, atol=0.1)
    assert errors[-1] < 0.05 * np.abs(flow.f_train[-1]).max()


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["tanh", "erf", "linear"]), st.floats(0.2, 1.9))
def test_sgd_with_full_batches_is_gd(seed, activation, ratio):
    data = problem(seed)
    gd = SMALL.solve(gd_spec(data, activation, 1.0, ratio, (0, 2, 9)))
    sgd = SMALL.solve(gd_spec(data, activation, 1.0, ratio, (0, 2, 9), optimizer="sgd",
                              batch_size=6, seed=seed % 97))
    # ω = P/B = 1 on every point: the same arithmetic, bit for bit up to summation order.
    np.testing.assert_allclose(sgd.f_train, gd.f_train, atol=1e-12)
    np.testing.assert_allclose(sgd.ntk, gd.ntk, atol=1e-12)


def test_sgd_batches_follow_the_seed():
    data = problem(2)

    def run(seed):
        return TwoLayerMoments().solve(gd_spec(data, "linear", 1.0, 0.8, (0, 5, 12),
                                               optimizer="sgd", batch_size=2, seed=seed)).f_train

    np.testing.assert_array_equal(run(3), run(3))
    assert np.abs(run(3) - run(4)).max() > 1e-6  # other batches, other path


def test_unstable_learning_rate_is_a_solve_error_naming_the_step():
    data = problem(4)
    spec = gd_spec(data, "linear", 0.5, 4.0, (0, 100))
    for method in (SMALL, TwoLayerMoments()):
        with pytest.raises(SolveError, match=r"diverged at step \d+ .*loss"):
            method.solve(spec)


def test_refused_options_name_the_key():
    spec = gd_spec(problem(1), "tanh", 1.0, 1.0, (0, 1))
    with pytest.raises(InputError, match="training.learning_rate"):
        Training((0.0, 1.0), optimizer="gd", learning_rate=-1.0)
    with pytest.raises(InputError, match="architecture.activation"):
        TwoLayerMoments().solve(spec)  # the closure is for φ = identity only


# ----------------------------------------------------------------------------------------------
# The catapult / edge-of-stability regime against real networks


def finite_width_gd(x, y, gamma0, eta, width, seed, num_steps):
    """Plain GD of a real two-layer μP network f = a·tanh(Wx/√D)/(γ0 N), W, a ~ N(0, 1), with
    θ ← θ − η0 γ0² N ∇𝓛 (docs/conventions.md §1b, §2a). Returns the loss and λ_max(K)/P before
    each step 0..num_steps, K = γ0² N J Jᵀ from the Jacobian J = ∂f/∂θ."""
    num_train, input_dim = x.shape
    key_w, key_a = jax.random.split(jax.random.PRNGKey(seed))
    params = (jax.random.normal(key_w, (width, input_dim)), jax.random.normal(key_a, (width,)))

    def forward(params):
        w, a = params
        return jnp.tanh(x @ w.T / jnp.sqrt(input_dim)) @ a / (gamma0 * width)

    def loss(params):
        return 0.5 * jnp.mean((forward(params) - y) ** 2)

    def sharpness(params):
        jac = jax.jacrev(forward)(params)
        flat = jnp.concatenate([j.reshape(num_train, -1) for j in jax.tree.leaves(jac)], axis=1)
        ntk = gamma0**2 * width * flat @ flat.T
        return jnp.linalg.eigvalsh(ntk)[-1] / num_train

    def step(params, _):
        grads = jax.grad(loss)(params)
        new = jax.tree.map(lambda p, g: p - eta * gamma0**2 * width * g, params, grads)
        return new, (loss(params), sharpness(params))

    _, (losses, sharp) = jax.lax.scan(step, params, None, length=num_steps + 1)
    return np.asarray(losses), np.asarray(sharp)


@functools.cache
def ensemble(width, seeds, eta, num_steps, data_seed):
    data = catapult_data(data_seed)
    out = [finite_width_gd(jnp.asarray(data.x_train), jnp.asarray(data.y_train), 1.0, eta, width,
                           seed, num_steps) for seed in range(seeds)]
    losses = np.array([o[0] for o in out])
    sharp = np.array([o[1] for o in out])
    return losses, sharp


def catapult_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 4))
    y = 1.5 * np.tanh(x @ rng.standard_normal(4) / 2.0)
    return Data(x, y)


def test_catapult_regime_converges_and_matches_real_networks():
    data_seed, num_steps, seeds = 3, 40, 12
    data = catapult_data(data_seed)
    eta = 1.8 / lazy_sharpness(data, "tanh")
    spec = Spec(Architecture(1, "tanh", "mup", gamma0=1.0), data,
                Training(tuple(eta * k for k in range(num_steps + 1)), optimizer="gd",
                         learning_rate=eta))
    solution = TwoLayerDMFT(particles=16384, batches=8).solve(spec)
    loss = solution.losses(data.y_train)["loss_train"]
    # It runs (no SolveError) and converges: the loss falls, spikes, and falls again.
    low = int(np.argmin(loss[:25]))
    peak = low + int(np.argmax(loss[low:]))
    assert loss[peak] > 3 * loss[low] and loss[-1] < loss[peak] / 3
    assert eta * solution.sharpness.max() > 2.0  # the kernel sharpened past the edge
    assert eta * solution.sharpness[-1] < eta * solution.sharpness.max() - 0.3  # and came back

    # Real networks: the mean over seeds at N = 4096 and N = 1024 extrapolated linearly in 1/N
    # (the finite-width bias of an ensemble mean is O(1/N); its noise O(N^{-1/2})/√seeds).
    big_l, big_s = ensemble(4096, seeds, eta, num_steps, data_seed)
    small_l, small_s = ensemble(1024, seeds, eta, num_steps, data_seed)
    for name, big, small, value, value_se in (
        ("loss", big_l, small_l, loss, solution.stderr["loss_train"]),
        ("sharpness", big_s, small_s, solution.sharpness, solution.stderr["sharpness"]),
    ):
        mean_big, mean_small = big.mean(0), small.mean(0)
        se_big = big.std(0, ddof=1) / np.sqrt(seeds)
        se_small = small.std(0, ddof=1) / np.sqrt(seeds)
        limit = mean_big - (mean_small - mean_big) / 3  # c/N: N = 1024 sits 3× further off
        sigma = np.sqrt(value_se**2 + (4 / 3 * se_big) ** 2 + (se_small / 3) ** 2)
        scale = value[0]
        # 3σ of the combined standard errors (particle batches, both ensembles through the
        # extrapolation weights 4/3 and 1/3) plus 1% of the initial value for the O(1/N²) rest
        # of the extrapolation. σ is largest at the spike, where the seeds spread most.
        excess = np.abs(value - limit) - (3 * sigma + 0.01 * scale)
        assert np.all(excess <= 0), (name, int(np.argmax(excess)), excess.max() / scale)


def test_dmft_run_of_a_two_layer_gd_spec(tmp_path):
    import json

    from dmft.cli import main

    data = problem(8)
    np.save(tmp_path / "x.npy", data.x_train)
    np.save(tmp_path / "y.npy", data.y_train)
    eta = 1.0 / lazy_sharpness(data, "tanh")
    body = """
[architecture]
hidden_layers = 1
activation = "tanh"
parameterization = "mup"
gamma0 = {gamma0}

[data]
x_train = "x.npy"
y_train = "y.npy"

[training]
times = [{times}]
optimizer = "gd"
learning_rate = {eta!r}

[solver]
method = "two_layer"
particles = 256
batches = 4
"""
    spec = tmp_path / "spec.toml"
    spec.write_text(body.format(gamma0=1.0, eta=eta, times=", ".join(repr(eta * k)
                                                                     for k in (0, 1, 2, 5))))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    result = np.load(out / "result.npz")
    assert result["sharpness"].shape == result["sharpness_stderr"].shape == (4,)
    assert result["loss_train_stderr"].shape == (4,)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"]["optimizer"] == "gd" and metadata["solver"]["steps"] == 5
    # an unstable rich run: exit 3 naming the step, and the earlier result stays as it was
    before = (out / "result.npz").read_bytes()
    big = 6.0 * eta
    spec.write_text(body.format(gamma0=0.5, eta=big, times=", ".join(repr(big * k)
                                                                     for k in (0, 200))))
    assert main(["run", str(spec), "--out", str(out)]) == 3
    assert (out / "result.npz").read_bytes() == before
    other = tmp_path / "fresh"
    assert main(["run", str(spec), "--out", str(other)]) == 3
    assert not other.exists() or not any(other.iterdir())


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 2.0), st.floats(0.1, 1.5))
def test_output_comes_from_the_read_out_not_an_euler_step_of_f(seed, gamma0, ratio):
    # φ = identity: f' = m'/γ0 with the exact moment map gives, with e = Δ_k and c = η0γ0/P,
    # f_{k+1} − f_k − (η0/P) K_k e = c² (e·f_k) Φ^0 e: the GD curvature an Euler step of f drops.
    data = problem(seed)
    spec = gd_spec(data, "linear", gamma0, ratio, (0, 1, 2, 3))
    try:
        solution = SMALL.solve(spec)
    except SolveError:
        return  # blew up within 3 steps (large γ0 η0): nothing to compare
    eta, num_train = spec.training.learning_rate, 6
    kx = data.x_train @ data.x_train.T / data.input_dim
    for k in (1, 2):
        e = data.y_train - solution.f_train[k]
        curvature = (solution.f_train[k + 1] - solution.f_train[k]
                     - eta / num_train * solution.ntk[k] @ e)
        expected = (eta * gamma0 / num_train) ** 2 * (e @ solution.f_train[k]) * kx @ e
        # exact identity; round-off of sums over 512 particles on O(1) outputs
        np.testing.assert_allclose(curvature, expected, atol=1e-11)


def test_tanh_step_curvature_is_even_in_gamma0():
    # The per-step gap between the read-out and an Euler step of f is O(η0² γ0²): the
    # (r, γ0) → (−r, −γ0) symmetry (eq:odd_orders) removes the odd orders.
    data = problem(3)
    eta = 0.2 / lazy_sharpness(data, "tanh")
    method = TwoLayerDMFT(particles=2048, batches=2)
    gaps = []
    for gamma0 in (0.125, 0.25):
        spec = Spec(Architecture(1, "tanh", "mup", gamma0=gamma0), data,
                    Training((0.0, eta, 2 * eta), optimizer="gd", learning_rate=eta))
        s = method.solve(spec)
        gap = s.f_train[2] - s.f_train[1] - eta / 6 * s.ntk[1] @ (data.y_train - s.f_train[1])
        gaps.append(np.abs(gap).max())
    # doubling γ0 multiplies it by 4 up to the O(γ0²) relative next order (<= 0.1 here)
    assert 3.4 < gaps[1] / gaps[0] < 4.6, gaps
