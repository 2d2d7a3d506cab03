"""Monte Carlo DMFT of residual depth-μP networks (issue 12; derivations/finite_step_dmft.md §4–§6).

h^{ℓ+1} = h^ℓ + (α/L^β)·W^ℓφ(h^ℓ)/√N for ℓ = 1..L−1 (docs/conventions.md §2c). Checked: the lazy
limit (K(0) exact, γ0 → 0 equals the lazy residual closed form), α → 0 reduces the march exactly to
the first layer and the read-out (a width-S two-layer network trained by GD), kinked φ runs,
φ = x against the deep-linear closure, and (slow) residual networks trained by plain GD.
"""

import numpy as np
import pytest
from test_monte_carlo_gd import (
    lazy_gd,
    lazy_ntk,
    march_and_its_particle_network,
    network_ensemble,
    p8_data,
    pd4_data,
)

from dmft.solvers import MonteCarloDMFT
from dmft.spec import Architecture, Data, Spec, Training


def residual_spec(x, y, *, activation="tanh", hidden_layers=3, gamma0=1.0, alpha=1.0,
                  exponent=0.5, optimizer="gd", learning_rate=0.25, steps=6, x_test=None):
    times = tuple(learning_rate * k for k in range(steps + 1))
    rule = (Training(times) if optimizer == "flow"
            else Training(times, optimizer=optimizer, learning_rate=learning_rate))
    return Spec(Architecture(hidden_layers=hidden_layers, activation=activation,
                             parameterization="mup", gamma0=gamma0, residual_scale=alpha,
                             residual_exponent=exponent),
                Data(x, y, x_test=x_test), rule)


@pytest.mark.parametrize("activation, exponent", [("tanh", 0.5), ("relu", 1.0)])
def test_small_gamma0_residual_gd_is_the_lazy_closed_form(activation, exponent):
    x, y = pd4_data()
    x_test = np.random.default_rng(3).standard_normal((2, 4))
    spec = residual_spec(x, y, activation=activation, exponent=exponent, gamma0=1e-4,
                         learning_rate=0.5, steps=8, x_test=x_test)
    sol = MonteCarloDMFT(num_samples=256, num_batches=4).solve(spec)
    ntk, ntk_test = lazy_ntk(spec)
    # K(0) of the march is the residual NTK recursion (eq:res_kernel_cv), exactly
    np.testing.assert_allclose(sol.ntk[0], ntk, rtol=1e-12, atol=1e-12)
    f = lazy_gd(ntk, y, 0.5, 8)
    # O(γ0²) = 1e-8 deviation (antithetic pairs cancel the odd orders); 1e-7 for round-off
    np.testing.assert_allclose(sol.f_train, f, rtol=0, atol=1e-7)
    np.testing.assert_allclose(sol.f_test, f @ np.linalg.solve(ntk, ntk_test.T), rtol=0,
                               atol=1e-7)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_vanishing_branches_leave_the_first_layer_and_the_read_out(activation):
    x = np.random.default_rng(1).standard_normal((3, 5))
    y = np.array([1.0, -0.5, 0.8])
    x_test = np.random.default_rng(2).standard_normal((2, 5))
    eta, steps, gamma0, samples = 0.4, 10, 1.5, 64
    spec = residual_spec(x, y, activation=activation, hidden_layers=3, alpha=1e-8,
                         gamma0=gamma0, learning_rate=eta, steps=steps, x_test=x_test)
    sol, f = march_and_its_particle_network(spec, samples, seed=4)
    # the branches shift the fields by O(β) = O(1e-8/√3) relative: 1e-7 covers it and round-off
    np.testing.assert_allclose(sol.f_train, f[:, :3], rtol=0, atol=1e-7)
    np.testing.assert_allclose(sol.f_test, f[:, 3:], rtol=0, atol=1e-7)


