"""The exact DMFT solvers: two-layer (particles, moment closure), deep linear closure, entry point.

Numbers checked against derivations/dmft.md: the two-layer linear single-point closed form
(eq:two_layer_closed_form), its O(γ0²) lazy correction (eq:lazy_correction), the deep-linear
K_∞ table (notes V4), the γ0² approach to the lazy limit and the discretisation order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq

from dmft._errors import InputError
from dmft.solvers import DeepLinearDMFT
from dmft.solvers import auto_method_name, method_from_spec, solve_dmft
from dmft.solvers import solve_lazy
from dmft.solvers import TwoLayerDMFT, TwoLayerMoments
from dmft.spec import Architecture, Data, Spec, Training

# ----------------------------------------------------------------------------------------------
# Problems


def single_point(gamma0, hidden_layers=1, times=(0.0, 0.5, 1.0, 2.0), activation="linear", solver=None):
    """P = 1, Φ^0 = 1, y = 1: the closed-form case of notes V3/V4."""
    return Spec(
        architecture=Architecture(hidden_layers, activation, "mup", gamma0=gamma0),
        data=Data(x_train=np.ones((1, 1)), y_train=np.ones(1)),
        training=Training(times),
        solver=solver or {},
    )


def small_problem(gamma0, hidden_layers=2, activation="linear", times=(0.0, 0.5, 1.0, 2.0),
                  parameterization="mup", solver=None):
    """P = 3 correlated inputs (Φ^0 = 0.5^|μ−α|) and one test point."""
    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    x = np.linalg.cholesky(kx) * 2.0  # x xᵀ / D = Φ^0 with D = 4
    arch = Architecture(hidden_layers, activation, parameterization, gamma0=gamma0) \
        if parameterization == "mup" else Architecture(hidden_layers, activation, "ntk")
    return Spec(
        architecture=arch,
        data=Data(x_train=x[:3], y_train=np.array([1.0, 0.5, -1.0]), x_test=x[3:],
                  y_test=np.array([-0.5])),
        training=Training(times),
        solver=solver or {},
    )


def t_of_f(f, gamma0, y=1.0):
    """Closed-form time t(f) of the two-layer linear single point (eq:two_layer_closed_form)."""
    a = np.sqrt(1 + gamma0**2 * y**2)
    return np.log(y * (a * np.sqrt(1 + gamma0**2 * f**2) + 1 + gamma0**2 * y * f)
                  / ((y - f) * (a + 1))) / (2 * a)


def f_exact(t, gamma0):
    if t == 0:
        return 0.0
    return brentq(lambda f: t_of_f(f, gamma0) - t, 0.0, 1.0 - 1e-15, xtol=1e-15, rtol=1e-15)


# notes V3: f(0.5), f(1), f(2) for γ0 = 0.5, 1, 2 (6 decimals)
V3_TABLE = {0.5: (0.639776, 0.876876, 0.986553), 1.0: (0.661864, 0.906588, 0.994228),
            2.0: (0.737850, 0.965669, 0.999597)}


# ----------------------------------------------------------------------------------------------
# Two-layer linear single point: closed form


@pytest.mark.parametrize("gamma0", [0.5, 1.0, 2.0])
def test_moment_closure_matches_two_layer_closed_form(gamma0):
    solution = TwoLayerMoments(rtol=1e-12, atol=1e-13).solve(single_point(gamma0))
    exact = np.array([f_exact(t, gamma0) for t in solution.t])
    # ODE tolerance 1e-12 on O(1) quantities: 1e-8 leaves four orders of margin
    np.testing.assert_allclose(solution.f_train[:, 0], exact, atol=1e-8, rtol=0)
    # the table is rounded to 6 decimals
    np.testing.assert_allclose(solution.f_train[1:, 0], V3_TABLE[gamma0], atol=6e-7, rtol=0)
    # K = 2√(1 + γ0² f²) along the whole trajectory (conservation law of eq:two_layer_closed_form)
    np.testing.assert_allclose(solution.ntk[:, 0, 0], 2 * np.sqrt(1 + gamma0**2 * exact**2),
                               atol=1e-8, rtol=0)


@pytest.mark.parametrize("gamma0", [0.5, 2.0])
def test_deep_linear_one_layer_matches_closed_form_to_discretisation_error(gamma0):
    solution = DeepLinearDMFT(dt=0.05).solve(single_point(gamma0))
    exact = np.array([f_exact(t, gamma0) for t in solution.t])
    # order-2 scheme: measured error 2.7e-4..4.0e-4 at dt = 0.05; 1e-3 bounds c·dt² with c <= 0.4
    np.testing.assert_allclose(solution.f_train[:, 0], exact, atol=1e-3, rtol=0)
    np.testing.assert_allclose(solution.ntk[-1, 0, 0], 2 * np.sqrt(1 + gamma0**2 * exact[-1] ** 2),
                               atol=2e-3, rtol=0)  # K = 2√(1+γ0²f²): same order, slope ≤ 2γ0²f/√…


def test_particles_match_closed_form_exactly_with_moment_matching():
    gamma0 = 1.0
    solution = TwoLayerDMFT(particles=1024, batches=4).solve(single_point(gamma0))
    exact = np.array([f_exact(t, gamma0) for t in solution.t])
    # for φ = id the particle dynamics depend on the sources only through their second moments,
    # which moment matching makes exact: only the ODE tolerance (1e-8) remains
    np.testing.assert_allclose(solution.f_train[:, 0], exact, atol=1e-6, rtol=0)


def test_particles_match_closed_form_within_standard_errors():
    gamma0 = 2.0
    solution = TwoLayerDMFT(particles=1024, batches=4, moment_matching=False, seed=3).solve(
        single_point(gamma0))
    exact = np.array([f_exact(t, gamma0) for t in solution.t])
    error = np.abs(solution.f_train[:, 0] - exact)
    stderr = solution.stderr["f_train"][:, 0]
    assert np.all(stderr[1:] > 0)
    # 4 standard errors: a Gaussian estimate passes with probability > 0.9999 per time;
    # + 1e-7 for the ODE tolerance at t = 0 where the standard error vanishes
    assert np.all(error <= 4 * stderr + 1e-7), (error, stderr)


# ----------------------------------------------------------------------------------------------
# Discretisation order of the deep-linear closure


def _order_errors(spec, exact, extrapolate):
    errors = []
    for dt in (0.1, 0.05, 0.025):
        f = DeepLinearDMFT(dt=dt, extrapolate=extrapolate).solve(spec).f_train
        errors.append(np.max(np.abs(f[1:] - exact[1:])))  # t = 0.5, 1, 2: grid points of every dt
    return np.array(errors)


@pytest.mark.parametrize("extrapolate,order", [(False, 1), (True, 2)])
def test_deep_linear_halving_dt_reduces_error_by_two_to_the_order(extrapolate, order):
    gamma0 = 1.0
    spec = single_point(gamma0)
    exact = np.array([f_exact(t, gamma0) for t in spec.training.times])[:, None]
    errors = _order_errors(spec, exact, extrapolate)
    ratios = errors[:-1] / errors[1:]
    # the brief's criterion: 2^order within 20 %
    np.testing.assert_allclose(ratios, 2.0**order, rtol=0.2)


def test_deep_linear_order_on_several_points_against_moment_closure():
    # L = 1 with P = 3 and a test point: the moment closure is exact (an independent reference)
    spec = small_problem(1.0, hidden_layers=1)
    reference = TwoLayerMoments(rtol=1e-12, atol=1e-13).solve(spec)
    exact = np.concatenate([reference.f_train, reference.f_test], axis=1)
    errors = []
    for dt in (0.1, 0.05):
        solution = DeepLinearDMFT(dt=dt).solve(spec)
        f = np.concatenate([solution.f_train, solution.f_test], axis=1)
        errors.append(np.max(np.abs(f - exact)))
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.2)  # order 2 (Richardson), ±20 %


@pytest.mark.parametrize("gamma0,eta,reference", [(1.0, 0.05, 0.919091), (2.0, 0.05, 0.974762)])
def test_first_order_march_is_exact_infinite_width_gradient_descent(gamma0, eta, reference):
    # eq:discretisation: without extrapolation the march is the N = ∞ limit of gradient descent
    # with step dt. Independent check: the exact GD moment recursion for the two-layer single point
    # (A = ⟨a²⟩, H = ⟨h²⟩, M = ⟨ah⟩, f = M/γ0; notes §7b) and the notes' value f(τ = 1).
    solution = DeepLinearDMFT(dt=eta, extrapolate=False).solve(
        single_point(gamma0, times=tuple(eta * np.arange(21))))
    a, h, m, f = 1.0, 1.0, 0.0, [0.0]
    for _ in range(20):
        d = 1.0 - m / gamma0
        step = eta * gamma0 * d
        a, h, m = a + 2 * step * m + step**2 * h, h + 2 * step * m + step**2 * a, \
            m + step * (a + h) + step**2 * m
        f.append(m / gamma0)
    # both are exact recursions in float64: round-off only
    np.testing.assert_allclose(solution.f_train[:, 0], f, atol=1e-12, rtol=0)
    assert solution.f_train[-1, 0] == pytest.approx(reference, abs=1e-6)  # table: 6 decimals


# ----------------------------------------------------------------------------------------------
# Deep linear: notes V4 and consistency with the two-layer solvers


V4_TABLE = {2: {0.5: 3.623, 1.0: 5.170, 2.0: 9.63}, 3: {0.5: 5.154, 1.0: 7.978, 2.0: 16.2}}


@pytest.mark.parametrize("gamma0", [0.5, 1.0, 2.0])
def test_deep_linear_final_ntk_matches_reference_table_two_layers(gamma0):
    solution = DeepLinearDMFT(dt=0.1).solve(single_point(gamma0, hidden_layers=2, times=(0.0, 8.0)))
    # reference: ±0.5 % (Richardson-extrapolated discrete solver); ours at dt = 0.1: ≤ 0.2 %
    np.testing.assert_allclose(solution.ntk[-1, 0, 0], V4_TABLE[2][gamma0], rtol=6e-3)
    assert solution.ntk[0, 0, 0] == pytest.approx(3.0, abs=1e-12)  # K(0) = L + 1


@pytest.mark.slow
@pytest.mark.parametrize("gamma0", [0.5, 1.0, 2.0])
def test_deep_linear_final_ntk_matches_reference_table_three_layers(gamma0):
    solution = DeepLinearDMFT(dt=0.05).solve(single_point(gamma0, hidden_layers=3, times=(0.0, 10.0)))
    np.testing.assert_allclose(solution.ntk[-1, 0, 0], V4_TABLE[3][gamma0], rtol=6e-3)


def test_deep_linear_and_particles_agree_for_one_hidden_layer():
    spec = small_problem(1.5, hidden_layers=1)
    closure = DeepLinearDMFT(dt=0.05).solve(spec)
    particles = TwoLayerDMFT(particles=1024, batches=4).solve(spec)
    # particles with moment matching are exact for φ = id (ODE tol 1e-8); the closure has its
    # O(dt²) error, measured ≈ 1e-4 here
    for key in ("f_train", "f_test", "ntk", "ntk_test_train"):
        np.testing.assert_allclose(getattr(closure, key), getattr(particles, key), atol=1e-3)
    np.testing.assert_allclose(closure.phi[0], particles.phi[0], atol=1e-3)
    np.testing.assert_allclose(closure.g[0], particles.g[0], atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Lazy limit γ0 → 0


def _deviation(solution, reference):
    return max(np.max(np.abs(solution.f_train - reference.f_train)),
               np.max(np.abs(solution.f_test - reference.f_test)),
               np.max(np.abs(solution.ntk - reference.ntk)))


def test_deep_linear_lazy_limit_with_gamma0_squared_deviation():
    lazy = solve_lazy(small_problem(1.0, parameterization="ntk"))
    solver = DeepLinearDMFT(dt=0.05)
    tiny = solver.solve(small_problem(1e-4))
    # the lazy curves themselves, up to the O(dt²) discretisation error (measured 1.2e-4)
    assert _deviation(tiny, lazy) < 5e-4
    # the γ0-dependence, measured against the γ0 → 0 solve on the same grid so that the
    # (γ0-independent) discretisation error cancels
    gammas = np.array([0.05, 0.1, 0.2])
    deviations = np.array([_deviation(solver.solve(small_problem(g)), tiny) for g in gammas])
    assert deviations[0] > 100 * _deviation(solver.solve(small_problem(2e-4)), tiny)
    slope = np.polyfit(np.log(gammas), np.log(deviations), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.2)  # odd orders vanish: deviation ∝ γ0²


def test_two_layer_tanh_lazy_limit_with_gamma0_squared_deviation():
    solver = TwoLayerDMFT(particles=1024, batches=4)
    spec = lambda g: small_problem(g, hidden_layers=1, activation="tanh")  # noqa: E731
    lazy = solve_lazy(small_problem(1.0, hidden_layers=1, activation="tanh", parameterization="ntk"))
    tiny = solver.solve(spec(1e-3))
    error = np.abs(tiny.f_train - lazy.f_train)
    # Monte Carlo error of K(0) with 1024 moment-matched particles; 4 standard errors + the
    # O(γ0²) = 1e-6 remainder
    assert np.all(error <= 4 * tiny.stderr["f_train"] + 1e-5)
    # common random numbers: the γ0-dependence is measured on the same particles
    gammas = np.array([0.05, 0.1, 0.2])
    deviations = np.array([_deviation(solver.solve(spec(g)), tiny) for g in gammas])
    slope = np.polyfit(np.log(gammas), np.log(deviations), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.2)


def test_lazy_correction_coefficient_of_two_layer_linear_single_point():
    # K(t) = 2 + γ0² f_0(t)² + O(γ0⁴) with f_0 = 1 − e^{−2t} (eq:lazy_correction)
    gamma0 = 0.01
    solution = TwoLayerMoments(rtol=1e-12, atol=1e-14).solve(single_point(gamma0))
    f0 = 1 - np.exp(-2 * solution.t)
    coefficient = (solution.ntk[:, 0, 0] - 2) / gamma0**2
    # O(γ0²) = 1e-4 relative remainder; ODE tolerance 1e-12/γ0² = 1e-8
    np.testing.assert_allclose(coefficient, f0**2, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Consistency (notes V7)


@pytest.fixture(scope="module")
def deep_linear_solution():
    return DeepLinearDMFT(dt=0.05).solve(small_problem(1.5))


@pytest.fixture(scope="module")
def two_layer_tanh_solution():
    return TwoLayerDMFT(particles=1024, batches=4).solve(small_problem(1.5, hidden_layers=1,
                                                                      activation="tanh"))


@pytest.mark.parametrize("name", ["deep_linear_solution", "two_layer_tanh_solution"])
def test_solutions_are_consistent(name, request):
    solution = request.getfixturevalue(name)
    spec = small_problem(1.5)
    num_times = len(spec.training.times)
    loss = solution.losses(spec.data.y_train)["loss_train"]
    assert np.all(np.diff(loss) <= 1e-12)  # gradient flow never increases the loss
    assert solution.f_train.shape == (num_times, 3)
    assert solution.f_test.shape == (num_times, 1)
    assert solution.ntk_test_train.shape == (num_times, 1, 3)
    np.testing.assert_allclose(solution.ntk, np.swapaxes(solution.ntk, 1, 2), atol=1e-12)
    assert np.linalg.eigvalsh(solution.ntk).min() > -1e-10  # PSD up to round-off
    assert all(p.shape == (num_times, 3, 3) for p in solution.phi + solution.g)
    assert solution.f_train[0] == pytest.approx(np.zeros(3), abs=1e-14)  # f(0) = 0
    assert solution.diagnostics["wall_time_s"] > 0


def test_particle_kernels_are_exact_at_initialization(two_layer_tanh_solution):
    from dmft.solvers import solve_lazy

    # the lazy control variate (Φ − Φ̂_0 + Φ_0, likewise G) cancels the particles' own t = 0
    # kernels sample by sample, leaving the exact NTK recursion: round-off only
    lazy = solve_lazy(small_problem(1.5, hidden_layers=1, activation="tanh"))
    np.testing.assert_allclose(two_layer_tanh_solution.ntk[0], lazy.ntk[0], rtol=0, atol=1e-12)


def test_deep_linear_is_causal(deep_linear_solution):
    shorter = DeepLinearDMFT(dt=0.05).solve(small_problem(1.5, times=(0.0, 0.5, 1.0)))
    # the march is explicit: earlier grid values cannot depend on the horizon (round-off only)
    np.testing.assert_allclose(shorter.f_train, deep_linear_solution.f_train[:3], atol=1e-12)
    np.testing.assert_allclose(shorter.ntk, deep_linear_solution.ntk[:3], atol=1e-12)


def test_two_layer_is_causal(two_layer_tanh_solution):
    shorter = TwoLayerDMFT(particles=1024, batches=4).solve(
        small_problem(1.5, hidden_layers=1, activation="tanh", times=(0.0, 0.5, 1.0, 1.5)))
    # same particles, horizon 1.5 instead of 2 (same number of saved times: one compilation);
    # the adaptive steps differ, so agreement is to the ODE tolerance
    np.testing.assert_allclose(shorter.f_train[:3], two_layer_tanh_solution.f_train[:3], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Entry point and bad input


def test_auto_method_picks_the_exact_solver():
    assert auto_method_name(small_problem(1.0, hidden_layers=3)) == "deep_linear"
    assert auto_method_name(small_problem(1.0, hidden_layers=1, activation="tanh")) == "two_layer"
    assert auto_method_name(small_problem(1.0, hidden_layers=2, activation="tanh")) == "monte_carlo"
    # kinked φ at L = 1: the fixed-step march (adaptive steps crawl on the sliding neurons)
    assert auto_method_name(small_problem(1.0, hidden_layers=1, activation="relu")) == "monte_carlo"
    method = method_from_spec(small_problem(1.0, solver={"dt": 0.02}))
    assert isinstance(method, DeepLinearDMFT) and method.dt == 0.02


@pytest.mark.parametrize("depth, expected", [(1, "two_layer"), (3, "monte_carlo")])
def test_auto_method_sends_linear_cross_entropy_to_a_solver_that_takes_it(depth, expected):
    base = small_problem(1.0, hidden_layers=depth)
    spec = dataclasses.replace(base, data=Data(base.data.x_train, np.array([0.0, 1.0, 2.0])),
                               training=Training(base.training.times, loss="cross_entropy"))
    name = auto_method_name(spec)
    assert name == expected
    assert "cross_entropy" in type(method_from_spec(spec)).losses


def test_solve_dmft_reads_the_solver_table():
    spec = single_point(1.0, solver={"method": "two_layer_moments", "rtol": 1e-10})
    solution = solve_dmft(spec)
    assert solution.diagnostics["method"] == "two_layer_moments"
    assert solution.diagnostics["settings"]["rtol"] == 1e-10


@pytest.mark.parametrize("spec,match", [
    (small_problem(1.0, parameterization="ntk"), "parameterization"),
    (small_problem(1.0, activation="relu", solver={"method": "deep_linear"}), "activation"),
    (small_problem(1.0, activation="tanh", solver={"method": "two_layer"}), "hidden_layers"),
    (small_problem(1.0, solver={"method": "deep_linear", "tolerance": 1e-3}), "solver.tolerance"),
    (small_problem(1.0, solver={"method": "bogus"}), "solver.method"),
    (small_problem(1.0, solver={"dt": -0.1}), "solver.dt"),
    (single_point(1.0, solver={"method": "two_layer", "rtol": 0.0}), "solver.rtol"),
    (single_point(1.0, solver={"method": "two_layer", "rtol": 1e-20}), "float64"),
    (single_point(1.0, solver={"method": "two_layer", "particles": 100, "batches": 3}),
     "solver.particles"),
])
def test_bad_input_is_a_one_line_input_error(spec, match):
    with pytest.raises(InputError, match=match) as info:
        solve_dmft(spec)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# NTK-evolution figure


def test_ntk_evolution_figure_is_written(deep_linear_solution, tmp_path):
    from dmft.figures._ntk_evolution import kernel_alignment, plot_ntk_evolution

    y = small_problem(1.5).data.y_train
    paths = plot_ntk_evolution(deep_linear_solution, y, tmp_path / "ntk_evolution")
    assert [p.suffix for p in paths] == [".pdf", ".png"] and all(p.stat().st_size > 0 for p in paths)
    # alignment of K = y yᵀ is exactly 1, of the identity 1/√P for y = ±1
    assert kernel_alignment(np.outer(y, y)[None], y)[0] == pytest.approx(1.0, abs=1e-12)
    ones = np.array([1.0, -1.0, 1.0, 1.0])
    assert kernel_alignment(np.eye(4)[None], ones)[0] == pytest.approx(0.5, abs=1e-12)
    # feature learning aligns the kernel with the task
    alignment = kernel_alignment(deep_linear_solution.ntk, y)
    assert alignment[-1] > alignment[0]


# ----------------------------------------------------------------------------------------------
# Against real finite-width networks (slow: minutes)


@pytest.mark.slow
@pytest.mark.parametrize("activation,hidden_layers,gamma0,widths", [
    ("tanh", 1, 1.0, (256, 512, 1024)),
    ("linear", 2, 1.5, (128, 256, 512)),
])
def test_dmft_matches_inverse_width_extrapolation_of_trained_networks(
        activation, hidden_layers, gamma0, widths):
    from dmft.sampler import sample
    from dmft.sampler._compare import fit_inverse_width

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = np.sign(rng.standard_normal(8))
    spec = Spec(architecture=Architecture(hidden_layers, activation, "mup", gamma0=gamma0),
                data=Data(x_train=x, y_train=y), training=Training(tuple(np.linspace(0, 4, 9))))
    loss = solve_dmft(spec).losses(y)["loss_train"]
    seeds = 16
    samples = sample(spec, widths, seeds)
    # Control variate: the random initial output f(0) ~ N(0, Φ^L_μμ/(γ0² N)) dominates the seed
    # spread, and E[𝓛_N(0)] = (1/2P) Σ_μ (y_μ² + Φ^L_μμ(0)/(γ0² N)) is known exactly (E over the
    # readout, then E[empirical Φ^L] = Φ^L). Regress each 𝓛_N(t) on 𝓛_N(0) across seeds.
    from dmft.kernels import layer_kernels

    phi_top = np.diag(layer_kernels(Architecture(hidden_layers, activation, "ntk"), x).nngp[hidden_layers])
    means, stderrs = [], []
    for width in widths:
        values = samples[width]["loss_train"]  # (seeds, T)
        expected0 = 0.5 * np.mean(y**2 + phi_top / (gamma0**2 * width))
        centred = values - values.mean(0)
        beta = (centred * centred[:, :1]).sum(0) / (centred[:, 0] ** 2).sum()
        adjusted = values - beta * (values[:, :1] - expected0)
        means.append(adjusted.mean(0))
        stderrs.append(adjusted.std(0, ddof=2) / np.sqrt(seeds))  # one d.o.f. spent on beta
    means, stderrs = np.array(means), np.array(stderrs)
    fit = fit_inverse_width(widths, means, np.maximum(stderrs, 1e-12))  # ⟨𝓛_N⟩ = 𝓛_∞ + c/N
    deviation = np.abs(fit.limit - loss)
    # within the statistical error of the extrapolation: 3.5σ over 9 correlated times
    assert np.all(deviation <= 3.5 * fit.limit_err), (deviation, fit.limit_err)
    # and the brief's target: within 1 % of L(0) everywhere
    assert np.all(deviation <= 0.01 * loss[0]), deviation
