"""Exact infinite-width gradient descent and SGD of deep linear μP networks (DeepLinearDMFT).

Independent references, none of which shares code with the march:
- the lazy GD closed form f_k = (I − (I − η0K/P)^k) y (test points through K_xX K⁻¹) at γ0 → 0;
- the two-layer (L = 1) GD moment recursion for H = ⟨hhᵀ⟩, m = ⟨hz⟩, a = ⟨z²⟩, exact at N = ∞;
- for L >= 2, a direct global solve of the discrete closure in operator form
  (derivations/deep_linear_gd_residual.md §3): h = (1 − CD)⁻¹(u + C r), z = (1 − DC)⁻¹(r + D u)
  with dense inverses over the whole (step × point) space, iterated over the trajectory until it
  is a fixed point (causality makes it exact after finitely many sweeps).
"""

from __future__ import annotations

import numpy as np
import pytest

from dmft._errors import SolveError
from dmft.solvers import DeepLinearDMFT
from dmft.spec import Architecture, Data, Spec, Training


def problem(gamma0, hidden_layers=2, eta=None, steps=12, optimizer="gd", batch_size=None,
            seed=None, scale=1.0):
    """P = 3 correlated inputs (Φ^0 = scale²·0.5^|μ−α|) and one test point, GD with step η0."""
    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    x = np.linalg.cholesky(kx) * 2.0 * scale  # x xᵀ / D = scale² Φ^0 with D = 4
    extra = {} if optimizer == "gd" else {"batch_size": batch_size, "seed": seed}
    return Spec(
        architecture=Architecture(hidden_layers, "linear", "mup", gamma0=gamma0),
        data=Data(x_train=x[:3], y_train=np.array([1.0, 0.5, -1.0]), x_test=x[3:],
                  y_test=np.array([-0.5])),
        training=Training(tuple(eta * np.arange(steps + 1)), optimizer=optimizer,
                          learning_rate=eta, **extra),
    )


def kernel0(spec):
    x = np.concatenate([spec.data.x_train, spec.data.x_test])
    kx = x @ x.T / x.shape[1]
    return kx, (spec.architecture.hidden_layers + 1) * kx  # K0 = (L + 1) Φ^0 for φ = id


def eta_for(spec, ratio):
    """η0 with η0 λ_max(K0)/P = ratio."""
    _, k0 = kernel0(spec)
    return ratio * 3 / np.linalg.eigvalsh(k0[:3, :3])[-1]


def omega_of(spec, num_grid):
    omega = np.zeros((num_grid, 4))
    omega[:, :3] = spec.training.dynamics.batch_weights(3, num_grid)
    return omega


def global_recursion(spec):
    """f (K+1, Q) and K (K+1, P, P) of the discrete closure, solved as dense operator equations
    over the whole trajectory (module docstring) by fixed-point sweeps over Δ and the layers."""
    arch = spec.architecture
    L, gamma0, eta = arch.hidden_layers, arch.gamma0, spec.training.learning_rate
    kx, _ = kernel0(spec)
    Q, P = 4, 3
    T = spec.training.steps[-1] + 1
    omega = omega_of(spec, T)
    y = np.zeros(Q)
    y[:P] = spec.data.y_train
    strict = np.tril(np.ones((T, T)), -1)  # s < k
    c = gamma0 * eta / P
    eye = np.eye(T * Q)
    phi = [np.kron(np.ones((T, T)), kx)] * (L + 1)  # Φ^0 tiled over time, then guesses
    g = [np.ones((T, T))] * (L + 2)  # G^ℓ, G^{L+1} = 1
    hr = [np.zeros((T * Q, T))] * (L + 1)  # ∂h^ℓ/∂r^ℓ, none below layer 1
    zu = [np.zeros((T, T * Q))] * (L + 2)  # ∂z^ℓ/∂u^ℓ, none above layer L
    f = np.zeros((T, Q))

    def sweep(delta):
        for layer in range(1, L + 1):
            # C[(k,μ), s] = ∂h^{ℓ-1}_k/∂r^{ℓ-1}_s + c 1_{s<k} Σ_α Φ^{ℓ-1}_{kμ,sα} Δ_sα
            p4 = phi[layer - 1].reshape(T, Q, T, Q)
            C = hr[layer - 1] + c * (np.einsum("kmsa,sa->kms", p4, delta)
                                     * strict[:, None, :]).reshape(T * Q, T)
            # D[k, (s,α)] = ∂z^{ℓ+1}_k/∂u^{ℓ+1}_{sα} + c 1_{s<k} G^{ℓ+1}_{ks} Δ_sα
            D = zu[layer + 1] + c * ((g[layer + 1] * strict)[:, :, None]
                                     * delta[None]).reshape(T, T * Q)
            a = np.linalg.inv(eye - C @ D)
            b = np.linalg.inv(np.eye(T) - D @ C)
            phi[layer] = a @ (phi[layer - 1] + C @ g[layer + 1] @ C.T) @ a.T
            hr[layer] = a @ C
            g[layer] = b @ (g[layer + 1] + D @ phi[layer - 1] @ D.T) @ b.T
            if layer > 1:
                zu[layer] = b @ D
            if layer == L:
                cross = a @ (phi[L - 1] @ D.T + C @ g[L + 1]) @ b.T  # Cov(h^L, z^L)
        return np.stack([cross.reshape(T, Q, T)[k, :, k] for k in range(T)]) / gamma0

    # causality: with Δ_s exact for s <= n (and zero beyond), L + 2 sweeps make every quantity
    # exact up to step n + 1 (the within-step chain runs up the layers in one sweep)
    for n in range(T):
        mask = (np.arange(T) <= n)[:, None]
        for _ in range(L + 2):
            f = sweep(omega * (y - f) * mask)
    again = sweep(omega * (y - f))
    assert np.max(np.abs(again - f)) < 1e-12  # a fixed point
    diag = np.arange(T)
    ntk = sum(g[layer + 1][diag, diag][:, None, None]
              * phi[layer].reshape(T, Q, T, Q)[diag, :, diag, :] for layer in range(L + 1))
    return f, ntk[:, :P, :P]


