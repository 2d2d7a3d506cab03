"""The residual deep-linear closure (docs/conventions.md §2c; derivations/deep_linear_gd_residual.md §4).

Checks: the joint-source march with the skips removed is the plain march (round-off); α → 0 is the
first layer plus the read-out, i.e. the one-hidden-layer network, with an O(α²) approach; and the
closure's gradient descent equals finite-width residual linear networks trained by GD (written
here in JAX, not with dmft.sampler), 1/N-extrapolated over widths, within the seed error.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmft.solvers import DeepLinearDMFT
from dmft.solvers import _deep_linear
from dmft.solvers._dmft import input_kernel
from dmft.spec import Architecture, Data, Spec, Training


def problem(hidden_layers, gamma0=1.0, alpha=1.0, beta=0.5, eta=None, steps=10, times=None):
    """P = 3 correlated inputs and one test point (as tests/test_deep_linear_gd.py)."""
    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    x = np.linalg.cholesky(kx) * 2.0
    arch = Architecture(hidden_layers, "linear", "mup", gamma0=gamma0, residual_scale=alpha,
                        residual_exponent=beta)
    if eta is None:
        training = Training(times or (0.0, 0.5, 1.0, 2.0))
    else:
        training = Training(tuple(eta * np.arange(steps + 1)), optimizer="gd", learning_rate=eta)
    return Spec(architecture=arch,
                data=Data(x_train=x[:3], y_train=np.array([1.0, 0.5, -1.0]), x_test=x[3:],
                          y_test=np.array([-0.5])),
                training=training)


def plain(spec):
    arch = spec.architecture
    return Spec(Architecture(arch.hidden_layers, "linear", "mup", gamma0=arch.gamma0), spec.data,
                spec.training)


@pytest.mark.parametrize("hidden_layers", [2, 3])
def test_joint_source_march_without_skips_is_the_plain_march(hidden_layers):
    spec = problem(hidden_layers, gamma0=1.3, eta=0.3, steps=8)
    kx = input_kernel(spec)
    weights, omega = _deep_linear.euler_weights(9, 0.3), _deep_linear._omega(9, 3, 4)
    ours = _deep_linear._run_residual(spec, kx, _deep_linear.input_basis(kx), weights, omega,
                                      None, skip=0.0, branch=1.0)
    reference = _deep_linear._run(plain(spec), kx, weights, omega, None)
    # f, Φ^ℓ(t,t), G^ℓ(t,t) (the NTK slot sums them with the residual spec's a² weights)
    for a, b in zip(ours[::2] + ours[3:], reference[::2] + reference[3:]):
        np.testing.assert_allclose(a, b, atol=1e-12, rtol=1e-12)  # two codes, one set of equations


def test_small_alpha_is_the_first_layer_and_read_out():
    one = DeepLinearDMFT().solve(Spec(Architecture(1, "linear", "mup", gamma0=1.5),
                                      problem(2).data, problem(2).training))
    gaps = {}
    for alpha in (1e-2, 1e-3):
        deep = DeepLinearDMFT().solve(problem(3, gamma0=1.5, alpha=alpha))
        gaps[alpha] = max(np.max(np.abs(deep.f_train - one.f_train)),
                          np.max(np.abs(deep.ntk - one.ntk)))
    # the branches enter the covariances quadratically (u^ℓ ⟂ everything at lower layers):
    # a 10× smaller α gives a 100× smaller gap (±20 % for the O(α⁴) term)
    assert gaps[1e-2] / gaps[1e-3] == pytest.approx(100.0, rel=0.2)
    tiny = DeepLinearDMFT().solve(problem(3, gamma0=1.5, alpha=1e-7))
    np.testing.assert_allclose(tiny.f_train, one.f_train, atol=1e-12, rtol=0)  # O(α²) = 1e-14
    np.testing.assert_allclose(tiny.ntk, one.ntk, atol=1e-12, rtol=0)


def test_flow_is_second_order_in_dt():
    spec = problem(3, gamma0=1.5, alpha=1.0)
    runs = {dt: DeepLinearDMFT(dt=dt).solve(spec).f_train for dt in (0.1, 0.05, 0.025, 0.0125)}
    # reference: the finest two combined for order 2 (its own error is O(dt³))
    exact = (4 * runs[0.0125] - runs[0.025]) / 3
    errors = [np.max(np.abs(runs[dt] - exact)) for dt in (0.1, 0.05)]
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.2)  # order 2, ±20 %


# ----------------------------------------------------------------------------------------------
# Finite-width residual linear networks trained by gradient descent


def _init(key, widths, num_layers, input_dim):
    keys = jax.random.split(key, num_layers + 1)
    n = widths
    return ([jax.random.normal(keys[0], (n, input_dim))]
            + [jax.random.normal(keys[i], (n, n)) for i in range(1, num_layers)]
            + [jax.random.normal(keys[num_layers], (n,))])


def _forward(params, x, gamma0, branch):
    """μP residual linear network: h¹ = W⁰x/√D, h^{ℓ+1} = h^ℓ + a W^ℓ h^ℓ/√N, f = w·h^L/(γ0 N)."""
    n = params[0].shape[0]
    h = params[0] @ x.T / np.sqrt(x.shape[1])  # (N, Q)
    for w in params[1:-1]:
        h = h + branch * w @ h / np.sqrt(n)
    return params[-1] @ h / (gamma0 * n)


@functools.partial(jax.jit, static_argnames=("width", "num_layers", "steps", "seeds"))
def _trained_losses(x, y, gamma0, branch, eta, width, num_layers, steps, seeds):
    """Training loss (seeds, steps + 1) of GD θ ← θ − η0 γ0² N ∇𝓛 (conventions §2a)."""
    num_train = y.shape[0]

    def loss(params):
        return 0.5 * jnp.mean((_forward(params, x, gamma0, branch) - y) ** 2)

    def run(key):
        params = _init(key, width, num_layers, x.shape[1])

        def step(params, _):
            value, grads = jax.value_and_grad(loss)(params)
            params = [p - eta * gamma0**2 * width * g for p, g in zip(params, grads)]
            return params, value

        params, values = jax.lax.scan(step, params, None, length=steps)
        return jnp.concatenate([values, loss(params)[None]])

    del num_train
    return jax.vmap(run)(jax.random.split(jax.random.PRNGKey(7), seeds))


@pytest.mark.parametrize("hidden_layers,beta", [
    (2, 0.5), pytest.param(4, 0.5, marks=pytest.mark.slow), (4, 1.0)])  # L = 4, β = ½: slow
def test_gd_equals_finite_width_residual_networks_extrapolated_in_one_over_n(hidden_layers, beta):
    gamma0, eta, steps, seeds = 1.0, 0.4, 12, 16
    spec = problem(hidden_layers, gamma0=gamma0, alpha=1.0, beta=beta, eta=eta, steps=steps)
    limit = DeepLinearDMFT().solve(spec)
    loss_limit = 0.5 * np.mean((limit.f_train - spec.data.y_train) ** 2, axis=1)
    x, y = jnp.asarray(spec.data.x_train), jnp.asarray(spec.data.y_train)
    branch = _deep_linear.residual_branch_scale(spec.architecture)
    widths = (256, 512, 1024)
    means, errors = [], []
    for width in widths:
        losses = np.asarray(_trained_losses(x, y, gamma0, branch, eta, width, hidden_layers,
                                            steps, seeds))
        means.append(losses.mean(axis=0))
        errors.append(losses.std(axis=0, ddof=1) / np.sqrt(seeds))
    means, errors = np.array(means), np.array(errors)
    # least-squares fit mean(N) = c0 + c1/N per step; c0 and its standard error (seeds independent)
    design = np.stack([np.ones(3), 1.0 / np.array(widths)], axis=1)
    solve = np.linalg.pinv(design)  # (2, 3)
    extrapolated = solve[0] @ means
    stderr = np.sqrt((solve[0] ** 2) @ errors**2)
    # 4 standard errors (a Gaussian estimate passes with probability > 0.9999 per step) plus
    # 1 % of 𝓛(0) for the O(1/N²) terms the linear fit leaves
    tolerance = 4 * stderr + 0.01 * loss_limit[0]
    assert np.all(np.abs(extrapolated - loss_limit) <= tolerance), (
        extrapolated, loss_limit, tolerance)
    # and the comparison has teeth: the lazy (γ0 → 0) curve is far outside it
    lazy = DeepLinearDMFT().solve(problem(hidden_layers, gamma0=1e-3, alpha=1.0, beta=beta,
                                          eta=eta, steps=steps))
    loss_lazy = 0.5 * np.mean((lazy.f_train - spec.data.y_train) ** 2, axis=1)
    assert np.max(np.abs(loss_lazy - loss_limit) - tolerance) > 0


def test_infinite_depth_extrapolation_in_one_over_depth():
    from dmft.solvers import infinite_depth_limit

    spec = problem(2, gamma0=1.0, alpha=1.0, eta=0.1, steps=10)
    result = infinite_depth_limit(spec, (4, 8, 16))
    # measured differences |x_2L − x_L| shrink by 1.65, 1.78, 1.89 over L = 2..32 (rate → 1,
    # the 1/L of a first-order discretisation in layer time τ = ℓ/L); 0.83 at (4, 8, 16)
    assert 0.6 < result.rate < 1.2
    # the 1/L fit through (4, 8) predicts L = 16 better than L = 8 itself does (measured 0.0176
    # against 0.0203: the rate is still below 1 at these depths, so the gain is modest)
    predicted = result.loss[1] + (result.loss[1] - result.loss[0])
    gap_fit = np.max(np.abs(predicted - result.loss[2]))
    gap_raw = np.max(np.abs(result.loss[1] - result.loss[2]))
    assert gap_fit < 0.95 * gap_raw
    assert np.all(np.isfinite(result.error)) and np.all(result.error >= 0)
    assert result.loss.shape == (3, 11) and result.limit.shape == (11,)
