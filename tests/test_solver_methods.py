"""The shape every solver method shares, the shared option checks (dmft._options), the shared
solver pieces (dmft.solvers._common) and the early refusals of hopeless solves."""

import dataclasses
import inspect
import time

import jax
import numpy as np
import pytest

import dmft.solvers as solvers
from dmft._errors import InputError
from dmft._options import (
    MIN_TOLERANCE,
    check_bool,
    check_int,
    check_positive,
    check_tolerance,
    check_unit_interval,
    options_from_table,
)
from dmft.network import mlp
from dmft.solvers._common import draw_normal, lagrange_matrix, layer_ntk
from dmft.spec import Architecture, Data, Spec, Training

METHODS = ["ClosedForm", "KernelODE", "TwoLayerDMFT", "TwoLayerMoments", "DeepLinearDMFT",
           "MonteCarloDMFT"]


def problem(hidden_layers=1, activation="linear", parameterization="mup", times=(0.0, 0.5, 1.0)):
    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    x = np.linalg.cholesky(kx) * 2.0
    arch = Architecture(hidden_layers, activation, parameterization,
                        **({"gamma0": 1.0} if parameterization == "mup" else {}))
    return Spec(arch, Data(x[:3], np.array([1.0, 0.5, -1.0]), x_test=x[3:],
                           y_test=np.array([-0.5])), Training(times))


# ----------------------------------------------------------------------------------------------
# One shape for every method


@pytest.mark.parametrize("name", METHODS)
def test_every_method_is_frozen_exported_and_has_from_table_and_solve(name):
    cls = getattr(solvers, name)
    assert name in solvers.__all__
    method = cls.from_table({"method": "ignored"})
    assert method == cls()
    field = next(iter(dataclasses.fields(cls)), None)
    if field is not None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(method, field.name, getattr(method, field.name))
    assert list(inspect.signature(cls.solve).parameters) == ["self", "spec"]
    with pytest.raises(InputError, match=r"unknown key solver\.bogus"):
        cls.from_table({"bogus": 1})


@pytest.mark.parametrize("method", [solvers.ClosedForm(), solvers.KernelODE(),
                                    solvers.TwoLayerMoments(), solvers.DeepLinearDMFT(dt=0.1),
                                    solvers.TwoLayerDMFT(particles=64, batches=2),
                                    solvers.MonteCarloDMFT(num_samples=32, num_batches=2)])
def test_every_method_writes_the_common_diagnostics_keys(method):
    lazy = isinstance(method, (solvers.ClosedForm, solvers.KernelODE))
    spec = problem(parameterization="ntk" if lazy else "mup")
    solution = method.solve(spec)
    diagnostics = solution.diagnostics
    for key in ("method", "settings", "iterations", "residuals", "wall_time_s"):
        assert key in diagnostics, key
    assert diagnostics["settings"] == dataclasses.asdict(method)
    assert diagnostics["wall_time_s"] > 0
    assert isinstance(diagnostics["residuals"], list)
    arrays = solution.arrays(spec.data.y_train, spec.data.y_test)
    for layer in range(1, len(solution.phi) + 1):  # one layout of per-layer kernels
        assert arrays[f"phi_L{layer}"].shape == arrays[f"g_L{layer}"].shape == arrays["ntk"].shape
    for key in solution.stderr:
        assert solution.stderr[key].shape == arrays[key].shape, key


def test_solve_lazy_is_the_method_solve():
    spec = problem(parameterization="ntk")
    a = solvers.solve_lazy(spec, solvers.KernelODE(rtol=1e-10, atol=1e-10))
    b = solvers.KernelODE(rtol=1e-10, atol=1e-10).solve(spec)
    np.testing.assert_array_equal(a.f_train, b.f_train)  # the same computation: bit-identical


# ----------------------------------------------------------------------------------------------
# Option checks: one implementation, the section in every message


def test_option_checks_name_the_section_and_key():
    with pytest.raises(InputError, match=r"^sampler\.rtol must be > 0"):
        check_tolerance("rtol", 0.0, section="sampler")
    with pytest.raises(InputError, match=r"solver\.rtol = 1e-20 is below what float64"):
        check_tolerance("rtol", 1e-20)
    with pytest.raises(InputError, match=r"solver\.tol must be < 1"):
        check_tolerance("tol", 1.0)
    assert check_tolerance("atol", MIN_TOLERANCE) == MIN_TOLERANCE
    with pytest.raises(InputError, match=r"sampler\.max_steps must be an integer >= 1"):
        check_int("max_steps", 1.5, 1, section="sampler")
    assert check_int("seed", np.int64(3), 0) == 3
    with pytest.raises(InputError, match=r"solver\.dt must be a finite number > 0"):
        check_positive("dt", float("inf"))
    with pytest.raises(InputError, match=r"solver\.damping must be a number in \(0, 1\]"):
        check_unit_interval("damping", 0.0)
    with pytest.raises(InputError, match=r"solver\.antithetic must be true or false"):
        check_bool("antithetic", 1)


def test_options_from_table_rejects_unknown_keys_in_its_section():
    @dataclasses.dataclass(frozen=True)
    class Options:
        dt: float = 0.1

    assert options_from_table(Options, {"method": "x", "dt": 0.2}, "x") == Options(0.2)
    with pytest.raises(InputError, match=r"unknown key sampler\.dtt for method 'gd'"):
        options_from_table(Options, {"dtt": 0.2}, "gd", section="sampler")


# ----------------------------------------------------------------------------------------------
# Shared pieces


