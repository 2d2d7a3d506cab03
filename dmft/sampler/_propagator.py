"""O(1/N) fluctuations of the learning curve during training.

**Two-layer μP networks.** A width-N two-layer network *is* an N-particle system: neuron i
carries (h_i ∈ R^P, a_i) with h_i(0) ~ N(0, K^x), a_i(0) ~ N(0, 1) i.i.d., and

    ∂t h_iμ = (γ0/P) a_i Σ_α K^x_{μα} φ'(h_iα) Δ_α,   ∂t a_i = (γ0/P) Σ_α φ(h_iα) Δ_α,
    f_μ = (1/γ0) ∫ a φ(h_μ) dμ_N,   Δ = y − f_train,

with μ_N the empirical measure of the N neurons (exact at any N; derivations/finite_width.md,
eq:particles). As N → ∞, μ_N → μ and this is the McKean–Vlasov (DMFT) limit. At width N,
μ_N = μ + N^{-1/2} G with G a centred Gaussian signed measure, Cov(∫g dG, ∫h dG) = Cov_μ(g, h);
linearising the flow in G (the tangent, or linear-response, propagation of the initial
fluctuation, including its feedback through Δ) gives

    N Cov f(t) = Cov_G[δf(t)] + O(1/N),    δf = ∂f/∂μ · G        (eq:propagator)

We represent μ by S particles with weights w_j (antithetic pairs (h, ±a), so f(0) = 0 exactly)
and G by weight perturbations δw = (ζ − ζ̄)/S, ζ_j = ±1 (Rademacher), for which N Cov f = S E[δf δfᵀ];
δf is integrated with the particles (jax.jvp of the vector field) for K random directions.
The estimate is unbiased, with a relative Monte Carlo error ≈ √(2/K) that is reported.

**NTK parameterization (any depth, residual blocks included).** In the lazy limit the
fluctuation is O(1), not O(1/N): y − f(t) = A_t (y − f(0)) and f_*(t) = f_*(0) + Θ_{*X} M_t (y − f(0))
with f(0) ~ N(0, Σ^{L+1}), so

    Cov f(t) = A_t Σ A_tᵀ,   δf_*(t) = f_*(0) − Θ_{*X} M_t f(0),

where (`lazy_response`) for gradient flow A_t = e^{−Θt/P}, M_t = Θ^{-1}(I − A_t); for GD, step k,
A_k = (I − η0Θ/P)^k and M_k = Σ_{j<k} (η0/P) A_j = Θ^{-1}(I − A_k); for SGD with batch weights ω_j
(`dmft.network.SGD.batch_weights`) the exact recursion A_{j+1} = (I − (η0/P) Θ diag ω_j) A_j,
M_{j+1} = M_j + (η0/P) diag(ω_j) A_j from A_0 = I, M_0 = 0.
"""

from __future__ import annotations

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InputError, SolveError
from ..activations import get_activation
from ..network import MSE
from ..spec import Spec


@dataclasses.dataclass(frozen=True)
class TangentPropagator:
    """Linear-response prediction of N·Var f(t) for two-layer μP networks.

    Attributes:
        particles: S, the size of the particle representation of the initial measure (even).
        directions: K, random fluctuation directions (relative MC error ≈ √(2/K)).
        rtol, atol: Diffrax (Tsit5 + PID) tolerances.
        seed: PRNG seed of the particles and directions.
    """

    particles: int = 4096
    directions: int = 128
    rtol: float = 1e-7
    atol: float = 1e-9
    seed: int = 12345
    max_steps: int = 100_000


def _two_layer_prediction(spec: Spec, options: TangentPropagator):
    arch, data = spec.architecture, spec.data
    activation = get_activation(arch.activation)
    phi, dphi = activation.phi, activation.dphi
    gamma0 = arch.gamma0
    x_all = data.x_train if not data.num_test else np.concatenate([data.x_train, data.x_test])
    P = data.num_train
    kx = jnp.asarray(x_all @ data.x_train.T / data.input_dim)  # (P_all, P)
    kx_all = x_all @ x_all.T / data.input_dim
    y = jnp.asarray(data.y_train)
    half = options.particles // 2
    key_h, key_a, key_z = jax.random.split(jax.random.key(options.seed), 3)
    chol = np.linalg.cholesky(kx_all + 1e-12 * np.eye(len(kx_all)) * np.trace(kx_all))
    h_half = jax.random.normal(key_h, (half, len(kx_all))) @ jnp.asarray(chol).T
    a_half = jax.random.normal(key_a, (half,))
    h0 = jnp.concatenate([h_half, h_half])
    a0 = jnp.concatenate([a_half, -a_half])
    S = 2 * half
    weights = jnp.full((S,), 1.0 / S)
    zeta = jax.random.rademacher(key_z, (options.directions, S), dtype=h_half.dtype)  # Hutchinson: lower variance than Gaussian
    dweights = (zeta - zeta.mean(axis=1, keepdims=True)) / S

    def output(h, a, w):
        return (w * a) @ phi(h) / gamma0  # (P_all,)

    def velocity(h, a, w):
        delta = y - output(h, a, w)[:P]
        drive = dphi(h[:, :P]) * delta  # (S, P)
        dh = (gamma0 / P) * a[:, None] * (drive @ kx.T)
        da = (gamma0 / P) * phi(h[:, :P]) @ delta
        return dh, da

    def field(t, state, args):
        h, a, th, ta = state

        def tangent(dh_dir, da_dir, dw_dir):
            return jax.jvp(velocity, (h, a, weights), (dh_dir, da_dir, dw_dir))[1]

        dh, da = velocity(h, a, weights)
        tdh, tda = jax.vmap(tangent)(th, ta, dweights)
        return dh, da, tdh, tda

    def observe(t, state, args):
        h, a, th, ta = state
        f = output(h, a, weights)
        df = jax.vmap(lambda x, b, w: jax.jvp(output, (h, a, weights), (x, b, w))[1])(th, ta, dweights)
        return f, df

    state0 = (h0, a0, jnp.zeros((options.directions, *h0.shape)),
              jnp.zeros((options.directions, S)))
    times = np.asarray(spec.training.times)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, float(times[-1]), None, state0,
        saveat=diffrax.SaveAt(ts=times, fn=observe),
        stepsize_controller=diffrax.PIDController(rtol=options.rtol, atol=options.atol),
        max_steps=options.max_steps, throw=False,
    )
    return solution.ys, solution.result == diffrax.RESULTS.successful


