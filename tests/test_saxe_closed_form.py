"""The exact infinite-width μP dynamics of a two-layer linear network on whitened inputs
(derivations/saxe_stages.md) against the DMFT solvers, and its approach to the sigmoids of Saxe,
McClelland & Ganguli (2014) as γ0 grows."""

import numpy as np
import pytest

import dmft
from dmft.spec import Architecture, Data, Spec, Training


def mode_strength(t, s, gamma0):
    """m(t) solving dm/dt = 2(s − m)√(1 + γ0²m²), m(0) = 0 (derivations/saxe_stages.md)."""
    a = gamma0 * s
    b = np.sqrt(a * a + 1.0)
    w_plus, w_minus = a + b, a - b
    decay = np.exp(-2.0 * b * np.asarray(t))  # 1/E(t): no overflow at late times
    w = (w_plus * (1 - w_minus) + decay * w_minus * (w_plus - 1)) / (
        decay * (w_plus - 1) + (1 - w_minus))
    return (w - 1.0 / w) / (2.0 * gamma0)


def whitened_task(seed):
    """Inputs with (1/PD) XᵀX = I_D, random targets and γ0; the one mode s, v of Σ_yx."""
    rng = np.random.default_rng(seed)
    num_train, dim = int(rng.integers(6, 14)), int(rng.integers(2, 5))
    q, _ = np.linalg.qr(rng.normal(size=(num_train, dim)))
    x = np.sqrt(num_train * dim) * q
    y = rng.normal(size=num_train)
    gamma0 = float(rng.uniform(0.3, 3.0))
    correlation = y @ x / (num_train * np.sqrt(dim))
    s = np.linalg.norm(correlation)
    return x, y, gamma0, s, correlation / s


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method, tolerance", [
    ("two_layer_moments", 1e-9),  # an adaptive ODE at rtol = atol = 1e-12 over O(1) values
    ("two_layer", 1e-9),          # the particle flow is exact for φ = x (same ODE tolerance)
])
def test_two_layer_linear_dmft_follows_the_exact_mode_law(seed, method, tolerance):
    x, y, gamma0, s, v = whitened_task(seed)
    times = np.linspace(0.0, 3.0, 13)
    spec = Spec(Architecture(1, "linear", "mup", gamma0=gamma0), Data(x, y),
                Training(times=tuple(times)), solver={"method": method})
    solution = dmft.solve(spec)
    exact = mode_strength(times, s, gamma0)[:, None] * (x @ v / np.sqrt(x.shape[1]))[None, :]
    np.testing.assert_allclose(solution.f_train, exact, atol=tolerance * np.abs(exact).max())


def test_mode_law_solves_its_ode_and_saturates_at_the_singular_value():
    s, gamma0 = 0.7, 1.9
    t = np.linspace(0.0, 4.0, 4001)
    m = mode_strength(t, s, gamma0)
    rate = np.gradient(m, t)
    expected = 2 * (s - m) * np.sqrt(1 + gamma0**2 * m**2)
    # second-order central differences on a 1e-3 grid: error ~ h² m''' = O(1e-5)
    np.testing.assert_allclose(rate[1:-1], expected[1:-1], atol=1e-4)
    assert abs(m[0]) < 1e-15  # round-off of w − 1/w at w = 1
    # saturation: s − m decays as e^{−2√(1 + γ0²s²) t}, about 4e-6 s at t = 4
    assert 0 < s - m[-1] < 1e-5 * s
    lazy = s * (1 - np.exp(-2 * t))  # γ0 → 0
    np.testing.assert_allclose(mode_strength(t, s, 1e-6), lazy, atol=1e-9)


def _half_time_exact(s, gamma0):
    """t at which m = s/2, by bisection on the monotone closed form."""
    low, high = 0.0, 50.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if mode_strength(mid, s, gamma0) < s / 2 else (low, mid)
    return 0.5 * (low + high)


def test_stage_times_approach_the_saxe_sigmoid_as_gamma0_grows():
    # Saxe et al. Eq. 12 with τ = 1/γ0 and s/u0 = 2γ0 s − 1: t_half = ln(2γ0 s − 1)/(2γ0 s)
    s = 0.8
    errors = []
    for gamma0 in (4.0, 16.0, 64.0, 256.0):
        sigmoid = np.log(2 * gamma0 * s - 1) / (2 * gamma0 * s)
        errors.append(abs(_half_time_exact(s, gamma0) - sigmoid) / sigmoid)
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.01, errors  # the corrections are O(1/(γ0 s)) relative, ~0.5 % here
    # modes are learnt in order of their singular values
    assert _half_time_exact(1.5, 32.0) < _half_time_exact(0.5, 32.0)


@pytest.mark.parametrize("seed", range(3))
def test_each_singular_mode_of_several_outputs_follows_the_exact_mode_law(seed):
    """C outputs on whitened inputs: M = U diag(m_α) Vᵀ with every m_α on its own mode law
    (derivations/saxe_stages.md, Modes). P > D makes Φ^0 singular; φ' = 1 is constant."""
    rng = np.random.default_rng(100 + seed)
    num_train, dim, outputs = int(rng.integers(10, 17)), int(rng.integers(3, 6)), 2 + seed % 2
    q, _ = np.linalg.qr(rng.normal(size=(num_train, dim)))
    x = np.sqrt(num_train * dim) * q
    u, _ = np.linalg.qr(rng.normal(size=(outputs, outputs)))
    v, _ = np.linalg.qr(rng.normal(size=(dim, outputs)))
    s = np.sort(rng.uniform(0.2, 2.0, outputs))[::-1]
    y = x @ (u @ np.diag(s) @ v.T).T / np.sqrt(dim)  # Σ_yx = U diag(s) Vᵀ
    gamma0 = float(rng.uniform(0.5, 4.0))
    times = np.linspace(0.0, 2.0, 9)
    spec = Spec(Architecture(1, "linear", "mup", gamma0=gamma0), Data(x, y),
                Training(times=tuple(times)), solver={"method": "two_layer"})
    f = dmft.solve(spec).f_train  # (T, P, C)
    modes = np.stack([mode_strength(times, sa, gamma0) for sa in s], axis=-1)  # (T, C)
    exact = np.einsum("ca,ta,pa->tpc", u, modes, x @ v / np.sqrt(dim))
    # moment-matched antithetic sources make the particle flow exact for φ = x: what is left is
    # the adaptive ODE's tolerance on O(1) values
    np.testing.assert_allclose(f, exact, atol=1e-7 * np.abs(exact).max())
