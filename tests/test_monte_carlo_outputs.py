"""Several outputs and cross-entropy in the Monte Carlo DMFT (issue 13; derivations/
multi_output_dmft.md).

Checked here: an L = 1 march without kernel control variates is exactly a width-S network with
C read-outs trained by GD / SGD (MSE and cross-entropy, random inputs); a rotation of the outputs
commutes with the solve to round-off when the draws are rotated with it; C identical columns at
γ0 are the scalar problem at γ0√C (eq:mo_identical; to round-off at L = 1 with aligned draws, to
Monte Carlo precision at L = 2), not C copies of it; L = 1 against the two-layer particle DMFT;
small γ0 against the lazy limit; the cross-entropy flow march is its own Picard fixed point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmft.network import SGD
from dmft.solvers import MonteCarloDMFT, TwoLayerDMFT, solve_lazy
from dmft.solvers import _deep_nonlinear
from dmft.spec import Architecture, Data, Spec, Training


def make_spec(x, y, *, hidden_layers=1, activation="tanh", gamma0=1.0, rule="gd", eta=0.25,
              steps=6, loss="mse", x_test=None, y_test=None, **training):
    """A μP spec saving at t = k·η0, k = 0..steps; "flow" saves at the same times."""
    times = tuple(eta * k for k in range(steps + 1))
    if rule == "flow":
        rules = Training(times, loss=loss)
    else:
        rules = Training(times, optimizer=rule, learning_rate=eta, loss=loss, **training)
    return Spec(Architecture(hidden_layers=hidden_layers, activation=activation,
                             parameterization="mup", gamma0=gamma0),
                Data(x, y, x_test=x_test, y_test=y_test), rules)


def regression(seed, num_train=4, num_test=2, dim=3, outputs=2):
    """Gaussian inputs and C smooth targets tanh(x·V)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, dim))
    y = np.tanh(x @ rng.standard_normal((dim, outputs)))
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:]