def test_lagrange_matrix_is_exact_on_cubics_and_on_nodes():
    dt, grid = 0.1, 11
    nodes = dt * np.arange(grid)
    times = np.array([0.0, 0.03, 0.15, 0.5, 0.97, 1.0, 0.3 + 1e-12])
    weights = lagrange_matrix(grid, dt, times)
    cubic = lambda t: 1 - 2 * t + 3 * t**2 - 0.5 * t**3  # noqa: E731
    # 4-point Lagrange reproduces cubics exactly: round-off only (values O(1))
    np.testing.assert_allclose((weights @ cubic(nodes))[:-1], cubic(times[:-1]), atol=1e-13, rtol=0)
    assert weights[5].tolist() == np.eye(grid)[10].tolist()  # t = 1.0 is the last node exactly
    assert weights[6, 3] == 1.0  # within 1e-9 steps of a node: that node's value
    assert lagrange_matrix(1, 0.0, times).tolist() == [[1.0]] * len(times)


def test_draw_normal_antithetic_pairs_and_moment_matching():
    key = jax.random.PRNGKey(0)
    cov = 0.5 ** np.abs(np.subtract.outer(np.arange(3), np.arange(3)))
    u = np.asarray(draw_normal(key, 2, 16, (3,), np.float64, antithetic=True, flip=False,
                               moment_matching=True, cov=cov))
    r = np.asarray(draw_normal(key, 2, 16, (), np.float64, antithetic=True, flip=True,
                               moment_matching=True))
    assert u.shape == (2, 16, 3) and r.shape == (2, 16)
    np.testing.assert_array_equal(u[:, :8], u[:, 8:])  # pairs (u, u)
    np.testing.assert_array_equal(r[:, :8], -r[:, 8:])  # pairs (r, −r)
    for b in range(2):  # whitened per batch: the sample second moments are exact (round-off)
        np.testing.assert_allclose(u[b].T @ u[b] / 16, cov, atol=1e-12)
        np.testing.assert_allclose(np.mean(r[b] ** 2), 1.0, atol=1e-12)


def test_layer_ntk_is_the_network_ntk_sum():
    arch = Architecture(3, "tanh", "mup", gamma0=0.7)
    rng = np.random.default_rng(0)
    kx, phis, gs = rng.random((4, 4)), list(rng.random((3, 4, 4))), list(rng.random((3, 4, 4)))
    expected = gs[0] * kx + gs[1] * phis[0] + gs[2] * phis[1] + phis[2]
    # the same products, summed in another order: round-off only
    np.testing.assert_allclose(layer_ntk(mlp(arch), kx, phis, gs), expected, rtol=1e-14)


def test_no_module_level_progress_state_in_the_solvers():
    from dmft.solvers import _deep_linear, _deep_nonlinear

    assert not hasattr(_deep_linear, "_PROGRESS")
    assert not hasattr(_deep_nonlinear, "_STEP_BAR")


def test_progress_bar_is_ticked_once_per_grid_step(monkeypatch):
    from dmft import _progress
    from dmft.solvers import _common

    ticks = []

    class Bar:
        def update(self, n):
            ticks.append(n)

        def set_postfix(self, **_):
            pass

        def close(self):
            pass

    monkeypatch.setattr(_progress, "progress_enabled", lambda: True)
    monkeypatch.setattr(_common, "progress_bar", lambda total, desc: Bar())
    solvers.DeepLinearDMFT(dt=0.25, extrapolate=False).solve(problem(times=(0.0, 1.0)))
    monkeypatch.undo()
    assert _progress.progress_enabled() is False  # the switch itself was not touched
    assert len(ticks) == 5  # grid t = 0, 0.25, ..., 1


# ----------------------------------------------------------------------------------------------
# Early refusals


def test_sharding_errors_are_input_errors():
    from dmft.solvers._sharding import largest_divisor_at_most, sample_mesh, shard_samples

    with pytest.raises(InputError, match="solver.devices"):
        sample_mesh(len(jax.devices()) + 1)
    with pytest.raises(InputError, match="solver.devices"):
        sample_mesh(0)
    with pytest.raises(InputError):
        largest_divisor_at_most(0, 1)
    if len(jax.devices()) > 1:
        with pytest.raises(InputError, match="solver.num_samples"):
            shard_samples(np.zeros((len(jax.devices()) + 1, 2)), sample_mesh())


def test_huge_horizon_for_deep_linear_is_refused_fast():
    spec = problem(hidden_layers=2, times=(0.0, 1e9))
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"training\.times.*solver\.dt") as info:
        solvers.DeepLinearDMFT().solve(spec)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 30  # was > 150 s; generous for a loaded machine


@pytest.mark.parametrize("method", [solvers.DeepLinearDMFT(),
                                    solvers.MonteCarloDMFT(num_samples=64, num_batches=2)])
def test_huge_depth_is_refused_early_with_an_estimate(method):
    spec = problem(hidden_layers=100_000, activation="linear")
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"architecture\.hidden_layers = 100000.*GiB") as info:
        method.solve(spec)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 30  # refused before any compilation


def test_monte_carlo_refuses_a_grid_that_cannot_fit_in_memory():
    spec = problem(hidden_layers=2, activation="tanh", times=(0.0, 1e9))
    with pytest.raises(InputError, match=r"needs ≈ .*GiB.*solver\.num_samples") as info:
        solvers.MonteCarloDMFT(num_samples=64, num_batches=2).solve(spec)
    assert "\n" not in str(info.value)


def test_float32_is_refused_at_every_entry():
    spec = problem()
    jax.config.update("jax_enable_x64", False)
    try:
        for solve in (solvers.solve, solvers.solve_dmft, solvers.solve_lazy,
                      solvers.DeepLinearDMFT().solve):
            with pytest.raises(InputError, match="float64"):
                solve(spec)
    finally:
        jax.config.update("jax_enable_x64", True)
