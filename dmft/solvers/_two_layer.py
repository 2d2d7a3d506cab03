"""Two-layer networks (L = 1): the exact mean-field (McKean–Vlasov) dynamics.

For L = 1 the DMFT has no response functions (A^0 = 0, B^1 = 0): each hidden neuron is a
particle (h_μ, z) with h(0) = u ~ N(0, Φ^0), z(0) = r ~ N(0, 1), driven by the error Δ
that the particle population itself produces (derivations/dmft.md, eq:two_layer_h):

    ∂t h_μ = (γ0/P) Σ_α Δ_α Φ^0_{μα} z φ'(h_α)
    ∂t z   = (γ0/P) Σ_α Δ_α φ(h_α)
    Δ = y − f,   f_μ = γ0⁻¹⟨z φ(h_μ)⟩   (the read-out, eq:f_identity)

with test points carried as extra columns of h (zero weight in Δ). The NTK K_{μα} =
⟨φ(h_μ)φ(h_α)⟩ + Φ^0_{μα}⟨z² φ'(h_μ)φ'(h_α)⟩ is reported; the dynamics do not use ∂t f = KΔ/P,
which fails for kinked φ on the particles that slide along a kink (eq:sliding).
`TwoLayerDMFT` integrates S particles forward with Diffrax: no outer loop. `TwoLayerMoments` is
the exact closure for φ = identity (second moments of (h, z) obey a closed ODE).

Discrete rules (docs/conventions.md §2a; derivations/finite_step_two_layer.md): in μP a GD step
moves the weights by η0 γ0² N ∇𝓛_k, which moves each particle exactly by

    h_{k+1} = h_k + (η0γ0/P) z_k Σ_α Φ^0_{·α} e_{kα} φ'(h_{kα}),   z_{k+1} = z_k + (η0γ0/P) Σ_α e_{kα} φ(h_{kα}),

e_k = ω_k ⊙ Δ_k with the batch weights ω of `dmft.network.SGD` (ones for GD) and Δ_k = y − f_k
from the read-out of the particles at step k. Both solvers take these steps exactly (the moment
closure in closed form, eq:gd_moments of that file); nothing assumes the steps are stable.

Several outputs and cross-entropy (docs/conventions.md §2b): with C outputs the read-out weight
of a particle is a vector z ∈ R^C, z(0) = r ~ N(0, I_C), f_{μc} = γ0⁻¹⟨z_c φ(h_μ)⟩, and with the
error signal Δ (P, C) of the loss (y − f for MSE, y − softmax(f) for cross-entropy)

    ∂t h_μ = (γ0/P) Σ_α Φ^0_{μα} φ'(h_α) Σ_c Δ_{αc} z_c,   ∂t z_c = (γ0/P) Σ_α Δ_{αc} φ(h_α)

(the μP gradient flow of w^L ∈ R^{N×C}, particle by particle); GD / SGD take the same steps with
e = ω_k ⊙ Δ_k. The NTK over (point, output) pairs is K_{μα,cd} = δ_cd ⟨φ(h_μ)φ(h_α)⟩ +
Φ^0_{μα}⟨z_c z_d φ'(h_μ)φ'(h_α)⟩, K ⊗ I_C at t = 0; the reported ``ntk`` and ``g_L1`` are the
output averages (1/C) Σ_c of its diagonal blocks (G^1 = (1/C)⟨‖z‖² φ'φ'⟩).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._divergence import DIVERGENCE_FACTOR, check_not_diverged
from .._errors import InputError, SolveError
from .._ode import integrate_flow
from .._options import check_bool, check_int, check_ode_options, options_from_table
from .._precision import require_float64
from .._progress import progress_enabled
from ..network import loss_from_name
from ..spec import Spec
from ._common import LOSS, draw_normal, first_bad_time, layer_ntk, network_of
from ._dmft import (
    check_mup,
    input_kernel,
    is_identity_activation,
    is_piecewise_activation,
    readout_terms,
)
from ._lazy import march_steps
from ._solution import Solution, diagnostics, gauss_newton_sharpness


def _check_two_layer(spec: Spec, method: str, solver=None) -> None:
    require_float64(f"the {method} DMFT")
    check_mup(spec, solver)
    if spec.architecture.hidden_layers != 1:
        raise InputError(
            f"solver.method = {method!r} solves two-layer networks (architecture.hidden_layers = 1), "
            f"got hidden_layers = {spec.architecture.hidden_layers}"
        )


# ----------------------------------------------------------------------------------------------
# Particle method


@dataclasses.dataclass(frozen=True)
class TwoLayerDMFT:
    """Exact mean-field dynamics of a two-layer μP network, by S interacting particles.

    The particles are split into `batches` independent populations of S/B particles, integrated
    together (vmapped vector field, one adaptive Tsit5 solve); outputs are the batch means and
    standard errors the batch spread, std_B / √B. Each population is an exact finite-S "network"
    with f(0) = 0, so the estimate has O(B/S) bias and O(S^{-1/2}) noise.

    The error signal is the read-out Δ = y − γ0⁻¹⟨z φ(h)⟩ (exact for the particle system, also
    for kinked φ), with the lazy NTK as a control variate: f = γ0⁻¹⟨z φ(h)⟩ + (1/P)∫(K_0 − K̂_0)Δ,
    K_0 the exact NTK at t = 0 and K̂_0 the particles' (eq:mc_readout). Reported kernels carry the
    same control variate (Φ − Φ̂_0 + Φ_0 and likewise G), so they are exact at t = 0.

    Variance reduction (both on by default):
      - ``antithetic``: particles come in pairs (u, r), (u, −r). (r, γ0) → (−r, −γ0) is an exact
        symmetry, so the empirical measure is even in γ0: f(0) = ⟨z φ(h)⟩/γ0 = 0 exactly and
        no O(γ0) noise term survives in K.
      - ``moment_matching``: each population's sources are whitened so that ⟨u uᵀ⟩ = Φ^0,
        ⟨r²⟩ = 1, ⟨u r⟩ = 0 hold exactly; for φ = identity the dynamics depend on the sources
        only through these moments, so the particle solution is then exact.

    With ``training.optimizer = "gd"`` or ``"sgd"`` the particles take the exact discrete steps of
    the module docstring instead (no ODE; `rtol`, `atol`, `max_steps` unused), and a run whose
    loss blows up is a `SolveError` naming the step.

    Attributes:
        particles: total number of particles S (split into `batches`).
        batches: number of independent populations B used for the standard errors.
        seed: PRNG seed of the sources.
        rtol, atol: Diffrax PID controller tolerances.
        antithetic, moment_matching: variance reduction, see above.
        max_steps: Diffrax step limit.
    """

    optimizers = ("flow", "gd", "sgd")
    losses = ("mse", "cross_entropy")
    multi_output = True

    particles: int = 8192
    batches: int = 8
    seed: int = 0
    rtol: float = 1e-8
    atol: float = 1e-10
    antithetic: bool = True
    moment_matching: bool = True
    max_steps: int = 100_000

    def __post_init__(self):
        object.__setattr__(self, "particles", check_int("particles", self.particles, 2))
        object.__setattr__(self, "batches", check_int("batches", self.batches, 1))
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0))
        check_ode_options(self)
        for key in ("antithetic", "moment_matching"):
            check_bool(key, getattr(self, key))
        if self.particles % self.batches:
            raise InputError(f"solver.particles = {self.particles} must be a multiple of "
                             f"solver.batches = {self.batches}")
        if self.antithetic and (self.particles // self.batches) % 2:
            raise InputError(f"solver.particles / solver.batches = {self.particles // self.batches} "
                             "must be even with solver.antithetic = true")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> TwoLayerDMFT:
        """From a spec's ``[solver]`` table (without its ``method`` key)."""
        return options_from_table(cls, table, "two_layer")

    def solve(self, spec: Spec) -> Solution:
        """Integrate the particle system to the spec's times; see the class docstring."""
        _check_two_layer(spec, "two_layer", self)
        from ..activations import get_activation

        start = time.perf_counter()
        data = spec.data
        num_train, num_points = data.num_train, data.num_train + data.num_test
        per_batch = self.particles // self.batches
        independent = per_batch // 2 if self.antithetic else per_batch
        if self.moment_matching and independent < num_points + 1:
            raise InputError(
                f"solver.particles = {self.particles} is too few for moment matching: each of the "
                f"{self.batches} batches needs >= {2 * (num_points + 1) if self.antithetic else num_points + 1} "
                f"particles for P + P_test = {num_points} points"
            )
        activation = get_activation(spec.architecture.activation)
        if is_piecewise_activation(spec.architecture.activation):
            warnings.warn(f"two_layer DMFT with the kinked activation {activation.name!r}: the "
                          "adaptive steps shrink on the neurons that slide along the kink; "
                          'solver.method = "monte_carlo" integrates the same dynamics with a fixed '
                          "dt", stacklevel=2)
        kx = jnp.asarray(input_kernel(spec))
        times = np.asarray(spec.training.times, dtype=np.float64)
        num_outputs = data.num_outputs
        sources = _sources(
            jax.random.PRNGKey(self.seed), kx, self.batches, per_batch,
            self.antithetic, self.moment_matching, num_outputs,
        )
        loss = loss_from_name(spec.training.loss)
        y_rows = np.asarray(data.y_train).reshape(num_train, num_outputs)  # (P, C), C = 1 too
        y = jnp.asarray(y_rows)
        gamma0 = jnp.asarray(spec.architecture.gamma0, kx.dtype)
        dynamics = spec.training.dynamics
        if dynamics.name == "flow":
            saved, stats, result = _integrate_particles(
                activation, kx, y, gamma0, sources, jnp.asarray(times), jnp.asarray(self.rtol),
                jnp.asarray(self.atol), self.max_steps, loss,
            )
            if not diffrax.is_successful(result):
                raise SolveError(f"two_layer DMFT: the ODE solve failed ({result}); the dynamics "
                                 "may diverge, or raise solver.max_steps")
            extra = dict(ode_steps=int(stats["num_steps"]),
                         ode_rejected_steps=int(stats["num_rejected_steps"]))
        else:
            steps = np.asarray(spec.training.steps, dtype=np.int64)
            weights = dynamics.batch_weights(num_train, max(int(steps[-1]), 1))
            saved, bad_step = _march_particles(
                activation, kx, y, gamma0, sources, jnp.asarray(weights), jnp.asarray(steps),
                jnp.asarray(dynamics.learning_rate, kx.dtype), loss,
            )
            _check_diverged(saved[2][:, :, :num_train], int(bad_step), y_rows,
                            dynamics.learning_rate,
                            f"the two_layer DMFT ({dynamics.name.upper()})", loss)
            extra = dict(steps=int(steps[-1]), learning_rate=dynamics.learning_rate)
        saved = jax.tree_util.tree_map(np.asarray, saved)
        phi, g, f_all = saved  # leading axes (T, B); f_all (T, B, Q, C)
        bad = first_bad_time(times, phi, g, f_all)
        if bad is not None:
            raise SolveError(f"two_layer DMFT diverged at t = {bad:g} (non-finite kernels)",
                             time=bad)

        kx_np = np.asarray(kx)
        # K = G^1 ⊙ Φ^0 + Φ^1, (T, B, Q, P)
        ntk = layer_ntk(network_of(spec), kx_np[None, None, :, :num_train], [phi], [g])
        f_train, f_test = f_all[:, :, :num_train], f_all[:, :, num_train:]
        if num_outputs == 1:  # one output: the shapes of docs/conventions.md §5
            f_train, f_test = f_train[..., 0], f_test[..., 0]
        per_batch_out = {
            "f_train": f_train,
            "ntk": ntk[:, :, :num_train],
            "phi_L1": phi[:, :, :num_train],
            "g_L1": g[:, :, :num_train],
        }
        if data.num_test:
            per_batch_out["f_test"] = f_test
            per_batch_out["ntk_test_train"] = ntk[:, :, num_train:]
        mean = {key: value.mean(axis=1) for key, value in per_batch_out.items()}
        stderr = {}
        if self.batches > 1:
            stderr = {key: value.std(axis=1, ddof=1) / np.sqrt(self.batches)
                      for key, value in per_batch_out.items()}
            # the spread of each population's λ_max(K)/P (the reported value is that of the mean K)
            per_batch_sharpness = gauss_newton_sharpness(ntk[:, :, :num_train], f_train, loss)
            stderr["sharpness"] = per_batch_sharpness.std(axis=1, ddof=1) / np.sqrt(self.batches)
            rows = num_outputs > 1
            losses = {"loss_train": loss.value(f_train, data.y_train, rows=rows)}
            if data.num_test and data.y_test is not None:
                losses["loss_test"] = loss.value(f_test, data.y_test, rows=rows)
            for key, value in losses.items():  # (T, B): each population's own loss
                stderr[key] = np.asarray(value).std(axis=1, ddof=1) / np.sqrt(self.batches)
        num_times = times.shape[0]
        return Solution(
            t=times,
            f_train=mean["f_train"],
            ntk=mean["ntk"],
            f_test=mean.get("f_test"),
            ntk_test_train=mean.get("ntk_test_train"),
            phi=(mean["phi_L1"],),
            g=(mean["g_L1"],),
            stderr=stderr,
            diagnostics=diagnostics(
                "two_layer", self, start,
                particles_per_batch=per_batch,
                **extra,
                saved_times=num_times,
            ),
            loss=loss,
            data=data,
        )