# a Spec hashes by identity (frozen, eq=False): one compile per spec object and options
_jit_two_layer = jax.jit(_two_layer_prediction, static_argnums=(0, 1))


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingFluctuations:
    """Predicted fluctuations of f(t) at the saved times.

    ``scale`` is "N*Var" (μP: N·Var, the O(1/N) coefficient) or "Var" (NTK: O(1) lazy variance).
    Arrays: ``f_train`` (T, P), ``f_test`` (T, P_test) or None, ``loss_train`` (T,), their
    Monte Carlo standard errors (zero when exact), and the mean-field ``f_limit`` (T, P).
    """

    scale: str
    f_train: np.ndarray
    f_train_err: np.ndarray
    loss_train: np.ndarray
    loss_train_err: np.ndarray
    f_test: np.ndarray | None = None
    f_test_err: np.ndarray | None = None
    f_limit: np.ndarray | None = None
    note: str = ""


def predict_training_fluctuations(spec: Spec, options: TangentPropagator = TangentPropagator()
                                  ) -> TrainingFluctuations:
    """The fluctuations of the learning curve that the theory predicts for `spec`.

    μP, one hidden layer, gradient flow: N·Var f(t) and N·Var 𝓛(t) by tangent propagation
    (eq:propagator). NTK parameterization, any depth (residual blocks included) and any training
    rule: the lazy-limit Var f(t) (eq:lazy-variance, with `lazy_response`). Other specs raise
    InputError (no prediction is implemented for deep μP networks, discrete μP rules, several
    outputs or cross-entropy).
    """
    arch, data = spec.architecture, spec.data
    P = data.num_train
    if spec.training.loss != "mse" or data.num_outputs != 1:
        raise InputError(
            "the O(1/N) training-fluctuation prediction covers one output under the MSE; got "
            f"training.loss = {spec.training.loss!r} with {data.num_outputs} outputs")
    if arch.parameterization == "ntk":
        return _lazy_fluctuations(spec)
    if spec.training.optimizer != "flow":
        raise InputError(
            "the O(1/N) tangent-propagator prediction for μP networks covers gradient flow; "
            f"training.optimizer = {spec.training.optimizer!r} has no prediction yet")
    if arch.hidden_layers != 1:
        raise InputError(
            "the O(1/N) training-fluctuation prediction covers two-layer μP networks "
            f"(architecture.hidden_layers = 1); got hidden_layers = {arch.hidden_layers}"
        )
    if options.particles < 2 or options.particles % 2:
        raise InputError(f"particles must be an even number >= 2, got {options.particles}")
    (f, df), ok = _jit_two_layer(spec, options)
    if not bool(ok):
        raise SolveError(f"tangent propagation did not reach t = {spec.training.times[-1]:g} "
                         f"within max_steps = {options.max_steps}")
    f, df = np.asarray(f), np.asarray(df)  # (T, P_all), (T, K, P_all)
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(df))):
        raise SolveError("tangent propagation diverged (non-finite f or δf)")
    S, K = options.particles, options.directions
    samples = S * df**2  # (T, K, P_all): unbiased samples of N Var f
    nvar = samples.mean(axis=1)
    nvar_err = samples.std(axis=1, ddof=1) / np.sqrt(K)
    # δ𝓛 = (∂𝓛/∂f)·δf = −(1/P) Δ·δf at first order
    delta = MSE().error_signal(f[:, :P], data.y_train)
    dloss = -np.einsum("tp,tkp->tk", delta, df[:, :, :P]) / P
    loss_samples = S * dloss**2
    out = TrainingFluctuations(
        scale="N*Var",
        f_train=nvar[:, :P],
        f_train_err=nvar_err[:, :P],
        loss_train=loss_samples.mean(axis=1),
        loss_train_err=loss_samples.std(axis=1, ddof=1) / np.sqrt(K),
        f_limit=f[:, :P],
        note=f"tangent propagation of the empirical-measure fluctuation, S = {S} particles, "
             f"K = {K} directions",
    )
    if data.num_test:
        out = dataclasses.replace(out, f_test=nvar[:, P:], f_test_err=nvar_err[:, P:])
    return out


