"""The residual-block DMFT equations that ``dmft derive`` prints are the ones the solvers march
(issue 12, item 5; docs/conventions.md §2c, derivations/finite_step_dmft.md eq:res_process):

- gradient flow, φ = identity: the printed time integrals, lowered on the deep-linear solver's own
  grid with its own quadrature weights (Euler; two-step Adams–Bashforth), are its march to
  round-off, and lowered with the package's left rule (Richardson-combined: second order) they
  converge to the solver's default answer at second order;
- GD / SGD, φ = tanh: the printed step sums, evaluated on the Monte Carlo solver's own draws with
  its Stein response rows, are its march sample by sample (f, Φ^ℓ, G^ℓ and K to round-off);
- ``dmft derive`` of a residual spec prints these derivations (residual_exponent read from it).

The GD / SGD step sums of φ = identity are held equal to the deep-linear solver in
tests/test_derive_discrete.py (test_printed_deep_linear_step_sums_equal_the_deep_linear_solver).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmft import Architecture, Spec, Training
from dmft.activations import get_activation
from dmft.solvers import DeepLinearDMFT, MonteCarloDMFT
from dmft.solvers import _deep_nonlinear as monte_carlo
from dmft.symbolic import CausalQuadrature, derive, eta0, gamma0, num_train

from _derive_helpers import (
    equations, gd_training, lower_on_steps, march_printed_deep_linear, printed_average,
    printed_coefficient, small_data,
)
from conftest import run_dmft

ALPHA = 1.3  # residual_scale α: β = α/L^e is 0.92 (L = 2, e = 1/2) down to 0.43 (L = 3, e = 1)


def residual_arch(hidden_layers, exponent, activation="linear", gamma0_value=1.2):
    return Architecture(hidden_layers, activation, "mup", gamma0=gamma0_value,
                        residual_scale=ALPHA, residual_exponent=exponent)


def linear_problem(seed=3):
    """4 training points and 1 test point in D = 6, and Φ^0 = K^x over train ∪ test."""
    data = small_data(seed, num_train=4, num_test=1, input_dim=6)
    x = np.concatenate([data.x_train, data.x_test])
    return data, x @ x.T / x.shape[1]


def adams_bashforth_weights(num_steps, dt):
    """The two-step Adams–Bashforth rule as a causal weight matrix w (T, T): the first step is
    Euler, step k' >= 2 adds dt(3/2 F_{k'−1} − 1/2 F_{k'−2}); w[k] sums the steps k' <= k."""
    increments = np.zeros((num_steps + 1, num_steps + 1))
    increments[1, 0] = dt
    for k in range(2, num_steps + 1):
        increments[k, k - 1], increments[k, k - 2] = 1.5 * dt, -0.5 * dt
    return np.cumsum(increments, axis=0)


def left_rule_weights(times):
    """The package's own left Riemann rule (`CausalQuadrature("left")`) on `times`."""
    return np.asarray(CausalQuadrature("left").weights(jnp.asarray(times)))


def printed_flow(arch, kx, y, times, weights):
    """f (T, Q) and K (T, P, P) of the printed flow equations with the time integrals as
    Σ_s w[k, s] F(t_s) (`march_printed_deep_linear`)."""
    return march_printed_deep_linear(derive(arch), kx, y, len(times) - 1, weights=weights)


def on_all_points(solution):
    return np.concatenate([solution.f_train, solution.f_test], axis=1)


# ----------------------------------------------------------------------------------------------
# Gradient flow, φ = identity: the printed integrals against DeepLinearDMFT.


@pytest.mark.parametrize("hidden_layers", [2, 3])
@pytest.mark.parametrize("exponent", [0.5, 1.0])
@pytest.mark.parametrize("scheme", ["euler", "adams"])
def test_printed_residual_flow_on_the_solver_grid_is_the_deep_linear_march(hidden_layers,
                                                                           exponent, scheme):
    # The solver's flow march is W_k = W_0 + Σ_{s<k} w_ks U_s for a causal weight matrix w
    # (dmft/solvers/_deep_linear.py): Euler (extrapolate = False) or, by default, two-step
    # Adams–Bashforth on a grid through every spec time (here the spec times are the grid).
    # Lowering the printed ∫_0^t ds with the same w, with the responses δX(t)/δS(s) taken as
    # ∂X_k/∂S_s / w_ks, must give the same numbers.
    arch = residual_arch(hidden_layers, exponent)
    data, kx = linear_problem()
    dt, steps = 0.1, 10
    times = dt * np.arange(steps + 1)
    spec = Spec(arch, data, Training(tuple(times)))
    if scheme == "euler":
        weights, solver = left_rule_weights(times), DeepLinearDMFT(dt=dt, extrapolate=False)
    else:
        weights, solver = adams_bashforth_weights(steps, dt), DeepLinearDMFT(dt=dt)
    f, ntk = printed_flow(arch, kx, data.y_train, times, weights)
    solution = solver.solve(spec)
    assert solution.diagnostics["scheme"] == scheme and solution.diagnostics["steps"] == steps
    # both sides are the same explicit march in float64 over 10 steps on O(1) values: round-off
    # only (measured <= 3e-14 on K, 1e-15 on f)
    np.testing.assert_allclose(f, on_all_points(solution), atol=1e-10, rtol=0)
    np.testing.assert_allclose(ntk, solution.ntk, atol=1e-10, rtol=0)
    assert np.abs(f[-1] - f[0]).max() > 0.5  # the run moved (≈ 1.1): the check has content


def test_printed_residual_flow_converges_to_the_deep_linear_solver_at_second_order():
    # Independently of the solver's weights: the printed integrals lowered with the package's
    # left rule at dt, dt/2, dt/4 (first order each), Richardson-combined R(dt) = 2P(dt/2) − P(dt)
    # (second order), against the solver's default Adams–Bashforth march at dt (stated order 2).
    # Two second-order discretisations of one flow differ by O(dt²): halving dt must divide the
    # difference by about 4. The left rule alone differs from it by O(dt): a factor 2.
    arch = residual_arch(2, 0.5)
    data, kx = linear_problem()
    t_max, coarse = 0.4, (8, 16)
    assert DeepLinearDMFT().order == 2
    printed = {}
    for n in (8, 16, 32):
        f, ntk = printed_flow(arch, kx, data.y_train, np.linspace(0, t_max, n + 1),
                              left_rule_weights(np.linspace(0, t_max, n + 1)))
        printed[n] = f[:: n // 8], ntk[:: n // 8]  # on the coarsest grid t = 0, 0.05, …, 0.4
    spec = Spec(arch, data, Training(tuple(np.linspace(0, t_max, 9))))
    gaps, left_gaps = {}, {}
    for n in coarse:
        solution = DeepLinearDMFT(dt=t_max / n).solve(spec)
        richardson = [2 * fine - crude for fine, crude in zip(printed[2 * n], printed[n])]
        gaps[n] = (np.abs(richardson[0] - on_all_points(solution)).max(),
                   np.abs(richardson[1] - solution.ntk).max())
        left_gaps[n] = np.abs(printed[n][0] - on_all_points(solution)).max()
    order_f, order_ntk = (gaps[8][i] / gaps[16][i] for i in range(2))
    # second order: ideal ratio 4 (measured 5.0 on f, 5.4 on K: still slightly pre-asymptotic)
    assert order_f >= 3 and order_ntk >= 3, (gaps, order_f, order_ntk)
    # first order: ideal ratio 2 (measured 2.04)
    assert left_gaps[8] / left_gaps[16] >= 1.7, left_gaps
    # agreement: at dt = 0.025, a tenth of the lazy time scale P/λ_max(K0) ≈ 0.26, two
    # second-order schemes differ by C dt² with C ≈ 6 (3.6e-3 measured, on outputs that move by
    # 0.9 over the run): 5e-3 on f, 1.2e-2 on K (measured 8.7e-3)
    assert gaps[16][0] < 5e-3 and gaps[16][1] < 1.2e-2, gaps
    assert np.abs(printed[32][0][-1] - printed[32][0][0]).max() > 0.5


# ----------------------------------------------------------------------------------------------
# GD / SGD, φ = tanh: the printed step sums on the Monte Carlo solver's own samples.
#
# For L = 1 the S samples of the single-site process are the neurons of a width-S network
# (test_derive_discrete.py::test_printed_tanh_step_sums_are_a_width_s_network_trained_by_gd).
# A residual block's branch W^ℓ (N × N) couples all neurons, so for L >= 2 the samples are not a
# network: the process draws the dynamic sources u^{ℓ+1} ~ GP(0, Φ^ℓ), r^ℓ ~ GP(0, G^{ℓ+1})
# step by step conditional on their past, and its responses A^ℓ, B^ℓ are estimated (Stein's
# lemma). What does hold sample by sample: given the march's standard-normal draws ε and its
# Stein response rows, the printed step sums — with the printed closure Φ^ℓ = ⟨φφ⟩, G^ℓ = ⟨gg⟩
# (averages over the samples) conditioning the sources — are the march.


def monte_carlo_march(spec, solver, monkeypatch):
    """The solution of `solver` and, from inside its solve, the draws of the march, its frozen
    response rows ⟨∂φ(h^ℓ_k)/∂r^ℓ⟩ ("A{ℓ}") and ⟨∂g^{ℓ+1}_k/∂u^{ℓ+1}⟩ ("B{ℓ}"), (T, Q, T·Q) each
    (rows k, columns time-major), and its eigenvalue cutoff rcond."""
    captured, march = {}, monte_carlo._march

    def spy(config, inputs, draws):
        out = march(config, inputs, draws)
        captured.update(draws=jax.tree_util.tree_map(np.asarray, draws), rcond=config.rcond,
                        rows={k: np.asarray(v) for k, v in out["frozen"]["rows"].items()})
        return out

    monkeypatch.setattr(monte_carlo, "_march", spy)
    return solver.solve(spec), captured


def conditional_source(linv, kernel, k, eps, rcond):
    """A dynamic source at step k given its past, L_{k,<k} ε_{<k} + L_kk ε_k (the march's
    sampler `_cholesky_row`, whose law is not what this test checks), from the printed kernel
    (Q, T, Q, T) that is its covariance; returns the extended 𝐋⁻¹ and the samples (S, Q)."""
    q, t = kernel.shape[:2]
    row = np.transpose(kernel[:, k], (0, 2, 1)) * (np.arange(t) <= k)[None, :, None]
    linv, l_row, l_kk, _ = monte_carlo._cholesky_row(
        jnp.asarray(linv), jnp.asarray(row.reshape(q, t * q)), k, q, rcond)
    return np.asarray(linv), eps @ np.asarray(l_row).T + eps[:, k * q:(k + 1) * q] @ np.asarray(
        l_kk).T


def march_printed_on_samples(derivation, kx, y, omega, eta, num_steps, draws, rows, rcond):
    """f(k), K(k) and the equal-time Φ^ℓ(k,k), G^ℓ(k,k) (train) of the printed step sums
    evaluated on S samples: u^1 and r^L are the march's static draws, the dynamic sources are
    conditioned on the printed kernels (`conditional_source`), the printed responses are their
    printed coefficients times the march's Stein rows. Order within step k as in
    `march_printed_deep_linear` (forward sweep, backward sweep, read-out, Δ)."""
    arch = derivation.architecture
    L, p, q, t = arch.hidden_layers, y.size, kx.shape[0], num_steps + 1
    assert p == q  # no test points: see the test
    activation = get_activation(arch.activation)
    scalars = {**derivation.parameters, gamma0: arch.gamma0, eta0: eta, num_train: p}
    eqs = equations(derivation)
    layers = range(1, L + 1)
    fns = {n: lower_on_steps(eqs[n].rhs, num_steps, scalars, activation)
           for n in [f"{x}{layer}" for layer in layers for x in "hzg"] + ["ntk"]}
    closure = {n: printed_average(eqs[n].rhs, num_steps, scalars, activation)
               for n in [f"{x}{layer}" for layer in layers for x in ("Phi", "G")]}
    readout = printed_average(eqs["readout"].rhs, num_steps, scalars, activation)
    samples = draws["u1"].shape[0]
    sources = {"u1": draws["u1"], f"r{L}": draws["r_last"]}
    eps, linv = {}, {}
    for layer in range(1, L):
        for name, draw in ((f"u{layer + 1}", draws["eps_u"][layer - 1]),
                           (f"r{layer}", draws["eps_r"][layer - 1])):
            sources[name], eps[name] = np.zeros((samples, q, t)), draw
            linv[name] = np.zeros((t * q, t * q))
    h, g = ({layer: np.zeros((samples, q, t)) for layer in layers} for _ in range(2))
    z = {layer: np.zeros((samples, q, t)) for layer in range(1, L)} | {L: np.zeros((samples, t))}
    kernels = {f"{x}{layer}": np.zeros((q, t, q, t)) for layer in layers for x in ("Phi", "G")}
    for layer in range(1, L):  # printed A = c⟨δφ/δr⟩, B = c⟨δg/δu⟩: c times the Stein rows
        for kind in "AB":
            scale, _ = printed_coefficient(eqs[f"{kind}{layer}"].rhs, scalars)
            stein = rows[f"{kind}{layer}"].reshape(t, q, t, q)  # [k, μ, s, α]
            kernels[f"{kind}{layer}"] = scale * np.transpose(stein, (1, 0, 3, 2))
    delta, f = np.zeros((p, t)), []

    def step(name, k, fields):
        fn = fns[name]
        shared = {"Kx": kx, "Delta": delta, "omega": omega[:t].T, **kernels}
        values = jax.vmap(lambda fl: fn({**shared, **fl}))(
            {key: jnp.asarray(v) for key, v in fields.items()})
        return np.take(np.asarray(values), k, axis=1 + fn.axes.index("k"))

    def close(name, key, field):  # the printed closure ⟨…⟩ as the average over the samples
        kernels[name] = np.asarray(closure[name].fn({}, {key: jnp.asarray(field)}))

    for k in range(t):
        for layer in layers:  # forward sweep
            if layer > 1:
                name = f"u{layer}"
                linv[name], sources[name][:, :, k] = conditional_source(
                    linv[name], kernels[f"Phi{layer - 1}"], k, eps[name], rcond)
            fields = {f"u{layer}": sources[f"u{layer}"], f"g{layer}": g[layer]}
            if layer > 1:
                fields[f"h{layer - 1}"] = h[layer - 1]
            h[layer][:, :, k] = step(f"h{layer}", k, fields)
            close(f"Phi{layer}", f"h{layer}", h[layer])
        for layer in reversed(layers):  # backward sweep
            if layer < L:
                name = f"r{layer}"
                linv[name], sources[name][:, :, k] = conditional_source(
                    linv[name], kernels[f"G{layer + 1}"], k, eps[name], rcond)
            z[layer][..., k] = step(f"z{layer}", k, {f"r{layer}": sources[f"r{layer}"],
                                                     f"h{layer}": h[layer]})
            fields = {f"h{layer}": h[layer], f"z{layer}": z[layer]}
            if layer < L:
                fields[f"g{layer + 1}"] = g[layer + 1]
            g[layer][:, :, k] = step(f"g{layer}", k, fields)
            close(f"G{layer}", f"g{layer}", g[layer])
        f_all = readout.fn({}, {f"z{L}": jnp.asarray(z[L]), f"h{L}": jnp.asarray(h[L])})
        f.append(np.take(np.asarray(f_all), k, axis=readout.axes.index("k")))
        delta[:, k] = y - f[-1]
    ntk = fns["ntk"]({"Kx": kx, **kernels})
    ntk = np.transpose(np.asarray(ntk), [fns["ntk"].axes.index(x) for x in ("k", "mu", "alpha")])
    diagonal = {name: np.einsum("mkak->kma", kernel) for name, kernel in kernels.items()
                if name[0] in "PG"}
    return np.array(f), ntk, diagonal, kernels


@pytest.mark.parametrize("hidden_layers,exponent,optimizer", [
    (2, 0.5, "gd"), (2, 1.0, "sgd"), (3, 0.5, "gd"), (3, 1.0, "gd")])
def test_printed_residual_tanh_step_sums_on_the_monte_carlo_draws_are_its_march(
        hidden_layers, exponent, optimizer, monkeypatch):
    # No test points: the march keeps the Stein estimates of the responses to test-point sources
    # (zero in the exact process, kept for their cancellations, dmft/solvers/_deep_nonlinear.py),
    # while the printed Σ_α runs over the training points; with a test point the two differ by
    # that Monte Carlo noise (≈ 1e-2 at S = 256). Without kernel control variates the march's f
    # is its read-out γ0⁻¹⟨r(φ(h) − φ(h_lazy)) + (z − r)φ(h)⟩ = γ0⁻¹⟨z φ(h)⟩, the antithetic
    # pairs (r, −r) cancelling ⟨r φ(h_lazy)⟩ exactly; check_sweeps = 1 keeps its rows.
    data = small_data(5, num_train=4, num_test=0, input_dim=6)
    kx = data.x_train @ data.x_train.T / data.input_dim
    eta, steps = 0.5, 6
    rule = {"batch_size": 2, "seed": 3} if optimizer == "sgd" else {}
    training = gd_training(eta, steps, optimizer=optimizer, **rule)
    arch = residual_arch(hidden_layers, exponent, activation="tanh", gamma0_value=1.1)
    solver = MonteCarloDMFT(num_samples=256, num_batches=2, kernel_control_variates=False,
                            check_sweeps=1)
    solution, march = monte_carlo_march(Spec(arch, data, training), solver, monkeypatch)
    omega = np.asarray(training.dynamics.batch_weights(4, steps + 1))
    f, ntk, diagonal, kernels = march_printed_on_samples(
        derive(arch, training=training), kx, data.y_train, omega, eta, steps, march["draws"],
        march["rows"], march["rcond"])
    # the same arithmetic up to association order, over 7 steps; the Stein rows enter through
    # 𝐋⁻¹ entries of O(10²) and K sums L + 1 terms: round-off, 1e-10 (measured <= 1e-11)
    np.testing.assert_allclose(f, solution.f_train, atol=1e-10, rtol=0)
    np.testing.assert_allclose(ntk, solution.ntk, atol=1e-10, rtol=0)
    for layer in range(1, hidden_layers + 1):
        np.testing.assert_allclose(diagonal[f"Phi{layer}"], solution.phi[layer - 1], atol=1e-10,
                                   rtol=0)
        np.testing.assert_allclose(diagonal[f"G{layer}"], solution.g[layer - 1], atol=1e-10,
                                   rtol=0)
    # the two-time rows that condition the sources: Φ^ℓ (ℓ < L) and G^ℓ (ℓ > 1), s <= k
    t, q = steps + 1, kx.shape[0]
    causal = np.arange(t)[None, :] <= np.arange(t)[:, None]  # [k, s]
    for key, name in [(f"phi{layer}", f"Phi{layer}") for layer in range(1, hidden_layers)] + [
            (f"g{layer}", f"G{layer}") for layer in range(2, hidden_layers + 1)]:
        rows = np.transpose(march["rows"][key].reshape(t, q, t, q), (1, 0, 3, 2))  # [μ, k, α, s]
        mask = causal[None, :, None, :]
        np.testing.assert_allclose(np.where(mask, kernels[name], 0), np.where(mask, rows, 0),
                                   atol=1e-10, rtol=0)
    assert np.abs(f[-1] - f[0]).max() > 0.3  # the run moved (≈ 0.5): the check has content


# ----------------------------------------------------------------------------------------------
# Command line: `dmft derive` of a residual spec prints the derivations held equal above.


@pytest.mark.parametrize("optimizer", ["flow", "gd"])
def test_cli_derive_of_a_residual_spec_prints_the_equations_the_solvers_march(tmp_path,
                                                                             optimizer):
    rule = 'optimizer = "gd"\nlearning_rate = 0.5\n' if optimizer == "gd" else ""
    spec = tmp_path / "spec.toml"
    spec.write_text('[architecture]\nhidden_layers = 3\nactivation = "tanh"\n'
                    'parameterization = "mup"\ngamma0 = 1.1\nresidual_scale = 1.3\n'
                    f'residual_exponent = 1.0\n[training]\ntimes = [0.0, 0.5]\n{rule}')
    result = run_dmft("derive", spec)
    assert result.returncode == 0, result.stderr
    training = gd_training(0.5) if optimizer == "gd" else None
    arch = residual_arch(3, 1.0, activation="tanh", gamma0_value=1.1)
    assert result.stdout == str(derive(arch, training=training))
    # β = α/L^e with e = 1 from the spec, in the stream and in its memory term
    memory = "η0 Σ_{s<k}" if optimizer == "gd" else "∫_0^t ds"
    now = "k" if optimizer == "gd" else "t"
    assert (f"h^2_μ({now}) = h^1_μ({now}) + (α/L) [u^2_μ({now}) + (α*γ0/L) {memory}"
            in result.stdout)
    assert f"g^1_μ({now}) = g^2_μ({now}) + (α/L) φ'(h^1_μ({now})) z^1_μ({now})" in result.stdout