def classification(seed, num_train=6, num_test=2, dim=3, classes=3):
    """Gaussian inputs and integer labels, every class present."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, dim))
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, num_train - classes)])
    return x[:num_train], labels.astype(float), x[num_train:], rng.integers(0, classes,
                                                                              num_test) * 1.0


def task_of(loss, seed):
    """The 2-output regression (MSE) or the 3-class task (cross-entropy), 6 training points."""
    if loss == "mse":
        return regression(seed, num_train=6, outputs=2)
    return classification(seed, classes=3)


# ----------------------------------------------------------------------------------------------
# Exact: L = 1 is a width-S network with C read-outs


def _network_gd(spec, u, r, omega):
    """A width-S two-layer μP network with C read-outs trained by plain GD / SGD with jax autodiff:
    f = φ(W x/√D)ᵀ w/(γ0 S), w ∈ R^{S×C}, with W chosen so that W x/√D = u (the march's draws;
    the stacked train and test inputs are square and invertible) and w = r;
    θ ← θ − η0 γ0² S ∇𝓛_k, 𝓛_k = (1/P) Σ_μ ω_kμ ℓ(f_μ, y_μ). Returns f (steps + 1, Q, C)."""
    data, arch = spec.data, spec.architecture
    phi = {"tanh": jnp.tanh, "relu": jax.nn.relu}[arch.activation]
    xs = np.concatenate([data.x_train, data.x_test])
    width, dim, gamma0 = u.shape[0], xs.shape[1], arch.gamma0
    eta, y = spec.training.learning_rate, jnp.asarray(data.y_train)
    params = (jnp.asarray(np.sqrt(dim) * np.linalg.solve(xs, u.T).T), jnp.asarray(r))

    def f(params, inputs):
        w0, w1 = params
        return phi(inputs @ w0.T / np.sqrt(dim)) @ w1 / (gamma0 * width)

    def per_point(out):  # the per-point loss, written here (not dmft.network)
        if spec.training.loss == "cross_entropy":
            return jax.nn.logsumexp(out, axis=-1) - jnp.sum(y * out, axis=-1)
        return 0.5 * jnp.sum((out - y) ** 2, axis=-1)

    grad = jax.jit(jax.grad(lambda params, w: jnp.mean(w * per_point(f(params, data.x_train)))))
    out = []
    for k in range(len(spec.training.times)):
        out.append(np.asarray(f(params, xs)))
        g = grad(params, jnp.asarray(omega[min(k, len(omega) - 1)]))
        params = tuple(p - eta * gamma0**2 * width * gp for p, gp in zip(params, g))
    return np.stack(out)


CASES = [("mse", "tanh", "gd"), ("cross_entropy", "tanh", "gd"), ("cross_entropy", "relu", "gd"),
         ("mse", "relu", "sgd"), ("cross_entropy", "tanh", "sgd")]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("loss, activation, rule", CASES)
def test_two_layer_march_with_c_outputs_is_exactly_a_width_s_network(loss, activation, rule,
                                                                       seed):
    # square stacked inputs: D = P + P_test, so any first-layer fields u are reachable by W
    if loss == "mse":
        x, y, x_test, _ = regression(seed, num_train=3, num_test=2, dim=5, outputs=2)
    else:
        x, y, x_test, _ = classification(seed, num_train=4, num_test=1, dim=5, classes=3)
    extra = {"batch_size": 2, "seed": seed} if rule == "sgd" else {}
    spec = make_spec(x, y, activation=activation, gamma0=1.5, rule=rule, eta=0.4, steps=10,
                     loss=loss, x_test=x_test, **extra)
    samples, seed_draws = 64, 3 + seed
    # no kernel control variates: Δ is the samples' own read-out f = ⟨z_c φ(h)⟩/γ0 (the
    # antithetic pairs make ⟨r φ(u)⟩ = 0 exactly), so the march is that network's GD
    sol = MonteCarloDMFT(num_samples=samples, num_batches=2, kernel_control_variates=False,
                         seed=seed_draws).solve(spec)
    xs = np.concatenate([x, x_test])
    outputs = spec.data.num_outputs
    draws = _deep_nonlinear._draw(jax.random.PRNGKey(seed_draws), jnp.asarray(xs @ xs.T / 5),
                                  samples, len(spec.training.times), 1, 2, True,
                                  num_outputs=outputs)
    steps = len(spec.training.times) - 1
    omega = (SGD(0.4, batch_size=2, seed=seed).batch_weights(len(x), steps) if rule == "sgd"
             else np.ones((steps, len(x))))
    f = _network_gd(spec, np.asarray(draws["u1"]), np.asarray(draws["r_last"]), omega)
    assert sol.f_train.shape == (steps + 1, len(x), outputs)
    # the same arithmetic up to association order: round-off only
    np.testing.assert_allclose(sol.f_train, f[:, :len(x)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(sol.f_test, f[:, len(x):], rtol=0, atol=1e-10)
    assert np.max(np.abs(f[-1] - f[0])) > 0.1  # it trained


# ----------------------------------------------------------------------------------------------
# Symmetries of the outputs (MSE)


def _rotated_draws(rotation):
    """`_draw` with every r-source rotated in output space, r_c → Σ_d r_d R_dc: the draws are
    again standard normal (R orthogonal), antithetic pairs included."""
    original = _deep_nonlinear._draw

    def draw(*args, **kwargs):
        out = original(*args, **kwargs)
        outputs = rotation.shape[0]

        def rotate(eps):
            return (eps.reshape(eps.shape[0], -1, outputs) @ rotation).reshape(eps.shape)

        return {**out, "r_last": out["r_last"] @ rotation,
                "eps_r": tuple(rotate(eps) for eps in out["eps_r"])}

    return draw


@pytest.mark.parametrize("rule", ["gd", "flow"])
def test_a_rotation_of_the_outputs_commutes_with_the_solve(rule, monkeypatch):
    x, y, x_test, y_test = regression(7, outputs=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(8).standard_normal((3, 3)))
    method = MonteCarloDMFT(num_samples=128, num_batches=4)
    kwargs = dict(hidden_layers=2, rule=rule, steps=4, x_test=x_test)
    plain = method.solve(make_spec(x, y, y_test=y_test, **kwargs))
    monkeypatch.setattr(_deep_nonlinear, "_draw", _rotated_draws(rotation))
    turned = method.solve(make_spec(x, y @ rotation, y_test=y_test @ rotation, **kwargs))
    # Every equation is covariant under y → yR with the r-draws rotated alike (Δ, z, g rotate,
    # Σ_c Δ_c g_c and Φ are invariant, G^ℓ → (I⊗R)ᵀG^ℓ(I⊗R), and the symmetric block roots of
    # the source covariances rotate with them): the same solve in a rotated basis, round-off
    # only. With unrotated draws the two would agree only to the Monte Carlo error (~1e-2 at
    # S = 128). GD: 1e-10. Flow: the smooth-in-time sources have near-singular conditional
    # covariances (eigenvalues down to the rcond cutoff), whose inverse roots in 𝐋⁻¹ amplify
    # round-off, so 1e-7 — still five orders below the Monte Carlo error.
    tolerance = 1e-10 if rule == "gd" else 1e-7
    np.testing.assert_allclose(turned.f_train, plain.f_train @ rotation, rtol=0, atol=tolerance)
    np.testing.assert_allclose(turned.f_test, plain.f_test @ rotation, rtol=0, atol=tolerance)
    # the reported NTK (1/C) Σ_c K_cc is a trace over the outputs: invariant
    np.testing.assert_allclose(turned.ntk, plain.ntk, rtol=0, atol=tolerance)
    for key in ("loss_train", "loss_test"):  # ‖f − y‖ is rotation invariant
        np.testing.assert_allclose(turned.losses(y @ rotation, y_test @ rotation)[key],
                                   plain.losses(y, y_test)[key], rtol=0, atol=tolerance)
    assert np.max(np.abs(plain.f_train[-1] - plain.f_train[0])) > 0.1  # it trained


def test_identical_columns_are_the_scalar_problem_at_a_richer_gamma0():
    # C identical columns at γ0: the features see Σ_c Δ_c g_c = √C Δ G with G = Σ_c g_c/√C, a
    # scalar backward field of the same law, so the limit is the scalar problem at γ0√C
    # (eq:mo_identical), and only at γ0 → 0 C plain copies of the scalar problem
    x, y, _, _ = regression(11, num_train=6, num_test=0, outputs=1)
    y = y[:, 0]
    kwargs = dict(hidden_layers=2, eta=0.5, steps=8)
    method = MonteCarloDMFT(num_samples=1024, num_batches=8)
    many = method.solve(make_spec(x, np.stack([y, y], 1), gamma0=2.0, **kwargs))
    richer = method.solve(make_spec(x, y, gamma0=2.0 * np.sqrt(2.0), **kwargs))
    plain = method.solve(make_spec(x, y, gamma0=2.0, **kwargs))
    sigma = np.hypot(many.stderr["f_train"][..., 0], richer.stderr["f_train"])
    # the r-draws differ (C = 2 and C = 1 draw different shapes), so the two errors are taken
    # as independent: 4σ of the batch-mean errors
    for c in range(2):
        assert np.all(np.abs(many.f_train[..., c] - richer.f_train) <= 4 * sigma + 1e-12)
    # and the effect is resolved: the scalar problem at γ0 itself lies outside that band
    assert np.max(np.abs(plain.f_train - richer.f_train) / (sigma + 1e-12)) > 6


def _aligned_draws(outputs):
    """`_draw` whose read-out draws are all the scalar draw R over √C, r_c = R/√C: the draws of
    the identical-column solution of eq:mo_identical with no orthogonal components."""
    original = _deep_nonlinear._draw

    def draw(*args, num_outputs=1, **kwargs):
        out = original(*args, num_outputs=num_outputs, **kwargs)
        if num_outputs == 1:
            return out
        scalar = original(*args, num_outputs=1, **kwargs)["r_last"]
        return {**out, "r_last": jnp.repeat(scalar[:, None] / np.sqrt(outputs), outputs, 1)}

    return draw


@pytest.mark.parametrize("rule", ["gd", "flow"])
def test_identical_columns_with_aligned_draws_are_the_richer_scalar_march_exactly(rule,
                                                                                  monkeypatch):
    # L = 1 with r_c = R/√C: the C-output march with identical columns at γ0 performs the scalar
    # march at γ0√C with the draw R (eq:mo_identical: z_c = z'/√C, g_c = g'/√C, Σ_c Δ g_c =
    # √C Δ g', Σ_d K_{μc,αd} = K'_{μα}), so round-off only. No kernel control variates: their
    # exact lazy kernels assume independent outputs, which these draws are not.
    x, y, x_test, _ = regression(13, outputs=1)
    y, outputs, gamma0 = y[:, 0], 3, 0.8
    method = MonteCarloDMFT(num_samples=64, num_batches=2, kernel_control_variates=False)
    kwargs = dict(rule=rule, eta=0.5, steps=4, x_test=x_test)
    scalar = method.solve(make_spec(x, y, gamma0=gamma0 * np.sqrt(outputs), **kwargs))
    monkeypatch.setattr(_deep_nonlinear, "_draw", _aligned_draws(outputs))
    many = method.solve(make_spec(x, np.repeat(y[:, None], outputs, 1), gamma0=gamma0,
                                  **kwargs))
    for c in range(outputs):
        np.testing.assert_allclose(many.f_train[..., c], scalar.f_train, rtol=0, atol=1e-10)
        np.testing.assert_allclose(many.f_test[..., c], scalar.f_test, rtol=0, atol=1e-10)
    assert np.max(np.abs(scalar.f_train[-1])) > 0.1  # it trained


# ----------------------------------------------------------------------------------------------
# L = 1 against the two-layer particle DMFT


@pytest.mark.parametrize("rule", ["gd", "flow"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_two_layer_monte_carlo_matches_the_particle_dmft(loss, rule):
    x, y, x_test, y_test = task_of(loss, 5)
    spec = make_spec(x, y, rule=rule, eta=0.5, steps=4, loss=loss, x_test=x_test,
                     y_test=y_test)
    mc = MonteCarloDMFT(num_samples=1024, num_batches=8,
                        dt=0.05 if rule == "flow" else None).solve(spec)
    particles = TwoLayerDMFT(particles=2048, batches=8).solve(spec)
    assert mc.f_train.shape == particles.f_train.shape == (5, 6, spec.data.num_outputs)
    # independent draws: 4σ of the combined standard errors (the two-layer solver's from
    # independent populations, the march's from batch means, which can underestimate the spread
    # by up to ~2×, docstring of _deep_nonlinear: 4σ of those is still >= 2 true σ). Flow adds
    # the march's O(dt²) trapezoid error against Diffrax at rtol 1e-8: ≲ t·dt²·(λ/P)³/12 ~ 1e-5
    # here, so 1e-4
    allowance = 1e-4 if rule == "flow" else 1e-12
    for key in ("f_train", "f_test", "ntk"):
        sigma = np.hypot(mc.stderr[key], particles.stderr[key])
        gap = np.abs(getattr(mc, key) - getattr(particles, key))
        assert np.all(gap <= 4 * sigma + allowance), (key, np.max(gap / (sigma + 1e-300)))
    loss_mc = mc.arrays(spec.data.y_train, spec.data.y_test)
    loss_particles = particles.arrays(spec.data.y_train, spec.data.y_test)
    for key in ("loss_train", "sharpness"):
        sigma = np.hypot(loss_mc[f"{key}_stderr"], loss_particles[f"{key}_stderr"])
        assert np.all(np.abs(loss_mc[key] - loss_particles[key]) <= 4 * sigma + allowance), key
    if loss == "cross_entropy":  # accuracy through Solution, from the labels
        assert loss_mc["accuracy_train"].shape == (5,) and loss_mc["accuracy_train"][-1] > 0.5


# ----------------------------------------------------------------------------------------------
# Small γ0: the lazy limit


@pytest.mark.parametrize("rule", ["gd", "flow"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_small_gamma0_is_the_lazy_limit(loss, rule):
    x, y, x_test, y_test = task_of(loss, 9)
    eta, steps, dt = 0.5, 6, 0.05
    spec = make_spec(x, y, hidden_layers=2, gamma0=1e-4, rule=rule, eta=eta, steps=steps,
                     loss=loss, x_test=x_test, y_test=y_test)
    sol = MonteCarloDMFT(num_samples=256, num_batches=4, dt=dt if rule == "flow" else None
                         ).solve(spec)
    lazy = solve_lazy(spec)
    lam = np.linalg.eigvalsh(lazy.ntk[0])[-1] / len(x)
    # γ0 = 1e-4: the process deviates by O(γ0²) = 1e-8 (odd orders cancel with the antithetic
    # pairs); the kernel control variates make the lazy NTK exact, so no Monte Carlo error at
    # this order: 1e-7 for GD (both are the exact step map), as in test_monte_carlo_gd. (At
    # γ0 = 1e-3 the O(γ0²) conditional variances of the nearly static sources sit at the
    # rcond cutoff and their Stein responses add noise.) Flow: the march's trapezoid rule
    # (Crank–Nicolson on the lazy part) has global error <= t·dt²·max|∂t³f|/12 with
    # |∂t³f| <= λ³·max|Δ| (λ = λ_max(K0)/P; the softmax Hessian only shrinks it)
    bound = 1e-7 + (steps * eta) * dt**2 * lam**3 * np.max(np.abs(y)) / 12
    tolerance = bound if rule == "flow" else 1e-7
    np.testing.assert_allclose(sol.f_train, lazy.f_train, rtol=0, atol=tolerance)
    np.testing.assert_allclose(sol.f_test, lazy.f_test, rtol=0, atol=tolerance)
    np.testing.assert_allclose(sol.ntk, lazy.ntk, rtol=0, atol=1e-7)  # K0 ⊗ I_C at O(γ0²)
    np.testing.assert_allclose(sol.sharpness, lazy.sharpness, rtol=0, atol=1e-7)
    assert np.max(np.abs(lazy.f_train[-1])) > 0.1  # it trained


def test_cross_entropy_flow_march_is_the_fixed_point_of_its_picard_map():
    # the flow's endpoint predictor and read-out are implicit in Δ for cross-entropy (Newton,
    # eq:mo_predictor): a sweep with every row, Δ and f frozen at the marched values reproduces
    # them to round-off (1e-10: the round-off of one sweep through 𝐋⁻¹, as in test_monte_carlo_gd)
    x, y, x_test, _ = classification(4, classes=3)
    spec = make_spec(x, y, hidden_layers=2, rule="flow", eta=0.5, steps=3, loss="cross_entropy",
                     x_test=x_test)
    sol = MonteCarloDMFT(num_samples=128, num_batches=4, check_sweeps=1).solve(spec)
    assert sol.diagnostics["residuals"][0] < 1e-10
    assert np.max(np.abs(sol.f_train[-1])) > 0.05  # it trained


def test_residual_cross_entropy_at_small_gamma0_is_the_lazy_limit():
    # a residual (depth-μP) ReLU network with 3 classes: the output index runs through the
    # residual stream g^ℓ_c = g^{ℓ+1}_c + βφ'(h^ℓ)z^ℓ_c; at γ0 = 1e-4 the O(γ0²) = 1e-8 deviation
    # of the exact GD process from the lazy step map, as in test_small_gamma0_is_the_lazy_limit
    x, y, x_test, y_test = classification(9, classes=3)
    spec = Spec(Architecture(hidden_layers=2, activation="relu", parameterization="mup",
                             gamma0=1e-4, residual_scale=1.0),
                Data(x, y, x_test=x_test, y_test=y_test),
                Training(tuple(0.5 * k for k in range(7)), optimizer="gd", learning_rate=0.5,
                         loss="cross_entropy"))
    sol = MonteCarloDMFT(num_samples=256, num_batches=4).solve(spec)
    lazy = solve_lazy(spec)
    np.testing.assert_allclose(sol.f_train, lazy.f_train, rtol=0, atol=1e-7)
    np.testing.assert_allclose(sol.f_test, lazy.f_test, rtol=0, atol=1e-7)
    np.testing.assert_allclose(sol.ntk, lazy.ntk, rtol=0, atol=1e-7)
    assert np.max(np.abs(lazy.f_train[-1])) > 0.1  # it trained