def test_residual_flow_runs_for_relu_and_its_kernel_starts_exact():
    x, y = pd4_data()
    spec = residual_spec(x, y, activation="relu", optimizer="flow", learning_rate=0.5, steps=3)
    sol = MonteCarloDMFT(num_samples=512, num_batches=4, dt=0.1).solve(spec)
    loss = sol.losses(y)["loss_train"]
    np.testing.assert_allclose(sol.ntk[0], lazy_ntk(spec)[0], rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(loss)) and loss[-1] < loss[0]
    assert sol.diagnostics["residual_branch_scale"] == pytest.approx(1 / np.sqrt(3))


def test_linear_residual_monte_carlo_matches_the_deep_linear_closure():
    from dmft.solvers._deep_linear import DeepLinearDMFT

    if not getattr(DeepLinearDMFT, "residual", False):
        pytest.skip("the deep-linear closure has no residual blocks in this checkout")
    x, y = pd4_data()
    spec = residual_spec(x, y, activation="linear", hidden_layers=3, alpha=1.5,
                         learning_rate=0.25, steps=6)
    mc = MonteCarloDMFT(num_samples=2048, num_batches=8).solve(spec)
    exact = DeepLinearDMFT().solve(spec)
    # both are the exact GD process; 5σ of the batch-mean errors over 7 correlated steps
    # (batch means are roughly calibrated, dmft.md §8.7) plus 1e-4 for the closure's round-off
    assert np.all(np.abs(mc.f_train - exact.f_train) <= 5 * mc.stderr["f_train"] + 1e-4)
    assert np.mean(np.abs(mc.ntk - exact.ntk)) <= 5 * np.mean(mc.stderr["ntk"]) + 1e-4


def test_linear_residual_monte_carlo_matches_finite_width_residual_networks():
    # φ = x, L = 2, one residual block: cheap networks (the trainer of test_monte_carlo_gd.py),
    # so the comparison runs by default while the deep-linear closure lacks residual blocks
    x, y = pd4_data()
    alpha, eta, steps = 1.0, 0.25, 8
    _, net = network_ensemble(x, y, (512, 1024), 8, activation="linear", hidden_layers=2,
                              gamma0=1.0, eta=eta, steps=steps, branch=alpha / np.sqrt(2))
    spec = residual_spec(x, y, activation="linear", hidden_layers=2, alpha=alpha,
                         learning_rate=eta, steps=steps)
    sol = MonteCarloDMFT(num_samples=2048, num_batches=8).solve(spec)
    loss, loss_se = sol.losses(y)["loss_train"], sol.stderr["loss_train"]
    # 3σ of the combined errors (1/N-extrapolated ensemble, DMFT batch means) plus 1 % of 𝓛(0)
    sigma = np.hypot(net["loss_se"], loss_se)
    assert np.all(np.abs(loss - net["loss"]) <= 3 * sigma + 0.01 * loss[0]), (loss, net["loss"])


# ----------------------------------------------------------------------------------------------
# Against finite-width residual networks trained by plain GD (slow: minutes)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("hidden_layers", [2, 4])
def test_residual_dmft_matches_finite_width_residual_networks(activation, hidden_layers):
    x, y = p8_data()
    alpha, eta, steps = 1.0, 0.5, 16
    branch = alpha / np.sqrt(hidden_layers)
    _, net = network_ensemble(x, y, (512, 1024), 8, activation=activation,
                              hidden_layers=hidden_layers, gamma0=1.0, eta=eta, steps=steps,
                              branch=branch)
    spec = residual_spec(x, y, activation=activation, hidden_layers=hidden_layers, alpha=alpha,
                         learning_rate=eta, steps=steps)
    sol = MonteCarloDMFT(num_samples=8192, replicas=2).solve(spec)
    loss, loss_se = sol.losses(y)["loss_train"], sol.stderr["loss_train"]
    # 3σ of the combined errors (1/N-extrapolated ensemble, DMFT replicas) plus 1 % of 𝓛(0)
    sigma = np.hypot(net["loss_se"], loss_se)
    assert np.all(np.abs(loss - net["loss"]) <= 3 * sigma + 0.01 * loss[0]), (loss, net["loss"])