def _check_diverged(f_train, bad_step: int, y, learning_rate: float, what: str,
                    loss_object=LOSS) -> None:
    """SolveError naming the first step whose loss passed the divergence threshold
    (`dmft._divergence`), from a march that stopped there (its last save repeats that state);
    `f_train` (T, [B,] P[, C]) the saved train outputs, `y` (P,) or (P, C) rows."""
    if bad_step < 0:
        return
    y = np.asarray(y)
    rows = y.ndim == 2
    with np.errstate(over="ignore", invalid="ignore"):
        loss = np.asarray(loss_object.value(np.asarray(f_train)[-1], y, rows=rows))  # (B,) or ()
    reference = float(loss_object.value(np.zeros_like(y), y, rows=rows))
    check_not_diverged([np.max(loss) if np.all(np.isfinite(loss)) else np.inf],
                       [bad_step * learning_rate], reference, what, steps=[bad_step])
    raise SolveError(f"{what} diverged at step {bad_step}", step=bad_step,
                     time=bad_step * learning_rate)  # non-finite below the threshold


def _sources(key, kx, batches: int, per_batch: int, antithetic: bool, moment_matching: bool,
             num_outputs: int = 1):
    """u (B, S_b, Q) ~ N(0, Φ^0) and r (B, S_b, C) ~ N(0, I_C) per batch, with variance
    reduction: antithetic pairs (u, r), (u, −r) and per-batch moment matching (`draw_normal`)."""
    key_u, key_r = jax.random.split(key)
    options = dict(antithetic=antithetic, moment_matching=moment_matching)
    u = draw_normal(key_u, batches, per_batch, (kx.shape[0],), kx.dtype, flip=False, cov=kx,
                    **options)
    if num_outputs == 1:  # the scalar draws, with an output axis
        rho = draw_normal(key_r, batches, per_batch, (), kx.dtype, flip=True, **options)[..., None]
    else:
        rho = draw_normal(key_r, batches, per_batch, (num_outputs,), kx.dtype, flip=True,
                          **options)
    return u, rho


