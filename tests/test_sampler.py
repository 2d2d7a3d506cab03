"""Finite-width sampler: networks, training, ensembles, limits and predicted 1/N corrections."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_dmft

from dmft import Architecture, Data, InputError, Spec, Training
from dmft.kernels import layer_kernels
from dmft.sampler import (
    AdaptiveSteps,
    FiniteNetwork,
    FixedSteps,
    TangentPropagator,
    compare,
    fit_inverse_width,
    member_bytes,
    plan_batches,
    predict_training_fluctuations,
    sample,
    train_ensemble,
    variance_with_error,
    vertex_prediction,
)
from dmft.solvers import solve_lazy
from dmft.spec import teacher_data

ARCHS = {
    "ntk_bias": Architecture(2, "tanh", "ntk", sigma_w=1.3, sigma_b=0.2),
    "ntk_nobias": Architecture(1, "erf", "ntk", sigma_w=1.5),
    "mup": Architecture(2, "tanh", "mup", gamma0=1.5),
}


@pytest.fixture(scope="module")
def small_data():
    return teacher_data(num_train=6, num_test=3, input_dim=4, seed=3)


def _slope(widths, errors):
    return np.polyfit(np.log(widths), np.log(errors), 1)[0]


# ---------------------------------------------------------------------------------------------
# the network itself


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_layer_formula_ntk_equals_parameter_jacobian_ntk(small_data, name):
    net = FiniteNetwork(ARCHS[name], 48, small_data.input_dim)
    params = net.init(jax.random.key(7))
    x = jnp.asarray(small_data.x_train)
    by_layers = net.kernels(params, x)["ntk"]
    by_jacobian = net.ntk_by_jacobian(params, x)
    # Two exact float64 evaluations of the same finite sums (~10³ terms of O(1)): round-off only.
    np.testing.assert_allclose(by_layers, by_jacobian, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_function_space_flow_is_ntk_times_error_at_finite_width(small_data, name):
    """∂t f = (1/P) K Δ with K = η Σ_θ ∂f∂f holds exactly under dθ/dt = −η∇𝓛, at any width."""
    net = FiniteNetwork(ARCHS[name], 32, small_data.input_dim)
    params = net.init(jax.random.key(1))
    x, y = jnp.asarray(small_data.x_train), jnp.asarray(small_data.y_train)
    velocity = net.flow(params, x, y)
    _, df_dt = jax.jvp(lambda p: net.predict(p, x), (params,), (velocity,))
    kernel = net.kernels(params, x)["ntk"]
    expected = kernel @ (y - net.predict(params, x)) / x.shape[0]
    # chain rule identity evaluated in float64: agreement to round-off
    np.testing.assert_allclose(df_dt, expected, rtol=1e-11, atol=1e-12)


def test_mup_output_scale_and_learning_rate_follow_conventions(small_data):
    arch = ARCHS["mup"]
    net = FiniteNetwork(arch, 64, small_data.input_dim)
    params = net.init(jax.random.key(0))
    f, hs = net.apply(params, jnp.asarray(small_data.x_train))
    features = jnp.tanh(hs[-1])
    # f = w·φ(h^L)/(γ0 N): the same sum computed by hand; round-off only
    readout_weights = params[max(params)]["W"][0]  # the read-out Dense layer's w (1, N)
    np.testing.assert_allclose(f, features @ readout_weights / (arch.gamma0 * 64), rtol=1e-12)
    assert net.learning_rate == pytest.approx(arch.gamma0**2 * 64)


# ---------------------------------------------------------------------------------------------
# initialization: convergence to the analytic kernels at rate 1/√N


@pytest.fixture(scope="module")
def init_ensembles(small_data):
    spec = Spec(ARCHS["ntk_bias"], small_data, Training((0.0,)))
    return spec, sample(spec, [32, 128, 512], 32)


def test_initial_kernels_converge_to_analytic_with_inverse_sqrt_width(init_ensembles):
    spec, samples = init_ensembles
    arch = spec.architecture
    exact = layer_kernels(arch, spec.data.x_train)
    L = arch.hidden_layers
    targets = {
        "ntk": (lambda m: m["ntk"][:, 0], np.asarray(exact.ntk[L])),
        "nngp": (lambda m: arch.sigma_w**2 * m["phi"][:, 0, L - 1] + arch.sigma_b**2,
                 np.asarray(exact.nngp[L])),
        "phi_L1": (lambda m: m["phi"][:, 0, 0],
                   (np.asarray(exact.nngp[1]) - arch.sigma_b**2) / arch.sigma_w**2),
    }
    for name, (measure, target) in targets.items():
        errors = []
        for width in samples.widths:
            diff = measure(samples[width]) - target
            errors.append(np.sqrt(np.mean(np.sum(diff**2, axis=(-2, -1)))) / np.linalg.norm(target))
        slope = _slope(samples.widths, errors)
        # RMS error² = tr Var/‖K‖² ∝ 1/N (+ O(1/N²) bias²); with 32 seeds × 36 entries per width
        # the fitted slope scatters by ~0.05, so ±0.12 around −1/2 separates it from 0 and −1.
        assert abs(slope + 0.5) < 0.12, (name, slope, errors)
        assert errors[-1] < 0.15, (name, errors)  # width 512: a few % (1/√512 ≈ 0.044 scale)


def test_backward_kernels_at_init_match_lazy_gradient_kernels(init_ensembles):
    spec, samples = init_ensembles
    exact = layer_kernels(spec.architecture, spec.data.x_train)
    # G^L = Σ̇^{L+1} (G^{L+1} = 1), G^1 = Σ̇^2 ⊙ Σ̇^3 with g = √N ∂f/∂h (module docstring)
    g_top = np.asarray(exact.nngp_derivative[2])
    g_bottom = np.asarray(exact.nngp_derivative[1]) * g_top
    member = samples[512]
    for measured, target in ((member["g"][:, 0, 1], g_top), (member["g"][:, 0, 0], g_bottom)):
        mean, err = measured.mean(0), measured.std(0, ddof=1) / np.sqrt(measured.shape[0])
        # ensemble mean at N = 512: within 5 standard errors plus an O(1/N) bias of 1e-2·|G|
        assert np.all(np.abs(mean - target) < 5 * err + 1e-2 * np.abs(target).max())


# ---------------------------------------------------------------------------------------------
# training


@pytest.fixture(scope="module")
def lazy_spec(small_data):
    return Spec(ARCHS["ntk_nobias"], small_data, Training((0.0, 0.5, 2.0, 8.0)))


@pytest.fixture(scope="module")
def centered_samples(lazy_spec):
    return sample(lazy_spec, [32, 512], 8, centered=True)


def test_centered_ntk_networks_approach_lazy_curves_as_width_grows(lazy_spec, centered_samples):
    lazy = solve_lazy(lazy_spec)
    samples = centered_samples
    rms = []
    for width in samples.widths:
        member = samples[width]
        np.testing.assert_array_equal(member["f_train"][:, 0], 0.0)  # centred: f(0) = 0 exactly
        rms.append(np.sqrt(np.mean((member["f_train"] - lazy.f_train) ** 2)))
    # single-network deviation from the lazy curve is O(1/√N): a 16× wider net is ~4× closer;
    # demanding 2.5× leaves room for the 8-seed scatter (~25 %) of each RMS estimate.
    assert rms[1] < rms[0] / 2.5, rms
    assert rms[1] < 0.05, rms  # O(1) targets; 1/√512 ≈ 0.044 times an O(1) prefactor


def test_uncentered_ntk_variance_matches_lazy_prediction(lazy_spec):
    samples = sample(lazy_spec, [256], 96)
    predicted = predict_training_fluctuations(lazy_spec)
    var, err = variance_with_error(samples[256]["f_train"])
    # Var f(t) = e^{−Θt/P} Σ e^{−Θt/P} + O(1/N): 5 sampling standard errors (96 seeds, ~15 %)
    # plus 10 % for the finite-width correction at N = 256.
    assert np.all(np.abs(var - predicted.f_train) < 5 * err + 0.1 * predicted.f_train), (
        var, predicted.f_train)


def test_same_seed_gives_same_member_whatever_the_batch(lazy_spec, small_data):
    net = FiniteNetwork(lazy_spec.architecture, 24, small_data.input_dim)
    times = lazy_spec.training.times
    args = (net, times, small_data.x_train, small_data.y_train)
    both = train_ensemble(*args, seeds=[3, 5])
    alone = train_ensemble(*args, seeds=[5], pad_to=2)  # seed 5 in slot 0 instead of slot 1
    again = train_ensemble(*args, seeds=[5], pad_to=2)
    np.testing.assert_array_equal(alone["f_train"], again["f_train"])  # same call: bitwise
    # a member's adaptive steps are its own under vmap; its batch slot may only reorder round-off
    np.testing.assert_allclose(both["f_train"][1], alone["f_train"][0], rtol=1e-10, atol=1e-12)
    assert not np.allclose(both["f_train"][0], both["f_train"][1])  # different seeds differ


def test_gradient_descent_converges_to_gradient_flow_at_first_order(lazy_spec, small_data):
    net = FiniteNetwork(lazy_spec.architecture, 32, small_data.input_dim)
    args = (net, lazy_spec.training.times, small_data.x_train, small_data.y_train)
    flow = train_ensemble(*args, seeds=[0], method=AdaptiveSteps(rtol=1e-10, atol=1e-10))
    errors = []
    for dt in (0.02, 0.01):
        gd = train_ensemble(*args, seeds=[0], method=FixedSteps(dt))
        errors.append(np.abs(gd["f_train"] - flow["f_train"]).max())
    # explicit Euler is first order: halving dt halves the error (ratio 2 up to O(dt) terms)
    assert 1.7 < errors[0] / errors[1] < 2.3, errors


FOUR_DEVICES = textwrap.dedent(
    """
    import sys, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 4, jax.devices()
    from dmft import Architecture, Spec, Training
    from dmft.sampler import sample
    from dmft.spec import teacher_data
    spec = Spec(Architecture(1, "erf", "ntk", sigma_w=1.5), teacher_data(6, 3, 4, seed=3),
                Training((0.0, 0.5, 2.0)))
    s = sample(spec, [24], 6)
    np.savez(sys.argv[1], **s.arrays())
    """
)


def test_one_and_four_devices_give_identical_ensembles(tmp_path):
    spec = Spec(Architecture(1, "erf", "ntk", sigma_w=1.5), teacher_data(6, 3, 4, seed=3),
                Training((0.0, 0.5, 2.0)))
    one = sample(spec, [24], 6).arrays()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", DMFT_PROGRESS="0")
    out = tmp_path / "four.npz"
    subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(out)], check=True, env=env,
                   timeout=600)
    four = dict(np.load(out))
    for key in ("N24_f_train", "N24_ntk", "N24_phi_L1", "N24_f_test"):
        # same seeds → same members; sharding changes only how XLA batches the round-off
        np.testing.assert_allclose(four[key], one[key], rtol=1e-10, atol=1e-12)


def test_wide_mup_networks_agree_with_dmft_within_error_bars():
    spec = Spec(Architecture(1, "tanh", "mup", gamma0=1.0), teacher_data(6, 0, 4, seed=3),
                Training((0.0, 1.0, 3.0)))
    comparison = compare(sample(spec, [512], 24), spec)  # limit: dmft.solve (two-layer DMFT)
    assert comparison.limit is not None, comparison.limit_note
    stats = comparison.stats["f_train"][512]
    noise = np.hypot(stats["stderr"], comparison.limit.get("f_train_stderr", 0.0))
    # 5 combined standard errors (24 networks, particle DMFT) plus the O(1/N) bias ≲ 1/512
    assert np.all(np.abs(stats["deviation"]) < 5 * noise + 2.0 / 512), (stats["deviation"], noise)


# ---------------------------------------------------------------------------------------------
# comparison with the limit


def test_inverse_width_fit_recovers_planted_law_exactly():
    rng = np.random.default_rng(0)
    widths = np.array([64, 128, 512, 2048])
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    means = a + b / widths[:, None, None]
    stderrs = rng.uniform(0.01, 0.1, (4, 3, 2))
    fit = fit_inverse_width(widths, means, stderrs)
    # noiseless data on the model: the weighted solve is exact up to round-off
    np.testing.assert_allclose(fit.limit, a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.slope, b, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(fit.chi2, 0.0, atol=1e-16)
    # uncertainties: for two widths and unit errors the closed form of a straight-line fit
    two = fit_inverse_width([1, 2], np.zeros((2, 1)), np.ones((2, 1)))
    # x = (1, 1/2): Var a = Σx²/det = 1.25/0.25 = 5, Var b = n/det = 2/0.25 = 8
    np.testing.assert_allclose(two.limit_err**2, 5.0)
    np.testing.assert_allclose(two.slope_err**2, 8.0)


def test_compare_reports_statistics_fits_and_deviation(lazy_spec, centered_samples):
    samples = centered_samples
    comparison = compare(samples, lazy_spec)
    arrays = comparison.arrays()
    lazy = solve_lazy(lazy_spec)
    np.testing.assert_allclose(arrays["limit_f_train"], lazy.f_train)
    # centred networks: the mean loss converges to the lazy loss itself (no f(0) spread term)
    np.testing.assert_allclose(arrays["limit_loss_train"], lazy.losses(lazy_spec.data.y_train)["loss_train"])
    mean = samples[512]["f_train"].mean(0)
    np.testing.assert_allclose(arrays["N512_f_train_deviation"], mean - lazy.f_train)
    fit = fit_inverse_width(samples.widths, np.stack([samples[w]["f_train"].mean(0) for w in samples.widths]),
                            np.stack([samples[w]["f_train"].std(0, ddof=1) / np.sqrt(8)
                                      for w in samples.widths]))
    np.testing.assert_allclose(arrays["fit_f_train_slope"], fit.slope)
    assert arrays["fit_ntk_limit"].shape == (4, 6, 6)
    assert arrays["summary_loss_train_bias"].shape == (2,)
    assert arrays["N32_ntk_nvar"].shape == (4, 6, 6)


# ---------------------------------------------------------------------------------------------
# predicted corrections


def test_vertex_recursion_gives_five_l_minus_one_k_squared_for_critical_relu():
    arch = Architecture(4, "relu", "ntk", sigma_w=np.sqrt(2.0))
    x = np.full((1, 3), 0.7)
    K = 2.0 * 0.49  # Σ^1 = σ_w² |x|²/D, constant through the layers at criticality
    nvar_phi = vertex_prediction(arch, x)[:, 0, 0]
    # V^(ℓ+1) = C_W² N Var Φ^ℓ = 5 ℓ K²; the kink-aware rule is exact for ReLU moments
    np.testing.assert_allclose(4.0 * nvar_phi, 5.0 * np.arange(1, 5) * K**2, rtol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.slow  # tens of seconds to minutes on 2 cores (ensembles, long solves): -m slow
def test_vertex_prediction_matches_measured_kernel_fluctuations(activation):
    sigma_w = np.sqrt(2.0) if activation == "relu" else 1.2
    arch = Architecture(2, activation, "ntk", sigma_w=sigma_w, sigma_b=0.0)
    x = np.array([[1.0, 0.3, -0.5], [0.4, -1.1, 0.6]])
    spec = Spec(arch, Data(x, np.zeros(2)), Training((0.0,)))
    width, seeds = 256, 1000
    samples = sample(spec, [width], seeds)
    var, err = variance_with_error(samples[width]["phi"][:, 0])
    predicted = vertex_prediction(arch, x)
    # leading order in 1/N: 5 standard errors of the variance (1000 seeds, ~5-10 %) plus 8 % for
    # the O(1/N) correction at N = 256 (relu ℓ = 2: 10.35 vs 10 at N = 64 in the notes)
    assert np.all(np.abs(width * var - predicted) < 5 * width * err + 0.08 * np.abs(predicted)), (
        width * var, predicted)


def test_two_layer_propagator_at_initialization_is_output_variance():
    data = teacher_data(num_train=3, num_test=0, input_dim=4, seed=1)
    spec = Spec(Architecture(1, "erf", "mup", gamma0=2.0), data, Training((0.0, 0.5)))
    prediction = predict_training_fluctuations(spec, TangentPropagator(particles=4096,
                                                                       directions=96))
    exact = layer_kernels(Architecture(1, "erf", "ntk"), data.x_train)
    # N Var f(0) = E[φ(h)²]/γ0² = Σ^2_μμ/γ0²; Monte Carlo over 96 directions and 4096
    # particles: 5 reported standard errors plus 3 % for the particle sampling of the measure
    target = np.diag(np.asarray(exact.nngp[1])) / 2.0**2
    assert np.all(np.abs(prediction.f_train[0] - target)
                  < 5 * prediction.f_train_err[0] + 0.03 * target), (prediction.f_train[0], target)


@pytest.mark.slow  # tens of seconds to minutes on 2 cores (ensembles, long solves): -m slow
def test_two_layer_propagator_matches_finite_width_training_variance():
    data = teacher_data(num_train=4, num_test=0, input_dim=4, seed=2)
    spec = Spec(Architecture(1, "tanh", "mup", gamma0=1.0), data, Training((0.0, 1.0, 3.0)))
    prediction = predict_training_fluctuations(spec, TangentPropagator(directions=256))
    width = 128
    samples = sample(spec, [width], 400)
    var, err = variance_with_error(samples[width]["f_train"])
    # O(1/N) theory vs 400-seed ensemble: 5 combined standard errors plus 10 % for O(1/N²)
    tol = 5 * np.hypot(width * err, prediction.f_train_err) + 0.1 * prediction.f_train
    assert np.all(np.abs(width * var - prediction.f_train) < tol), (width * var, prediction.f_train)


# ---------------------------------------------------------------------------------------------
# bad input and the command line


def test_bad_widths_seeds_and_memory_are_one_line_input_errors(lazy_spec):
    with pytest.raises(InputError, match="widths"):
        sample(lazy_spec, [64, 0], 4)
    with pytest.raises(InputError, match="seeds"):
        sample(lazy_spec, [64], 0)
    with pytest.raises(InputError, match="needs .* GiB"):
        plan_batches(lazy_spec, [10**6], 4, AdaptiveSteps(), max_memory_gib=1.0)
    with pytest.raises(InputError, match="multiples"):
        sample(lazy_spec, [8], 2, FixedSteps(dt=0.3))
    with pytest.raises(InputError, match="dt"):
        FixedSteps(dt=-1.0)


def test_memory_plan_fits_width_8192_and_shrinks_batches_with_width():
    data = teacher_data(num_train=32, num_test=0, input_dim=16)
    spec = Spec(Architecture(2, "tanh", "mup"), data, Training(tuple(np.linspace(0, 10, 100))))
    plan = plan_batches(spec, [256, 2048, 8192], 16, AdaptiveSteps(), max_memory_gib=14.0)
    # 8192² weights × 18 solver copies × 8 B ≈ 9.0 GiB per member: one member fits in 14 GiB
    assert plan[8192] >= 1
    assert plan[256] == 16 and plan[256] >= plan[2048] >= plan[8192]
    net = FiniteNetwork(spec.architecture, 8192, 16)
    estimate = member_bytes(net, AdaptiveSteps(), 32, 32, 100) / 2**30
    assert 8.5 < estimate < 10.0, estimate  # ≈ 67.2M params × 18 × 8 B plus fields and outputs


def _write_spec(folder, parameterization="ntk", hidden_layers=1):
    data = teacher_data(num_train=5, num_test=2, input_dim=3, seed=4)
    np.save(folder / "x.npy", data.x_train)
    np.save(folder / "y.npy", data.y_train)
    np.save(folder / "xt.npy", data.x_test)
    extra = 'sigma_w = 1.2' if parameterization == "ntk" else "gamma0 = 1.0"
    (folder / "spec.toml").write_text(textwrap.dedent(f"""
        [architecture]
        hidden_layers = {hidden_layers}
        activation = "erf"
        parameterization = "{parameterization}"
        {extra}
        [data]
        x_train = "x.npy"
        y_train = "y.npy"
        x_test = "xt.npy"
        [training]
        times = [0.0, 0.5, 2.0]
    """))
    return folder / "spec.toml"


def test_cli_sample_writes_samples_comparison_and_figure(tmp_path):
    spec = _write_spec(tmp_path)
    out = tmp_path / "out"
    result = run_dmft("sample", str(spec), "--widths", "8,32", "--seeds", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    arrays = np.load(out / "samples.npz")
    assert arrays["N8_f_train"].shape == (3, 3, 5)
    assert arrays["N32_ntk"].shape == (3, 3, 5, 5)
    assert arrays["t"].shape == (3,)
    for key in ("limit_f_train", "fit_ntk_limit", "N32_f_test", "pred_vertex_nvar_phi",
                "pred_var_f_train", "N32_meas_var_f_train"):
        assert key in arrays, key
    assert (out / "sample_comparison.pdf").stat().st_size > 0
    assert (out / "sample_comparison.png").stat().st_size > 0
    assert json.loads((out / "metadata.json").read_text())["command"] == "sample"
    assert "predicted" in result.stdout and "|mean-limit|" in result.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--widths", "0,16"], "--widths"),
        (["--widths", "abc"], "--widths"),
        (["--seeds", "-2"], "--seeds"),
        (["--widths", "100000000"], "GiB"),
        (["--method", "gd", "--dt", "0.3"], "multiples"),
    ],
)
def test_cli_bad_flags_fail_with_one_line_and_write_nothing(tmp_path, flags, needle):
    spec = _write_spec(tmp_path)
    out = tmp_path / "out"
    result = run_dmft("sample", str(spec), "--out", str(out), *flags)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert not (out / "samples.npz").exists()