def moment_recursion(spec):
    """Two-layer (L = 1) GD at N = ∞: h_{k+1} = h_k + c z_k Φ^0 e_k, z_{k+1} = z_k + c e_k·h_k
    (c = γ0η0/P, e_k = ω_k ⊙ Δ_k) closes on H = ⟨hhᵀ⟩, m = ⟨hz⟩, a = ⟨z²⟩; f = m/γ0."""
    gamma0, eta = spec.architecture.gamma0, spec.training.learning_rate
    kx, _ = kernel0(spec)
    T = spec.training.steps[-1] + 1
    omega = omega_of(spec, T)
    y = np.concatenate([spec.data.y_train, [0.0]])
    c = gamma0 * eta / 3
    H, m, a = kx.copy(), np.zeros(4), 1.0
    fs, ks = [], []
    for k in range(T):
        f = m / gamma0
        fs.append(f)
        ks.append((H + a * kx)[:3, :3])
        e = omega[k] * (y - f)
        v = kx @ e
        H, m, a = (H + c * (np.outer(v, m) + np.outer(m, v)) + c**2 * a * np.outer(v, v),
                   m + c * H @ e + c * a * v + c**2 * v * (e @ m),
                   a + 2 * c * e @ m + c**2 * e @ H @ e)
    return np.array(fs), np.array(ks)


def both(solution):
    return np.concatenate([solution.f_train, solution.f_test], axis=1)


def test_small_gamma0_equals_the_lazy_gd_closed_form():
    spec = problem(1e-4, hidden_layers=3, eta=1.0, steps=15)
    spec = problem(1e-4, hidden_layers=3, eta=eta_for(spec, 1.5), steps=15)
    solution = DeepLinearDMFT().solve(spec)
    kx, k0 = kernel0(spec)
    eta, y = spec.training.learning_rate, spec.data.y_train
    ktrain = k0[:3, :3]
    lazy = np.stack([np.concatenate([
        y - np.linalg.matrix_power(np.eye(3) - eta * ktrain / 3, k) @ y,
        k0[3:, :3] @ np.linalg.solve(ktrain, y - np.linalg.matrix_power(
            np.eye(3) - eta * ktrain / 3, k) @ y)]) for k in range(16)])
    # the deviation from lazy is O(γ0²) = 1e-8 (eq:odd_orders) times O(1)–O(10) growth factors
    np.testing.assert_allclose(both(solution), lazy, atol=1e-6, rtol=0)
    np.testing.assert_allclose(solution.ntk, np.broadcast_to(ktrain, solution.ntk.shape), atol=1e-6)


@pytest.mark.parametrize("ratio", [0.5, 1.8])
def test_two_layers_equal_the_exact_gd_moment_recursion(ratio):
    spec = problem(1.0, hidden_layers=1, eta=1.0)
    spec = problem(1.0, hidden_layers=1, eta=eta_for(spec, ratio), steps=25)
    solution = DeepLinearDMFT().solve(spec)
    f, ntk = moment_recursion(spec)
    # both are exact recursions in float64: round-off only (values O(1), 25 steps)
    np.testing.assert_allclose(both(solution), f, atol=1e-11, rtol=0)
    np.testing.assert_allclose(solution.ntk, ntk, atol=1e-10, rtol=0)