def _particle_system(activation, kx, y, gamma0, sources, loss=LOSS):
    """The particle system of one solve, shared by the flow and the discrete rules.

    State: per batch, the displacements (h − u, z − r) (∝ γ0, so nothing cancels as γ0 → 0) and
    F, the lazy-NTK control variate of the read-out over all Q points and C outputs. `y` is
    (P, C) (C = 1 for one output), z and r (S, C). Returns ``(velocity, save, losses, state0)``:
    ``velocity(state, weights)`` is the right-hand side of eq:two_layer_h with C read-outs (module
    docstring; and ∂t F = (1/P)(K_0 − K̂_0) e) for the error signal e = weights ⊙ Δ, with Δ of
    `loss` from the read-out of the state itself; ``save(state)`` the reported kernels and f over
    all Q points (Q, C); ``losses(state)`` each batch's train loss (B,)."""
    num_train = y.shape[0]
    u, r = sources
    phi, dphi = activation.phi, activation.dphi
    kx_train = kx[:, :num_train]  # (Q, P): Φ^0_{μα}, α over training points
    q = jnp.diag(kx)
    phi_exact = activation.dual(q[:, None], q[None, :], kx)  # E[φ(u)φ(u)ᵀ], (Q, Q)
    dphi_exact = activation.dual_derivative(q[:, None], q[None, :], kx)

    def lazy_kernels(u, r):
        """One population's sampled Φ̂_0 (Q, Q), Ĝ_0 per output pair (Q, P, C, C) at t = 0."""
        act, dact = phi(u), dphi(u)
        g_pairs = jnp.einsum("sq,sp,sc,sd->qpcd", dact, dact[:, :num_train], r, r) / u.shape[0]
        return act.T @ act / u.shape[0], g_pairs

    phi_lazy, g_lazy = jax.vmap(lazy_kernels)(u, r)  # (B, Q, Q), (B, Q, P, C, C)
    phi_shift = phi_exact - phi_lazy  # control-variate shifts of the reported kernels
    g_diagonal = jnp.einsum("bqpcc->bqp", g_lazy) / r.shape[-1]  # (1/C) Σ_c Ĝ_cc
    g_shift = dphi_exact[:, :num_train] - g_diagonal  # (B, Q, P)
    kx_g_exact = kx_train * dphi_exact[:, :num_train]

    def shift_velocity(phi_shift, g_lazy, e):
        """(K_0 − K̂_0) e / P over the Q points, (Q, C): K_0 = (Φ + Φ^0 ⊙ Ġ) ⊗ I_C exact."""
        exact = (phi_shift[:, :num_train] + kx_g_exact) @ e
        sampled = jnp.einsum("qp,qpcd,pd->qc", kx_train, g_lazy, e)
        return (exact - sampled) / num_train

    def readout(u, r, dh, dz, corr):
        """One population: h (S, Q), z (S, C), φ(h), f over all Q points (Q, C) (eq:mc_readout)."""
        h, z, act = u + dh, r + dz, phi(u + dh)
        terms = readout_terms(r[:, None, :], dz[:, None, :], phi(u)[:, :, None],
                              act[:, :, None], gamma0)  # (S, Q, C)
        return h, z, act, jnp.mean(terms, axis=0) + corr

    def velocity(state, weights):
        def one(u, r, dh, dz, corr, phi_shift, g_lazy):
            h, z, act, f = readout(u, r, dh, dz, corr)
            e = weights[:, None] * loss.error_signal(f[:num_train], y, rows=True)  # (P, C)
            dact = dphi(h)  # (S, Q)
            # v_{iμ} = Σ_α Φ^0_{μα} φ'(h_{iα}) Σ_c e_{αc} z_{ic}: particle i's feature gradient
            v = (dact[:, :num_train] * (z @ e.T)) @ kx_train.T  # (S, Q)
            d_dh = (gamma0 / num_train) * v
            d_dz = (gamma0 / num_train) * (act[:, :num_train] @ e)  # (S, C)
            return d_dh, d_dz, shift_velocity(phi_shift, g_lazy, e)

        return jax.vmap(one)(u, r, *state, phi_shift, g_lazy)

    def save(state):
        def one(u, r, dh, dz, corr, phi_shift, g_shift):
            h, z, act, f = readout(u, r, dh, dz, corr)
            dact = dphi(h)
            s = h.shape[0]
            phi_k = act.T @ act[:, :num_train] / s + phi_shift[:, :num_train]  # (Q, P)
            weight = jnp.mean(z**2, axis=1)  # (1/C) ‖z‖²
            # an einsum, not (dact·w)ᵀ @ dact: XLA's CPU backend returns NaN for that vmapped
            # product when φ' is constant (φ = x) and C > 1 (tests/test_saxe_closed_form.py)
            g_k = jnp.einsum("sq,s,sp->qp", dact, weight, dact[:, :num_train]) / s + g_shift
            return phi_k, g_k, f

        return jax.vmap(one)(u, r, *state, phi_shift, g_shift)

    def losses(state):
        def one(u, r, dh, dz, corr):
            return loss.value(readout(u, r, dh, dz, corr)[3][:num_train], y, rows=True)

        return jax.vmap(one)(u, r, *state)

    state0 = (jnp.zeros_like(u), jnp.zeros_like(r),
              jnp.zeros((u.shape[0], u.shape[2], r.shape[2]), u.dtype))
    return velocity, save, losses, state0


