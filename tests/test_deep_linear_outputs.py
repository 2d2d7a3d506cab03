"""Several outputs (MSE) in the deep-linear DMFT closure (issue 13; derivations/
multi_output_dmft.md §6).

Checked here: at L = 1 the C-output closure is the two-layer particle DMFT with φ = x (exact for
the linear network with moment-matched sources) for GD, SGD and flow; at L = 2, 3 (plain and
residual) it agrees with the Monte Carlo DMFT with activation "linear" within its standard errors;
a rotation of the outputs commutes with the solve to round-off; on whitened inputs every singular
mode of a C-output task follows the exact mode law at L = 1, and at L = 2 the modes stay decoupled
(M(t) = U diag(m_α(t)) Vᵀ, eq:dl_mo_modes); cross-entropy is refused in one line.
"""

import numpy as np
import pytest

import dmft
from dmft.solvers import DeepLinearDMFT, MonteCarloDMFT, TwoLayerDMFT
from dmft.spec import Architecture, Data, Spec, Training

from conftest import one_line_error
from test_saxe_closed_form import mode_strength


def make_spec(x, y, *, hidden_layers=1, gamma0=1.0, rule="gd", eta=0.25, steps=8, x_test=None,
              residual_scale=None, loss="mse", **training):
    """A linear μP spec saving at t = k·η0, k = 0..steps; "flow" saves at the same times."""
    times = tuple(eta * k for k in range(steps + 1))
    if rule == "flow":
        rules = Training(times, loss=loss)
    else:
        rules = Training(times, optimizer=rule, learning_rate=eta, loss=loss, **training)
    return Spec(Architecture(hidden_layers=hidden_layers, activation="linear",
                             parameterization="mup", gamma0=gamma0,
                             residual_scale=residual_scale),
                Data(x, y, x_test=x_test), rules)