def lazy_response(spec: Spec, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A_t, M_t), each (T, P, P), of the lazy linear model with NTK `theta` (P, P) under the
    spec's training rule at its saved times (module docstring): y − f(t) = A_t (y − f(0)) and
    f_*(t) − f_*(0) = Θ_{*X} M_t (y − f(0)). Exact for flow, GD and SGD."""
    theta = 0.5 * (np.asarray(theta, dtype=np.float64) + np.asarray(theta, dtype=np.float64).T)
    P = theta.shape[0]
    dynamics = spec.training.dynamics
    times = np.asarray(spec.training.times, dtype=np.float64)
    if dynamics.name == "sgd":
        steps = np.asarray(spec.training.steps, dtype=np.int64)
        eta = dynamics.learning_rate
        weights = dynamics.batch_weights(P, max(int(steps.max()), 1))
        decay, growth = np.eye(P), np.zeros((P, P))
        saved_a, saved_m = {}, {}
        for k in range(int(steps.max()) + 1):
            saved_a[k], saved_m[k] = decay, growth
            if k == int(steps.max()):
                break
            step = eta / P * weights[k]
            growth = growth + step[:, None] * decay
            decay = decay - theta @ (step[:, None] * decay)
        return (np.stack([saved_a[int(k)] for k in steps]),
                np.stack([saved_m[int(k)] for k in steps]))
    eigvals, eigvecs = np.linalg.eigh(theta)
    eigvals = np.clip(eigvals, 0.0, None)
    safe = np.where(eigvals > 0, eigvals, 1.0)
    if dynamics.name == "gd":
        steps = np.asarray(spec.training.steps, dtype=np.float64)[:, None]
        x = dynamics.learning_rate * eigvals[None, :] / P
        decay = (1.0 - x) ** steps
        growth = np.where(eigvals > 0, (1.0 - decay) / safe, steps * dynamics.learning_rate / P)
    else:
        rate = eigvals[None, :] * times[:, None] / P
        decay = np.exp(-rate)
        growth = np.where(eigvals > 0, -np.expm1(-rate) / safe, times[:, None] / P)
    return (np.einsum("ik,tk,jk->tij", eigvecs, decay, eigvecs),
            np.einsum("ik,tk,jk->tij", eigvecs, growth, eigvecs))


def _lazy_fluctuations(spec: Spec) -> TrainingFluctuations:
    from ..kernels import layer_kernels

    arch, data = spec.architecture, spec.data
    P = data.num_train
    x_all = data.x_train if not data.num_test else np.concatenate([data.x_train, data.x_test])
    kernels = layer_kernels(arch, x_all, layers=(arch.hidden_layers + 1,))
    sigma, theta_all = np.asarray(kernels.nngp[-1]), np.asarray(kernels.ntk[-1])
    theta = theta_all[:P, :P]
    decays, growths = lazy_response(spec, theta)
    times = np.asarray(spec.training.times)
    f_var, f_test_var, loss_var = [], [], []
    for decay, growth in zip(decays, growths):
        # δf(t) = A f_all(0): train rows [0 | decay] acting on (f_train(0), f_test(0))
        a_train = np.concatenate([decay, np.zeros((P, len(x_all) - P))], axis=1)
        cov_train = a_train @ sigma @ a_train.T
        f_var.append(np.diag(cov_train))
        if data.num_test:
            a_test = np.concatenate([-theta_all[P:, :P] @ growth, np.eye(len(x_all) - P)], axis=1)
            f_test_var.append(np.diag(a_test @ sigma @ a_test.T))
        # 𝓛 = (1/2P)|y − f|², y − f(t) = A_t (y − f(0)): exact quadratic in the Gaussian f(0)
        r = decay @ data.y_train
        loss_var.append((2 * np.trace(cov_train @ cov_train) / 4 + r @ cov_train @ r) / P**2)
    zeros = np.zeros((len(times), P))
    out = TrainingFluctuations(
        scale="Var",
        f_train=np.asarray(f_var),
        f_train_err=zeros,
        loss_train=np.asarray(loss_var),
        loss_train_err=np.zeros(len(times)),
        note=("lazy limit: Cov f(t) = A_t Σ A_t^T with f(0) ~ N(0, Σ^{L+1}), A_t = "
              + {"flow": "e^{-Θt/P}", "gd": "(I - η0 Θ/P)^k"}.get(spec.training.optimizer,
                                                                 "the SGD step product")),
    )
    if data.num_test:
        out = dataclasses.replace(out, f_test=np.asarray(f_test_var),
                                  f_test_err=np.zeros_like(f_test_var))
    return out