@eqx.filter_jit
def _integrate_particles(activation, kx, y, gamma0, sources, times, rtol, atol, max_steps,
                         loss=LOSS):
    """Gradient flow of the particle system (`_particle_system`) with Diffrax."""
    velocity, save, _, state0 = _particle_system(activation, kx, y, gamma0, sources, loss)
    ones = jnp.ones(y.shape[0], y.dtype)
    solution = integrate_flow(lambda t, state, args: velocity(state, ones), state0, times, rtol,
                              atol, max_steps, save=lambda t, state, args: save(state),
                              progress=progress_enabled())
    return solution.ys, solution.stats, solution.result


@eqx.filter_jit
def _march_particles(activation, kx, y, gamma0, sources, weights, steps, learning_rate,
                     loss=LOSS):
    """Exact GD / SGD of the particle system (derivations/finite_step_two_layer.md): every
    particle takes the step θ ← θ + η0·velocity(θ, ω_k) of its own parameters, with Δ from the
    read-out of the current particles (not an Euler step of f). Returns the saves after each of
    `steps` steps and the first step at which a batch's loss passed the divergence threshold
    (−1 if none)."""
    velocity, save, losses, state0 = _particle_system(activation, kx, y, gamma0, sources, loss)
    threshold = DIVERGENCE_FACTOR * jnp.maximum(loss.value(jnp.zeros_like(y), y, rows=True),
                                                1e-300)

    def step(state, k):
        return jax.tree_util.tree_map(lambda x, dx: x + learning_rate * dx, state,
                                      velocity(state, weights[k]))

    def diverged(state):
        value = losses(state)
        return jnp.any(~jnp.isfinite(value) | (value > threshold))

    return march_steps(step, state0, steps, save, diverged)