@pytest.mark.parametrize("hidden_layers,gamma0,ratio", [(2, 1.0, 1.8), (3, 1.5, 1.2), (2, 0.5, 2.5)])
def test_deep_gd_march_equals_the_global_operator_solve_at_large_learning_rate(
        hidden_layers, gamma0, ratio):
    spec = problem(gamma0, hidden_layers=hidden_layers, eta=1.0)
    spec = problem(gamma0, hidden_layers=hidden_layers, eta=eta_for(spec, ratio), steps=10)
    solution = DeepLinearDMFT().solve(spec)
    f, ntk = global_recursion(spec)
    # same equations, different algorithms (dense inverses vs the causal march): round-off
    # of O(10)-conditioned 44×44 inverses on O(1)–O(10) values
    np.testing.assert_allclose(both(solution), f, atol=1e-9, rtol=0)
    np.testing.assert_allclose(solution.ntk, ntk, atol=1e-8, rtol=1e-10)


def test_sgd_equals_the_global_operator_solve_with_batch_weights():
    base = problem(1.0, eta=1.0)
    spec = problem(1.0, eta=eta_for(base, 0.8), steps=9, optimizer="sgd", batch_size=1, seed=4)
    solution = DeepLinearDMFT().solve(spec)
    f, ntk = global_recursion(spec)
    np.testing.assert_allclose(both(solution), f, atol=1e-9, rtol=0)  # as above: round-off
    np.testing.assert_allclose(solution.ntk, ntk, atol=1e-8, rtol=1e-10)
    gd = DeepLinearDMFT().solve(problem(1.0, eta=eta_for(base, 0.8), steps=9))
    assert np.max(np.abs(gd.f_train - solution.f_train)) > 1e-3  # the batches matter


def test_sgd_with_the_full_batch_is_gd():
    base = problem(1.0, eta=1.0)
    eta = eta_for(base, 1.2)
    gd = DeepLinearDMFT().solve(problem(1.0, eta=eta))
    sgd = DeepLinearDMFT().solve(problem(1.0, eta=eta, optimizer="sgd", batch_size=3, seed=7))
    np.testing.assert_array_equal(sgd.f_train, gd.f_train)  # ω = 1: the same floating-point ops
    np.testing.assert_array_equal(sgd.ntk, gd.ntk)


def test_small_learning_rate_approaches_the_flow_at_first_order():
    # GD at step η0 against the flow: the difference shrinks by 2 per halving (first order)
    times = (0.0, 0.5, 1.0)
    base = problem(1.0, eta=0.1)
    flow = DeepLinearDMFT(dt=0.0125).solve(Spec(base.architecture, base.data, Training(times)))
    gaps = []
    for eta in (0.1, 0.05, 0.025):
        spec = problem(1.0, eta=eta, steps=round(1.0 / eta))
        gd = DeepLinearDMFT().solve(spec)
        saved = [round(t / eta) for t in times]
        gaps.append(np.max(np.abs(gd.f_train[saved] - flow.f_train)))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    # first order: 2 per halving; ±20 % for the O(η0²) term and the flow's own O(dt²) error
    np.testing.assert_allclose(ratios, 2.0, rtol=0.2)


def test_catapult_runs_and_converges():
    # η0 λ_max(K0)/P = 2.2: unstable for the lazy model; the loss falls, spikes, and converges
    # once the kernel has flattened below 2/η0
    base = problem(1.0, hidden_layers=1, eta=1.0)
    spec = problem(1.0, hidden_layers=1, eta=eta_for(base, 2.2), steps=60)
    solution = DeepLinearDMFT().solve(spec)
    loss = 0.5 * np.mean((solution.f_train - spec.data.y_train) ** 2, axis=1)
    sharp = spec.training.learning_rate * np.linalg.eigvalsh(solution.ntk)[:, -1] / 3
    assert sharp[0] > 2 and np.max(sharp) > 3  # the kernel first grows ...
    assert sharp[-1] < 2  # ... and ends below the stability edge
    spike = np.max(loss / np.minimum.accumulate(loss))
    assert spike > 3  # the loss rises well above its running minimum (measured ≈ 7.5)
    assert loss[-1] < 1e-8 * loss[0]  # and converges (measured ≈ 7e-11)


def test_divergence_is_a_solve_error_naming_the_step():
    base = problem(1.0, eta=1.0)
    spec = problem(1.0, eta=eta_for(base, 6.0), steps=80)
    with pytest.raises(SolveError, match=r"diverged at step \d+ .*loss") as caught:
        DeepLinearDMFT().solve(spec)
    assert f"step {caught.value.step} " in str(caught.value) and caught.value.loss > 0