def regression(seed, num_train=4, num_test=2, dim=3, outputs=2, smooth=False):
    """Gaussian inputs and C targets: random normal, or smooth tanh(x·V)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, dim))
    if smooth:
        y = np.tanh(x[:num_train] @ rng.standard_normal((dim, outputs)))
    else:
        y = rng.standard_normal((num_train, outputs))
    return x[:num_train], y, x[num_train:]


def test_shapes_and_the_output_averaged_kernels():
    x, y, x_test = regression(0, outputs=3)
    solution = DeepLinearDMFT().solve(make_spec(x, y, hidden_layers=2, x_test=x_test, steps=3))
    assert solution.f_train.shape == (4, 4, 3) and solution.f_test.shape == (4, 2, 3)
    assert solution.ntk.shape == (4, 4, 4) and solution.g[0].shape == (4, 4, 4)
    # t = 0: independent outputs, G^ℓ = G^ℓ_0 ⊗ I_C, so the averages are the scalar kernels
    scalar = DeepLinearDMFT().solve(make_spec(x, y[:, 0], hidden_layers=2, x_test=x_test, steps=3))
    np.testing.assert_allclose(solution.ntk[0], scalar.ntk[0], rtol=0, atol=1e-13)  # round-off
    arrays = solution.arrays(y)
    np.testing.assert_allclose(arrays["loss_train"],
                               0.5 * np.mean(np.sum((solution.f_train - y) ** 2, -1), -1),
                               rtol=1e-13)
    assert arrays["sharpness"].shape == (4,)
    # one output given as (P, 1) keeps the shapes of docs/conventions.md §5
    single = DeepLinearDMFT().solve(make_spec(x, y[:, :1], hidden_layers=2, steps=3))
    assert single.f_train.shape == (4, 4)


def test_accuracy_of_one_hot_mse_targets_comes_from_the_solution():
    x, _, _ = regression(2, num_train=6, num_test=0)
    labels = np.array([0, 1, 2, 0, 1, 2])
    spec = Spec(Architecture(2, "linear", "mup", gamma0=1.0),
                Data(x, np.eye(3)[labels], labels=labels), Training(times=(0.0, 1.0, 4.0)))
    solution = dmft.solve(spec)
    arrays = solution.arrays(spec.data.y_train)  # the solution's own loss and data
    expected = np.mean(np.argmax(solution.f_train, axis=-1) == labels, axis=-1)
    np.testing.assert_array_equal(arrays["accuracy_train"], expected)
    assert solution.diagnostics["method"] == "deep_linear" and expected[-1] > expected[0]


def test_cross_entropy_is_refused_in_one_line():
    x, y, _ = regression(1, outputs=2)
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    spec = make_spec(x, labels, hidden_layers=2, loss="cross_entropy")
    one_line_error(lambda: DeepLinearDMFT().solve(spec), "training.loss", "cross_entropy")


# ----------------------------------------------------------------------------------------------
# L = 1: the two-layer DMFT with φ = x


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rule", ["gd", "sgd"])
def test_one_layer_equals_the_two_layer_dmft_for_gd_and_sgd(seed, rule):
    x, y, x_test = regression(seed, outputs=2 + seed % 2)
    extra = dict(batch_size=2, seed=seed) if rule == "sgd" else {}
    spec = make_spec(x, y, gamma0=1.5, rule=rule, x_test=x_test, **extra)
    closure = DeepLinearDMFT().solve(spec)
    particles = TwoLayerDMFT(particles=64, batches=1).solve(spec)
    # both are the exact N = ∞ step map of the same GD / SGD rule (moment-matched sources make
    # the particle system exact for φ = x): agreement to round-off of O(1) values
    for key in ("f_train", "f_test", "ntk"):
        np.testing.assert_allclose(getattr(closure, key), getattr(particles, key), rtol=0,
                                   atol=1e-12, err_msg=key)
    np.testing.assert_allclose(closure.g[0], particles.g[0], rtol=0, atol=1e-12)
    assert np.max(np.abs(closure.ntk[-1] - closure.ntk[0])) > 0.05  # features moved


@pytest.mark.parametrize("seed", range(2))
def test_one_layer_flow_converges_to_the_two_layer_dmft_at_second_order(seed):
    x, y, x_test = regression(seed, outputs=3)
    spec = make_spec(x, y, gamma0=1.5, rule="flow", x_test=x_test)
    particles = TwoLayerDMFT(particles=64, batches=1, rtol=1e-10, atol=1e-12).solve(spec)
    coarse, fine = (DeepLinearDMFT(dt=dt).solve(spec) for dt in (0.02, 0.01))
    errors = [np.max(np.abs(s.f_train - particles.f_train)) for s in (coarse, fine)]
    # the Adams march is second order in dt (derivations/deep_linear_gd_residual.md §1): halving
    # dt divides the error by ≈ 4 (0.3 leaves room for the O(dt³) term) ...
    assert errors[1] < 0.3 * errors[0], errors
    # ... and the Richardson combination removes the dt² term: what is left is O(dt³) plus the
    # particle ODE's tolerance (1e-10 relative), measured ≈ 0.09 of the dt/2 error
    richardson = (4 * fine.f_train - coarse.f_train) / 3
    assert np.max(np.abs(richardson - particles.f_train)) < 0.25 * errors[1], errors


# ----------------------------------------------------------------------------------------------
# L >= 2: against the Monte Carlo DMFT with φ = x

MONTE_CARLO_CASES = [  # (L, C, residual_scale, seed)
    (2, 2, None, 0),
    (3, 3, None, 1),
    (2, 3, 1.0, 2),
    (3, 2, 0.7, 5),
]


@pytest.mark.parametrize("hidden_layers, outputs, residual_scale, seed", MONTE_CARLO_CASES)
def test_deep_gd_matches_the_monte_carlo_dmft(hidden_layers, outputs, residual_scale, seed):
    x, y, x_test = regression(seed, outputs=outputs, smooth=True)
    spec = make_spec(x, y, hidden_layers=hidden_layers, eta=0.5, steps=6, x_test=x_test,
                     residual_scale=residual_scale)
    closure = DeepLinearDMFT().solve(spec)
    mc = MonteCarloDMFT(num_samples=2048, num_batches=8).solve(spec)
    # both march the exact GD step map (no discretisation error): the difference is the Monte
    # Carlo error alone, 4 standard errors of the batches for every output and the loss (floor
    # 1e-12 where the standard error vanishes, at t = 0)
    values = {"f_train": (closure.f_train, mc.f_train), "f_test": (closure.f_test, mc.f_test),
              "loss_train": (closure.losses(y)["loss_train"], mc.losses(y)["loss_train"])}
    for key, (value, reference) in values.items():
        excess = np.abs(value - reference) - 4 * mc.stderr[key] - 1e-12
        assert np.max(excess) <= 0, (key, np.max(excess))
    # NTK: the batch σ of the Monte Carlo kernels underestimates their scatter (the batches share
    # the Gram kernels of the march; entrywise deviations reach 6–10 σ at C = 1 as well), so the
    # mean deviation against 4 mean σ, as in test_dmft_nonlinear
    bound = 4 * np.mean(mc.stderr["ntk"])
    assert np.mean(np.abs(closure.ntk - mc.ntk)) < bound
    # the criterion discriminates: a frozen (lazy) NTK fails it
    assert np.mean(np.abs(closure.ntk[0] - mc.ntk)) > bound


@pytest.mark.parametrize("hidden_layers, residual_scale, rule", [
    (2, None, "gd"), (3, None, "flow"), (2, 1.0, "gd"), (3, 0.7, "flow"),
])
def test_identical_columns_are_the_scalar_problem_at_gamma0_sqrt_c(hidden_layers, residual_scale,
                                                                     rule):
    # eq:mo_identical is exact for the Gaussian closure (no orthogonal sampling noise): C equal
    # columns at γ0 are the one-output march at γ0√C to round-off, not C copies at γ0
    x, y, x_test = regression(3, outputs=1, smooth=True)
    outputs, gamma0 = 3, 0.8
    kwargs = dict(hidden_layers=hidden_layers, residual_scale=residual_scale, rule=rule,
                  eta=0.2, x_test=x_test)
    columns = DeepLinearDMFT().solve(make_spec(x, np.repeat(y, outputs, axis=1), gamma0=gamma0,
                                               **kwargs))
    scalar = DeepLinearDMFT().solve(make_spec(x, y[:, 0], gamma0=gamma0 * np.sqrt(outputs),
                                              **kwargs))
    copies = DeepLinearDMFT().solve(make_spec(x, y[:, 0], gamma0=gamma0, **kwargs))
    for c in range(outputs):
        np.testing.assert_allclose(columns.f_train[..., c], scalar.f_train, rtol=0, atol=1e-13)
        np.testing.assert_allclose(columns.f_test[..., c], scalar.f_test, rtol=0, atol=1e-13)
    assert np.max(np.abs(columns.f_train[..., 0] - copies.f_train)) > 1e-3


# ----------------------------------------------------------------------------------------------
# Rotations of the outputs (eq:mo_rotation)


@pytest.mark.parametrize("hidden_layers, residual_scale, rule", [
    (1, None, "flow"), (2, None, "gd"), (3, None, "flow"), (2, 1.0, "flow"), (3, 0.5, "gd"),
])
def test_a_rotation_of_the_outputs_commutes_with_the_solve(hidden_layers, residual_scale, rule):
    x, y, x_test = regression(7, outputs=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(8).standard_normal((3, 3)))
    method = DeepLinearDMFT(dt=0.05)
    kwargs = dict(hidden_layers=hidden_layers, residual_scale=residual_scale, rule=rule,
                  x_test=x_test, gamma0=1.3, steps=6)
    plain = method.solve(make_spec(x, y, **kwargs))
    rotated = method.solve(make_spec(x, y @ rotation, **kwargs))
    # the closure is O(C)-covariant exactly (G^ℓ → (1⊗R)ᵀG^ℓ(1⊗R), traces invariant): the two
    # marches differ by round-off only
    np.testing.assert_allclose(rotated.f_train, plain.f_train @ rotation, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rotated.f_test, plain.f_test @ rotation, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rotated.ntk, plain.ntk, rtol=0, atol=1e-12)
    for g, g_rotated in zip(plain.g, rotated.g):
        np.testing.assert_allclose(g_rotated, g, rtol=0, atol=1e-12)
    assert np.max(np.abs(plain.ntk[-1] - plain.ntk[0])) > 0.05  # not the lazy limit


# ----------------------------------------------------------------------------------------------
# Saxe: whitened inputs, C outputs with distinct singular values


def whitened_modes(seed, outputs=3):
    """(1/PD) XᵀX = I_D and Σ_yx = U diag(s) Vᵀ with distinct s (derivations/saxe_stages.md)."""
    rng = np.random.default_rng(200 + seed)
    num_train, dim = 10, 4
    q, _ = np.linalg.qr(rng.normal(size=(num_train, dim)))
    x = np.sqrt(num_train * dim) * q
    u, _ = np.linalg.qr(rng.normal(size=(outputs, outputs)))
    v, _ = np.linalg.qr(rng.normal(size=(dim, outputs)))
    s = np.array([1.6, 0.9, 0.35])[:outputs]
    y = x @ (u @ np.diag(s) @ v.T).T / np.sqrt(dim)
    return x, y, u, s, v


def mode_matrix(f, x, u, v):
    """Uᵀ M(t) V with M = fᵀX/(P√D), the read-out map f = X Mᵀ/√D on whitened inputs."""
    num_train, dim = x.shape
    m = np.einsum("tpc,pd->tcd", f, x) / (num_train * np.sqrt(dim))
    return np.einsum("ca,tcd,db->tab", u, m, v)


@pytest.mark.parametrize("seed", range(2))
def test_one_layer_modes_follow_the_exact_mode_law(seed):
    x, y, u, s, v = whitened_modes(seed)
    gamma0 = 1.0 + seed
    times = np.linspace(0.0, 2.0, 9)
    spec = Spec(Architecture(1, "linear", "mup", gamma0=gamma0), Data(x, y),
                Training(times=tuple(times)))
    coarse, fine = (DeepLinearDMFT(dt=dt).solve(spec).f_train for dt in (0.01, 0.005))
    exact = np.einsum("ca,ta,pa->tpc", u,
                      np.stack([mode_strength(times, sa, gamma0) for sa in s], axis=-1),
                      x @ v / np.sqrt(x.shape[1]))
    # the Adams march's O(dt²) error (derivations/deep_linear_gd_residual.md §1), removed to
    # O(dt³) by the Richardson combination of dt and dt/2
    errors = [np.max(np.abs(f - exact)) for f in (coarse, fine)]
    assert errors[1] < 0.3 * errors[0] and errors[1] < 1e-3 * np.abs(exact).max(), errors
    np.testing.assert_allclose((4 * fine - coarse) / 3, exact, rtol=0,
                               atol=0.1 * errors[1])


def test_two_layer_modes_stay_decoupled_and_their_stage_times():
    """L = 2 (three weight layers): the process depends on x only through Φ^0 and is covariant
    under output rotations and under rotations of the whitened input basis, so the sign flips
    (u_α, v_α) → (−u_α, −v_α) leave the task and its solution unchanged and Uᵀ M V stays diagonal
    (eq:dl_mo_modes), to round-off. The stage times t_α (m_α = s_α/2) are reported, not asserted
    beyond their existence: no closed mode law is derived for L >= 2."""
    x, y, u, s, v = whitened_modes(0)
    gamma0, times = 2.0, np.linspace(0.0, 3.0, 121)
    spec = Spec(Architecture(2, "linear", "mup", gamma0=gamma0), Data(x, y),
                Training(times=tuple(times)))
    f = DeepLinearDMFT(dt=0.05).solve(spec).f_train
    modes = mode_matrix(f, x, u, v)
    strengths = np.einsum("taa->ta", modes)
    off_diagonal = modes - np.einsum("ta,ab->tab", strengths, np.eye(3))
    assert np.max(np.abs(off_diagonal)) < 1e-10 * np.max(np.abs(strengths))
    reached = strengths > s / 2
    assert reached[-1].all(), strengths[-1]
    stage_times = [np.interp(sa / 2, strengths[:, a], times) for a, sa in enumerate(s)]
    print("L = 2 stage times (m_α = s_α/2) for s =", s, ":", np.round(stage_times, 3))