# ----------------------------------------------------------------------------------------------
# Exact moment closure for φ = identity


@dataclasses.dataclass(frozen=True)
class TwoLayerMoments:
    """Exact two-layer DMFT for φ = identity, through the closed ODE of the second moments.

    With φ(h) = h the particle dynamics are linear, so H = ⟨h hᵀ⟩ (Q×Q), m = ⟨h z⟩ (Q) and
    a = ⟨z²⟩ obey (derivations eq:two_layer_moments; e_α = Δ_α on train points, 0 on test):

        ∂t H = (γ0/P) [(Φ^0 e) mᵀ + m (Φ^0 e)ᵀ],   ∂t m = (γ0/P) [a Φ^0 e + H e],
        ∂t a = (2γ0/P) e·m,                          f = m/γ0,   K = H + a Φ^0,

    from H = Φ^0, m = 0, a = 1. No sampling: an independent check of the other solvers.

    With ``training.optimizer = "gd"`` / ``"sgd"`` the moments take the exact discrete map of the
    particle steps (c = η0γ0/P, v = Φ^0 e, e = ω_k ⊙ Δ_k; derivations/finite_step_two_layer.md,
    eq:gd_moments):

        H' = H + c(v mᵀ + m vᵀ) + c² a v vᵀ,   m' = m + c(a v + H e) + c² (e·m) v,
        a' = a + 2c e·m + c² eᵀH e.
    """

    rtol: float = 1e-11
    atol: float = 1e-12
    max_steps: int = 100_000
    optimizers = ("flow", "gd", "sgd")

    def __post_init__(self):
        check_ode_options(self)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> TwoLayerMoments:
        """From a spec's ``[solver]`` table (without its ``method`` key)."""
        return options_from_table(cls, table, "two_layer_moments")

    def solve(self, spec: Spec) -> Solution:
        _check_two_layer(spec, "two_layer_moments", self)
        if not is_identity_activation(spec.architecture.activation):
            raise InputError(
                f"solver.method = 'two_layer_moments' needs architecture.activation = \"linear\", "
                f"got {spec.architecture.activation!r}"
            )
        start = time.perf_counter()
        data = spec.data
        num_train = data.num_train
        kx = input_kernel(spec)
        times = np.asarray(spec.training.times, dtype=np.float64)
        dynamics = spec.training.dynamics
        if dynamics.name == "flow":
            (big_h, m, a), stats, result = _integrate_moments(
                jnp.asarray(kx), jnp.asarray(data.y_train), jnp.asarray(spec.architecture.gamma0),
                jnp.asarray(times), jnp.asarray(self.rtol), jnp.asarray(self.atol),
                self.max_steps,
            )
            if not diffrax.is_successful(result):
                raise SolveError(f"two_layer_moments: the ODE solve failed ({result})")
            extra = dict(ode_steps=int(stats["num_steps"]),
                         ode_rejected_steps=int(stats["num_rejected_steps"]))
        else:
            steps = np.asarray(spec.training.steps, dtype=np.int64)
            weights = dynamics.batch_weights(num_train, max(int(steps[-1]), 1))
            (big_h, m, a), bad_step = _march_moments(
                jnp.asarray(kx), jnp.asarray(data.y_train), jnp.asarray(spec.architecture.gamma0),
                jnp.asarray(weights), jnp.asarray(steps), jnp.asarray(dynamics.learning_rate))
            f_moments = np.asarray(m)[:, :num_train] / spec.architecture.gamma0
            _check_diverged(f_moments, int(bad_step), data.y_train, dynamics.learning_rate,
                            f"two_layer_moments ({dynamics.name.upper()})")
            extra = dict(steps=int(steps[-1]), learning_rate=dynamics.learning_rate)
        big_h, m, a = np.asarray(big_h), np.asarray(m), np.asarray(a)
        bad = first_bad_time(times, big_h, m, a)
        if bad is not None:
            raise SolveError(f"two_layer_moments diverged at t = {bad:g}", time=bad)
        gamma0 = spec.architecture.gamma0
        ntk = layer_ntk(network_of(spec), kx[None], [big_h], [a[:, None, None]])  # aΦ^0 + H
        f = m / gamma0
        return Solution.from_augmented(
            times, f, ntk, num_train, phi=(big_h,), g=(a,),
            diagnostics=diagnostics(
                "two_layer_moments", self, start,
                **extra,
                saved_times=times.shape[0],
            ),
        )


@eqx.filter_jit
def _integrate_moments(
    kx: Float[Array, "Q Q"],
    y: Float[Array, " P"],
    gamma0: float,
    times: Float[Array, " T"],
    rtol: float,
    atol: float,
    max_steps: int,
):
    num_train = y.shape[0]
    num_points = kx.shape[0]
    scale = gamma0 / num_train

    def field(t, state, args):
        big_h, m, a = state
        e = jnp.zeros(num_points, y.dtype).at[:num_train].set(
            LOSS.error_signal(m[:num_train] / gamma0, y))
        ke = kx @ e
        d_h = scale * (jnp.outer(ke, m) + jnp.outer(m, ke))
        d_m = scale * (a * ke + big_h @ e)
        d_a = 2.0 * scale * (e @ m)
        return d_h, d_m, d_a

    y0 = (kx, jnp.zeros(num_points, y.dtype), jnp.ones((), y.dtype))
    solution = integrate_flow(field, y0, times, rtol, atol, max_steps)
    return solution.ys, solution.stats, solution.result


@jax.jit
def _march_moments(kx, y, gamma0, weights, steps, learning_rate):
    """The exact GD / SGD map of the moments (class docstring), saved after each of `steps`
    steps, and the first step whose loss passed the divergence threshold (−1 if none)."""
    num_train = y.shape[0]
    num_points = kx.shape[0]
    c = learning_rate * gamma0 / num_train
    threshold = DIVERGENCE_FACTOR * jnp.maximum(LOSS.value(jnp.zeros_like(y), y), 1e-300)

    def step(state, k):
        big_h, m, a = state
        e = jnp.zeros(num_points, y.dtype).at[:num_train].set(
            weights[k] * LOSS.error_signal(m[:num_train] / gamma0, y))
        v = kx @ e
        em = e @ m
        new_h = big_h + c * (jnp.outer(v, m) + jnp.outer(m, v)) + c**2 * a * jnp.outer(v, v)
        new_m = m + c * (a * v + big_h @ e) + c**2 * em * v
        new_a = a + 2 * c * em + c**2 * (e @ big_h @ e)
        return new_h, new_m, new_a

    def diverged(state):
        loss = LOSS.value(state[1][:num_train] / gamma0, y)
        return ~jnp.isfinite(loss) | (loss > threshold)

    state0 = (kx, jnp.zeros(num_points, y.dtype), jnp.ones((), y.dtype))
    return march_steps(step, state0, steps, lambda state: state, diverged)


__all__ = ["TwoLayerDMFT", "TwoLayerMoments"]
