r"""Deep nonlinear DMFT: the single-site process solved by Monte Carlo, marched causally in time.

The process (derivations/dmft.md), for layers ℓ = 1..L on the uniform grid t_k = k·dt,
with Q = P + P_test points (test points have zero weight in Δ):

    h^ℓ(t) = u^ℓ(t) + [𝒜^{ℓ-1} g^ℓ](t) + (γ0/P) ∫_0^t ds Σ_α Δ_α(s) Φ^{ℓ-1}_{μα}(t,s) g^ℓ_α(s)
    z^ℓ(t) = r^ℓ(t) + [ℬ^ℓ φ^ℓ](t)     + (γ0/P) ∫_0^t ds Σ_α Δ_α(s) G^{ℓ+1}_{μα}(t,s) φ^ℓ_α(s)
    g^ℓ = φ'(h^ℓ) z^ℓ,   u^ℓ ~ GP(0, Φ^{ℓ-1}),  r^ℓ ~ GP(0, G^{ℓ+1}),  G^{L+1} = 1,  Φ^0 = xx'/D
    Φ^ℓ = ⟨φ(h^ℓ)φ(h^ℓ)ᵀ⟩,  G^ℓ = ⟨g^ℓ g^ℓᵀ⟩,  K = Σ_{ℓ=0}^{L} G^{ℓ+1}⊙Φ^ℓ,
    Δ = y − f,  f = γ0⁻¹⟨z^L φ(h^L)⟩   (the read-out: exact for every φ, unlike ∂tΔ = −KΔ/P,
                                        which fails for kinked φ on sliding neurons, eq:sliding)

𝒜^ℓ = γ0 A^ℓ and ℬ^ℓ = γ0 B^ℓ are the discrete response operators (the measure ds absorbed):
𝒜^ℓ(t,s) = ⟨∂φ(h^ℓ(t))/∂r^ℓ(s)⟩ (s < t) and ℬ^ℓ(t,s) = ⟨∂g^{ℓ+1}(t)/∂u^{ℓ+1}(s)⟩ (s ≤ t; the
equal-time part ⟨φ''(h^{ℓ+1})z^{ℓ+1}⟩δ_{μα} is the Onsager term of W^T g(W φ)). They are
estimated by Stein's lemma in whitened coordinates, which needs no φ'' (ReLU works): with
u = 𝐋ε, ε standard normal and 𝐋 the block Cholesky factor of the source covariance,

    ⟨∂F/∂u⟩ = ⟨(F − b) εᵀ⟩ 𝐋⁻¹,

where b is a control variate with ⟨b εᵀ⟩ = 0 exactly (b = φ(u^ℓ) for 𝒜^ℓ, b = φ'(u^{ℓ+1}) r^{ℓ+1}
for ℬ^ℓ: the lazy values of F, independent of ε); F − b = O(γ0 t) so the estimator's noise is
O(γ0 t / √S) instead of O(1/√S). Near-singular directions of the conditional covariances
(smooth-in-time sources, singular Φ^0 or G^{L+1} = 1) are dropped below a relative eigenvalue
cutoff `rcond` (of the mean source variance): a direction the sources do not span carries no
response, and each kept direction adds its own Stein noise, so the kernels' noise bias grows with
the number kept over S (derivations/dmft.md, "Why rcond = 1e-3"). Entries known to vanish
(e.g. ℬ off the diagonal at equal times, responses to test-point sources) are *not* zeroed: in
the original coordinates 𝐋⁻¹ has huge entries whose cancellations against the smooth histories
keep the noise O(1/√S) per whitened direction, and zeroing single entries destroys them.

**Training rules** (docs/conventions.md §2a; derivations/finite_step_dmft.md §1–§3). For
``optimizer = "gd"`` / ``"sgd"`` the grid is the steps, t_k = k·η0, and the march is the exact
infinite-width process of the discrete rule, not a discretisation of the flow: the memory terms
are left sums η0 Σ_{s<k} over the completed steps with the error signal ω_s ⊙ Δ_s (ω the batch
weights of `dmft.network.SGD`), there is no endpoint term, and f_k is the read-out with the
explicit control variate F_k = F_{k−1} + (η0/P)D_{k−1}(ω_{k−1}⊙Δ_{k−1}) (eq:gd_readout), never an
Euler step of f. No stability is assumed (catapults run); a run that passes the divergence
criterion of `dmft._divergence` is a SolveError naming the step.

**Residual blocks** (docs/conventions.md §2c; finite_step_dmft.md §4–§6). With
``residual_scale = α`` the layers ℓ = 2..L are h^ℓ = h^{ℓ−1} + β(u^ℓ + 𝒜^{ℓ−1}g^ℓ + β-scaled
memory), β = α/L^{exponent}, and g^ℓ = g^{ℓ+1} + βφ'(h^ℓ)z^ℓ for ℓ < L; the lazy control variates
follow the stream (h_lazy = u^1 + βΣu^m, g_lazy likewise) and their exact means the residual
kernel recursion (eq:res_kernel_cv), so K(0) is exact here too.

**Several outputs and losses** (docs/conventions.md §2b; derivations/multi_output_dmft.md). With
C outputs the read-out w^L ∈ R^{N×C} gives each output its backward field: g^ℓ, z^ℓ, r^ℓ, their
histories and responses run over the (point, output) pairs b = μ·C + c, while h^ℓ, u^ℓ and Φ^ℓ
keep the point index (eq:mo_process, eq:mo_ntk):

    h^ℓ_μ = u^ℓ_μ + [𝒜^{ℓ-1} g^ℓ]_μ + (γ0/P) ∫ds Σ_α Φ^{ℓ-1}_{μα} Σ_c Δ_{αc} g^ℓ_{αc}
    z^ℓ_{μc} = r^ℓ_{μc} + [ℬ^ℓ φ^ℓ]_{μc} + (γ0/P) ∫ds Σ_{α,d} G^{ℓ+1}_{μc,αd} Δ_{αd} φ^ℓ_α,
    G^{L+1}_{μc,αd} = δ_cd,   K_{μc,αd} = Σ_ℓ G^{ℓ+1}_{μc,αd} Φ^ℓ_{μα},
    f_{μc} = γ0⁻¹⟨z^L_c φ(h^L_μ)⟩,

and Δ = −P∂𝓛/∂f only from the loss object (`MSE`, `CrossEntropy`). The flow's endpoint
predictor and read-out are implicit in Δ (eq:mo_predictor): the linear solve for MSE, Newton
steps with the Jacobian of the loss's error signal otherwise; GD is explicit. ``ntk`` and
``g_L{l}`` are the output averages (1/C) Σ_c of the diagonal blocks; C = 1 is the code path of
one output, with the shapes of conventions §5.

**Algorithm: causal time-marching with common random numbers.** All standard-normal draws ε are
fixed up front. Everything at t_k depends only on rows ≤ k of the kernels, so one forward
`lax.scan` over k computes, at each step: the forward pass ℓ = 1..L (new Cholesky row of Φ^{ℓ-1},
sample u^ℓ(t_k) conditionally on its past, the 𝒜^{ℓ-1} row, h^ℓ(t_k), the Φ^ℓ row), the backward
pass ℓ = L..1 (Cholesky row of G^{ℓ+1}, r^ℓ(t_k), the ℬ^ℓ row, z^ℓ and g^ℓ(t_k), the G^ℓ row),
then K(t_k) and Δ(t_k) from the read-out. The result is exactly the fixed point of the Picard map with these draws
(the reference algorithm's iteration, redrawing noise each sweep, never settles: derivations/dmft.md §8):
no damping or outer loop is needed. `check_sweeps > 0` re-applies the map with every kernel,
response and Δ frozen at the marched values and reports the residual (max-abs change of Δ and
of the equal-time kernels) per sweep; it must be at round-off level.

**Time discretisation (order 2).** Memory integrals use the trapezoid rule; at the endpoint
s = t_k, g^ℓ(t_k) (not yet known in the h-integral) is linearly extrapolated from t_{k-1}, t_{k-2}
and Δ(t_k) is predicted by a trapezoid step of the sampled NTK of t_{k-1}, which makes the lazy
part of the march exactly Crank–Nicolson (A-stable). The discrete process is itself a
well-defined "network" (weights W(t_k) = W(0) + Σ_s w_ks ΔW_s) whose output is the read-out, so
its Stein responses are exact for it and the scheme is consistent of order 2 for smooth φ
(tested); sliding neurons of kinked φ chatter as in gradient descent, an O(dt) effect.

**Read-out with a lazy control variate.** f = γ0⁻¹⟨r^L(φ(h^L) − φ(u^L)) + (z^L − r^L)φ(h^L)⟩ + F,
F = (1/P)∫(K − K̂)Δ (trapezoid; one P×P solve per step), with K − K̂ the shift of the kernel
control variates below (exact minus sampled lazy NTK): f(0) = 0 exactly and, as γ0 → 0, f is the
exact lazy flow rather than its O(1/√S) Monte Carlo estimate. F has a bias of order 1/S that grows
with feature learning (F multiplies Δ from the same samples); `readout_control_variate = false`
drops it, for late-time losses of long rich runs of deep networks.

**Cost and memory.** Per step and layer: O(S·T·Q²) for sampling, kernel rows, Stein moments and
the memory sums, O(Q·(TQ)²) for the Cholesky/response rows; in total O(L·T²Q²·(S + TQ)) flops.
Memory (float64 words): per-sample state ≈ (4L − 2)·S·T·Q (φ and g histories, the draws), plus
2(L − 1)·(TQ)² for the inverse Cholesky factors — O(S·T·Q + (TQ)²), never O(S·T²Q²). With C
outputs the backward ones span T·Q·C: (2L − 1)(1 + C)·S·T·Q and (L − 1)(1 + C²)·(TQ)².

**Standard errors.** The S samples are split into `num_batches` groups; kernels and read-outs are
averaged per group at the final fixed point (batch means), with the linear response (1/P)∫K(Δ_b − Δ)
of a group's read-out to its own error signal added. They are a rough guide: measured 0.9–1.4×
the seed-to-seed spread of 𝓛(4) and 1.8–4× of 𝓛(2) (L = 2, ReLU and tanh, P = 8), 0.5–0.75× for
L = 1 ReLU, over 10× at γ0 = 0.2 (benchmarks/dmft_vs_networks.py --replicas 16). With
`replicas` = R the solve is repeated with R seeds and the spread of the R answers is the error:
honest, at R× the cost. With `independent_batches` every group is its own fixed point (vmapped):
the spread then includes the feedback, at B× the O(Q(TQ)²) work, but with a bias of order
T·Q/(S/B) (the Stein regressions have T·Q regressors; measured about −10 % of the late-time loss at
T·Q = 3200, S/B = 512). Reported kernels use control variates
(`kernel_control_variates`): ⟨F⟩ − ⟨F_lazy⟩ + E[F_lazy] with E[F_lazy] the exact dual kernels,
exact at t = 0 and with O(γ0 t/√S) noise.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._divergence import check_not_diverged
from .._errors import InputError, SolveError
from .._options import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_tolerance,
    check_unit_interval,
    options_from_table,
)
from .._precision import require_float64
from .._progress import StepTicker
from .._resources import available_memory_bytes
from ..network import MuP, Residual, loss_from_name
from ..spec import Spec
from ._common import (
    LOSS,
    check_layers,
    draw_normal,
    gib,
    lagrange_matrix,
    layer_ntk,
    network_of,
    new_bar,
)
from ._dmft import check_mup, input_kernel, readout_terms
from ._sharding import (
    constrain_samples,
    largest_divisor_at_most,
    sample_mesh,
    shard_samples,
)
from ._solution import Solution, diagnostics, gauss_newton_sharpness


@dataclasses.dataclass(frozen=True)
class MonteCarloDMFT:
    """Self-consistent Monte Carlo DMFT for deep μP networks (any L >= 1, any φ), trained by
    gradient flow, GD or SGD, with plain or residual (depth-μP) hidden layers, one or C outputs
    per point and the MSE or cross-entropy loss.

    See the module docstring for the equations and the algorithm (causal march with common
    random numbers, Stein responses, second-order time stepping).

    Attributes:
        num_samples: Monte Carlo samples S of the single-site process (split into batches).
        num_batches: groups of samples used for the standard errors (S must be a multiple).
        dt: time step of the flow march; None picks the largest step <= `max_dt` that ends on
            the last spec time. GD and SGD step by ``training.learning_rate`` (dt must be None).
        max_dt: largest default time step (flow).
        seed: PRNG seed of the draws (the answer is independent of the number of devices).
        rcond: eigenvalue cutoff of the conditional source covariances (Stein inverse), relative
            to the mean source variance of the step.
        antithetic: draw the r-sources in ± pairs (exact γ0 → −γ0 symmetry, f(0) = 0).
        control_variates: subtract the lazy values in the Stein estimators (less noise).
        kernel_control_variates: estimate the reported equal-time kernels as ⟨F⟩ − ⟨F_lazy⟩ +
            E[F_lazy], with E[F_lazy] the exact dual kernels of `dmft.activations` (exact at
            t = 0, noise O(γ0 t/√S) instead of O(1/√S)), and use the same shift of the NTK as a
            control variate of the read-out f (see `readout_control_variate`).
        readout_control_variate: add F = (1/P)∫(K − K̂)Δ, the kernel control variates' shift
            of the NTK, to the read-out (needs `kernel_control_variates`). It makes f exactly
            the lazy limit as γ0 → 0 and cuts the noise of f at small γ0 t, but it adds a bias of
            order 1/S that grows with feature learning: late in a long rich run of a deep network
            the loss can come out well below the networks' (examples/digits_depth/README.md).
            Switch it off there, and check the answer at two values of S.
        schedule: "march" (default): the Gauss–Seidel causal march, which lands on the fixed
            point in one pass; "picard": the reference algorithm's Jacobi iteration (with common
            random numbers) from the lazy kernels, up to `max_iter` sweeps until the residual
            < `tol` — slower, kept as an independent check of the march.
        check_sweeps: with "march", Picard sweeps after the march with every row frozen; each
            reports the residual (round-off level at the fixed point).
        tol: convergence tolerance on the residual (max-abs change of Δ, kernel and response
            rows between sweeps).
        max_iter: most Picard sweeps ("picard"), upper bound on `check_sweeps`.
        damping: mixing weight of a sweep's update, x ← damping·F(x) + (1 − damping)·x.
        allow_unconverged: keep (and warn about) a result whose residual exceeds `tol`.
        devices: number of devices to shard the samples over (None: all that divide S).
        phases: the march runs in this many phases of growing history width (causality: steps
            k < T_j only touch the first T_j grid points). n phases cut the O(Q(TQ)²) work to
            ~(n+1)(2n+1)/(6n²) and the O(S·TQ·Q) work to (n+1)/(2n), for n compilations.
            None: 1 when T·Q <= 1024 (compilation dominates), else 4.
        independent_batches: solve each of the `num_batches` groups as its own fixed point
            (vmapped, one device): honest standard errors that include the noise fed back through
            the self-consistency, at B× the O(Q(TQ)²) work and an O(B/S) bias; the default uses
            batch means of one fixed point (cheaper; 0.5–4× the seed spread at γ0 = 1 in our
            checks).
        replicas: independent solves with seeds ``seed, seed + 1, ...`` (each with all the
            settings above); the result is their mean and the standard errors are the spread of
            the replicas over √replicas: honest errors including the self-consistency feedback,
            at replicas × the cost, with each solve's O(1/S) bias (not O(B/S)).
    """

    #: training rules, losses, outputs and architectures this method honours (read by `check_mup`)
    optimizers = ("flow", "gd", "sgd")
    losses = ("mse", "cross_entropy")
    multi_output = True
    residual = True

    num_samples: int = 4096
    num_batches: int = 8
    dt: float | None = None
    max_dt: float = 0.1
    seed: int = 0
    rcond: float = 1e-3
    antithetic: bool = True
    control_variates: bool = True
    kernel_control_variates: bool = True
    readout_control_variate: bool = True
    schedule: str = "march"
    check_sweeps: int = 0
    tol: float = 1e-8
    max_iter: int = 10
    damping: float = 1.0
    allow_unconverged: bool = False
    devices: int | None = None
    phases: int | None = None
    independent_batches: bool = False
    replicas: int = 1

    def __post_init__(self):
        object.__setattr__(self, "num_samples", check_int("num_samples", self.num_samples, 1))
        object.__setattr__(self, "num_batches", check_int("num_batches", self.num_batches, 1))
        if self.num_samples % self.num_batches:
            raise InputError(f"solver.num_samples = {self.num_samples} must be a multiple of "
                             f"solver.num_batches = {self.num_batches}")
        if self.dt is not None:
            object.__setattr__(self, "dt", check_positive("dt", self.dt))
        object.__setattr__(self, "max_dt", check_positive("max_dt", self.max_dt))
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0))
        object.__setattr__(self, "rcond", check_tolerance("rcond", self.rcond))
        check_bool("antithetic", self.antithetic)
        if self.antithetic and (self.num_samples // self.num_batches) % 2:
            raise InputError(f"solver.num_samples / solver.num_batches = "
                             f"{self.num_samples // self.num_batches} must be even with "
                             "solver.antithetic = true")
        check_bool("control_variates", self.control_variates)
        check_bool("kernel_control_variates", self.kernel_control_variates)
        check_bool("readout_control_variate", self.readout_control_variate)
        check_choice("schedule", self.schedule, ("march", "picard"))
        object.__setattr__(self, "check_sweeps", check_int("check_sweeps", self.check_sweeps, 0))
        object.__setattr__(self, "tol", check_tolerance("tol", self.tol))
        object.__setattr__(self, "max_iter", check_int("max_iter", self.max_iter, 1))
        object.__setattr__(self, "damping", check_unit_interval("damping", self.damping))
        check_bool("allow_unconverged", self.allow_unconverged)
        if self.devices is not None:
            object.__setattr__(self, "devices", check_int("devices", self.devices, 1))
        check_bool("independent_batches", self.independent_batches)
        if self.independent_batches and (self.schedule != "march" or self.check_sweeps):
            raise InputError("solver.independent_batches = true needs solver.schedule = \"march\" "
                             "and solver.check_sweeps = 0")
        if self.phases is not None:
            object.__setattr__(self, "phases", check_int("phases", self.phases, 1))
        object.__setattr__(self, "replicas", check_int("replicas", self.replicas, 1))
        if self.check_sweeps > self.max_iter:
            raise InputError(f"solver.check_sweeps = {self.check_sweeps} exceeds "
                             f"solver.max_iter = {self.max_iter}")

    @property
    def _readout_cv(self) -> bool:
        """Whether the read-out carries F (it is the kernel control variates' shift)."""
        return self.readout_control_variate and self.kernel_control_variates

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> MonteCarloDMFT:
        """From a spec's ``[solver]`` table (its ``method`` key ignored)."""
        return options_from_table(cls, table, "monte_carlo")

    # ------------------------------------------------------------------------------------------

    def time_grid(self, times: np.ndarray) -> tuple[float, int]:
        """(dt, number of steps n): the grid t_k = k·dt, k = 0..n, ends at the last spec time."""
        t_end = float(times[-1])
        if t_end == 0.0:
            return (self.dt or self.max_dt), 0
        target = self.dt if self.dt is not None else self.max_dt
        steps = max(1, int(math.ceil(t_end / target - 1e-9)))
        return t_end / steps, steps

    def solve(self, spec: Spec) -> Solution:
        """March the single-site process over the spec's times; see the module docstring."""
        require_float64("the monte_carlo DMFT")
        check_mup(spec, self)
        if self.replicas > 1:
            return self._replicated(spec)
        start = time.perf_counter()
        grid = self._grid(spec)
        num_points = spec.data.num_train + spec.data.num_test
        self._check_cost(spec, grid.dt, grid.steps + 1, num_points)
        grid = grid._replace(omega=_batch_weights(spec, grid))  # after the cost check: (T, P)
        n_dev, mesh = self._mesh()
        inputs = _inputs(spec, grid)
        draws = _draw(jax.random.PRNGKey(self.seed), inputs.kx, self.num_samples, grid.steps + 1,
                      spec.architecture.hidden_layers, self.num_batches, self.antithetic,
                      num_outputs=spec.data.num_outputs)
        if mesh is not None:
            draws = jax.tree_util.tree_map(lambda x: shard_samples(x, mesh), draws)
        config = self._config(spec, grid, mesh)
        out, residuals = self._run_schedule(config, grid, inputs, draws, spec.data.y_train)
        if residuals and residuals[-1] >= self.tol:
            message = (f"DMFT did not converge: residual {residuals[-1]:.3g} > tol {self.tol:g} "
                       f"after {len(residuals)} iterations")
            if not self.allow_unconverged:
                raise SolveError(message)
            warnings.warn(message + " (kept: solver.allow_unconverged = true)", stacklevel=2)
        return self._solution(spec, grid, inputs.kx, out, residuals, n_dev, start)

    def _grid(self, spec: Spec) -> _Grid:
        """The march grid of the spec's training rule: t_k = k·dt for gradient flow (`time_grid`),
        t_k = k·η0 for GD and SGD (one grid point per step, with the steps' batch weights ω)."""
        training = spec.training
        times = np.asarray(training.times, dtype=np.float64)
        if training.optimizer == "flow":
            dt, steps = self.time_grid(times)
            return _Grid(times, dt, steps, "flow", None)
        if self.dt is not None:
            raise InputError(f"solver.dt = {self.dt!r} applies to training.optimizer = \"flow\" "
                             f"only; \"{training.optimizer}\" steps by training.learning_rate")
        return _Grid(times, float(training.learning_rate), max(training.steps), "gd", None)

    def _config(self, spec: Spec, grid: _Grid, mesh) -> _Config:
        """The static settings of the march (a jit static argument)."""
        from ..activations import get_activation

        num_grid = grid.steps + 1
        num_points = spec.data.num_train + spec.data.num_test
        phases = self.phases
        if phases is None:
            phases = 1 if num_grid * num_points <= 1024 else 4
        independent = self.independent_batches
        network = _march_network(spec)
        return _Config(
            num_layers=spec.architecture.hidden_layers, num_train=spec.data.num_train,
            num_points=num_points, num_grid=num_grid,
            num_samples=self.num_samples // self.num_batches if independent else self.num_samples,
            num_batches=1 if independent else self.num_batches,
            rcond=self.rcond, control_variates=self.control_variates,
            activation=get_activation(spec.architecture.activation),
            mesh=mesh, phase_ends=_phase_ends(num_grid, phases),
            keep_rows=self.check_sweeps > 0 or self.schedule == "picard",
            kernel_control_variates=self.kernel_control_variates,
            readout_control_variate=self._readout_cv,
            network=network, ticker=None, rule=grid.rule, branch=_branch_scale(network),
            num_outputs=spec.data.num_outputs, loss=loss_from_name(spec.training.loss),
        )

    def _run_schedule(self, config: _Config, grid: _Grid, inputs: _Inputs, draws, y):
        """The march (or the Picard iteration), then any check sweeps: (outputs, residuals)."""
        picard = self.schedule == "picard"
        sweeps = self.max_iter if picard else self.check_sweeps
        bar = new_bar(config.num_grid * (1 + sweeps), f"DMFT monte carlo ({self.schedule})")
        bar.set_postfix(S=self.num_samples, L=config.num_layers)
        config = dataclasses.replace(config, ticker=StepTicker.for_solve(bar))
        try:
            if picard:
                # initial guess: the lazy (γ0 → 0) kernels of the same draws, zero-drift fields
                out = _march(config, inputs._replace(gamma0=inputs.gamma0 * 1e-30), draws)
            elif self.independent_batches:
                per_batch = jax.tree_util.tree_map(
                    lambda x: x.reshape(self.num_batches, -1, *x.shape[1:]), draws)
                out = _march_independent(config, inputs, per_batch)
            else:
                out = _march(config, inputs, draws)
            out = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(out))
            if self.independent_batches:
                out = _combine_independent(out)
            if not picard:
                _check_diverged(out, grid, y, config)
            return self._picard_sweeps(sweeps, config, grid, inputs, draws, out, bar, y)
        finally:
            bar.close()

    def _mesh(self):
        """(number of devices, mesh or None): all devices that divide S, or `devices`; one with
        independent batches (vmapped)."""
        n_dev = largest_divisor_at_most(self.num_samples, len(jax.devices())
                                        if self.devices is None else self.devices)
        if self.devices is not None and n_dev != self.devices:
            raise InputError(f"solver.devices = {self.devices} does not divide solver.num_samples"
                             f" = {self.num_samples} (or exceeds the {len(jax.devices())} devices)")
        if self.independent_batches:
            n_dev = 1  # the batches are vmapped on one device
        return n_dev, (sample_mesh(n_dev) if n_dev > 1 else None)

    def _picard_sweeps(self, sweeps, config, grid, inputs, draws, out, bar, y):
        """Up to `sweeps` Jacobi sweeps with every row frozen at the last pass (damped), until the
        residual < tol; returns the last pass and the residuals."""
        residuals: list[float] = []
        if not sweeps:
            return out, residuals
        frozen = out.pop("frozen")
        for _ in range(sweeps):
            new = _sweep(config, inputs, draws, frozen)
            new = jax.tree_util.tree_map(np.asarray, jax.block_until_ready(new))
            _check_diverged(new, grid, y, config)
            new_frozen = new.pop("frozen")
            residual = _residual(new_frozen, frozen)
            residuals.append(residual)
            bar.set_postfix(residual=f"{residual:.2e}")
            beta = self.damping
            frozen = jax.tree_util.tree_map(lambda a, b: beta * a + (1 - beta) * b,
                                            new_frozen, frozen)
            out = new
            if residual < self.tol:
                break
        return out, residuals

    def _check_cost(self, spec: Spec, dt: float, num_grid: int, num_points: int) -> None:
        """InputError (one line, with the estimate) before a march that cannot fit in memory or
        would unroll too many layers: per-sample histories (2L − 1)(1 + C)·S·T·Q (the backward
        ones carry the C outputs) and the inverse Cholesky factors (L − 1)(1 + C²)·(TQ)² (× B with
        independent batches), float64; C = 1: (4L − 2)·S·T·Q and 2(L − 1)·(TQ)²."""
        num_layers, S = spec.architecture.hidden_layers, self.num_samples
        outputs = spec.data.num_outputs
        TQ = num_grid * num_points
        factors = (num_layers - 1) * (1 + outputs**2) * (
            self.num_batches if self.independent_batches else 1)
        need = 8.0 * ((2 * num_layers - 1) * (1 + outputs) * S * TQ + factors * TQ**2)
        where = (f"S = {S} samples × T = {num_grid} grid points (dt = {dt:.3g} to t = "
                 f"{spec.training.times[-1]:g}) × Q = {num_points} points × L = {num_layers} layers")
        if outputs > 1:
            where += f" × C = {outputs} outputs"
        check_layers("monte_carlo", num_layers, f"≈ {gib(need)} for {where}")
        available = available_memory_bytes()
        if need > available:
            raise InputError(
                f"the monte_carlo DMFT needs ≈ {gib(need)} for {where}, more than the "
                f"{gib(available)} available; lower solver.num_samples, raise solver.dt (or "
                "solver.max_dt), shorten training.times or use fewer architecture.hidden_layers"
            )

    def _replicated(self, spec: Spec) -> Solution:
        """Mean of `replicas` independent solves; standard errors from their spread."""
        start = time.perf_counter()
        data = spec.data
        solutions = [dataclasses.replace(self, replicas=1, seed=self.seed + i).solve(spec)
                     for i in range(self.replicas)]
        arrays = [sol.arrays(data.y_train, data.y_test) for sol in solutions]
        stacked = {key: np.stack([a[key] for a in arrays]) for key in arrays[0]
                   if key != "t" and not key.endswith("_stderr")}
        mean = {key: value.mean(axis=0) for key, value in stacked.items()}
        num_layers = spec.architecture.hidden_layers
        layers = range(1, num_layers + 1)
        diagnostics = dict(solutions[0].diagnostics)
        diagnostics.update(
            settings=dataclasses.asdict(self), replicas=self.replicas,
            ntk_flow_gap=max(sol.diagnostics["ntk_flow_gap"] for sol in solutions),
            wall_time_s=time.perf_counter() - start)
        return Solution(
            t=solutions[0].t, f_train=mean["f_train"], ntk=mean["ntk"],
            f_test=mean.get("f_test"), ntk_test_train=mean.get("ntk_test_train"),
            phi=tuple(mean[f"phi_L{l}"] for l in layers), g=tuple(mean[f"g_L{l}"] for l in layers),
            stderr={key: value.std(axis=0, ddof=1) / math.sqrt(self.replicas)
                    for key, value in stacked.items()},
            diagnostics=diagnostics, loss=solutions[0].loss, data=data,
        )

    def _solution(self, spec, grid: _Grid, kx, out, residuals, n_dev, start) -> Solution:
        """The marched grid values at the spec times, with standard errors and diagnostics."""
        data = spec.data
        num_train, outputs = data.num_train, data.num_outputs
        num_layers = spec.architecture.hidden_layers
        interp = lagrange_matrix(grid.steps + 1, grid.dt, grid.times)  # (T, T_grid)

        def at_times(x):
            return np.tensordot(interp, x, axes=(1, 0))

        # over (point, output) pairs (μ, c), c fastest: Δ (Tg, P·C), f and K (Tg, Q·C[, Q·C])
        delta, ntk_pairs, f_pairs = out["delta"], out["ntk"], out["f"]
        ntk = _output_average(ntk_pairs, outputs)  # (Tg, Q, Q)
        phi_kk, g_kk = out["phi"], _output_average(out["g"], outputs)  # (Tg, L, Q, Q)
        f_all = _by_point(f_pairs, outputs)  # (Tg, Q) or (Tg, Q, C)
        f_train = f_all[:, :num_train]
        has_test = data.num_test > 0
        omega = _expand(grid.omega, outputs, 1)
        # (1/P)∫KΔ or its GD sum over the pairs, (Tg, Q·C)
        flow = _ntk_flow(ntk_pairs[..., :num_train * outputs], delta, grid._replace(omega=omega))
        stderr = {}
        if self.num_batches > 1:
            per_batch = _per_batch(spec, grid, kx, out, flow, self._readout_cv)
            stderr = {key: at_times(np.std(value, axis=1, ddof=1) / np.sqrt(self.num_batches))
                      for key, value in per_batch.items()}
        return Solution(
            t=grid.times,
            f_train=at_times(f_train),
            ntk=at_times(ntk[:, :num_train, :num_train]),
            f_test=at_times(f_all[:, num_train:]) if has_test else None,
            ntk_test_train=at_times(ntk[:, num_train:, :num_train]) if has_test else None,
            phi=tuple(at_times(phi_kk[:, l, :num_train, :num_train]) for l in range(num_layers)),
            g=tuple(at_times(g_kk[:, l, :num_train, :num_train]) for l in range(num_layers)),
            stderr=stderr,
            diagnostics=diagnostics(
                "monte_carlo", self, start, iterations=1 + len(residuals), residuals=residuals,
                algorithm="causal march, common random numbers, Stein responses",
                num_samples=self.num_samples,
                dt=grid.dt,
                steps=grid.steps,
                training_rule=grid.rule if spec.training.optimizer != "sgd" else "sgd",
                residual_branch_scale=_branch_scale(_march_network(spec)),
                min_source_rank=int(np.min(out["rank"])) if out["rank"].size else None,
                # f − (1/P)∫KΔ (flow) or f − (η0/P)Σ_{s<k} K_s ω_s⊙Δ_s (GD): O(dt²) + MC for
                # smooth φ under flow; the sliding-mode term for kinked φ; for GD the O(η0²)
                # curvature of one step
                ntk_flow_gap=float(np.max(np.abs(f_pairs - flow))),
                devices=n_dev,
            ),
            loss=loss_from_name(spec.training.loss), data=data,
        )


def _per_batch(spec: Spec, grid: _Grid, kx, out, flow, readout_cv: bool
               ) -> dict[str, np.ndarray]:
    """Per-batch estimates (Tg, B, ...) of every reported array, for the standard errors
    (eq:mc_stderr): independent fixed points, or batch means of one fixed point whose read-out
    per batch includes its linear response to its own error signal."""
    data = spec.data
    num_train, outputs = data.num_train, data.num_outputs
    loss = loss_from_name(spec.training.loss)
    phi_b, g_b = out["phi_batches"], out["g_batches"]  # (Tg, L, B, Q, Q), (Tg, L, B, QC, QC)
    if "ntk_batches" in out:  # independent fixed points
        ntk_b, f_b = out["ntk_batches"], out["f_batches"]
    else:  # batch means of one fixed point; f per batch from its own read-out (eq:mc_stderr)
        network = _march_network(spec)

        def batch_ntk(phi, g):  # per-layer (Tg, L, B, ...) → (Tg, B, QC, QC)
            return _pair_ntk(network, np.asarray(kx), list(np.moveaxis(phi, 1, 0)),
                             list(np.moveaxis(g, 1, 0)), outputs, np)

        ntk_b = batch_ntk(phi_b, g_b)
        shift_b = (ntk_b - batch_ntk(out["phi_raw_batches"], out["g_raw_batches"])
                   if readout_cv else np.zeros_like(ntk_b))
        # f_b = f_id,b + (1/P)∫(K_b − K̂_b)Δ_b + (1/P)∫K(Δ_b − Δ): the last term is the linear
        # response of the batch's read-out had it been driven by its own Δ_b
        y_pairs = np.asarray(data.y_train).reshape(-1)
        _, f_b = (np.asarray(x) for x in _readout_error(
            out["f_identity_batches"] - flow[:, None], shift_b + out["ntk"][:, None],
            y_pairs, grid.dt, _expand(grid.omega, outputs, 1), grid.rule, loss, outputs))
    f_b = _by_point(f_b, outputs)  # (Tg, B, Q[, C])
    f_train_b = f_b[:, :, :num_train]
    ntk_points_b = _output_average(ntk_b, outputs)  # (Tg, B, Q, Q)
    ntk_train_b = ntk_points_b[..., :num_train, :num_train]
    rows = outputs > 1
    per_batch = {
        "f_train": f_train_b,
        "ntk": ntk_train_b,
        "loss_train": np.asarray(loss.value(f_train_b, data.y_train, rows=rows)),
        "sharpness": gauss_newton_sharpness(ntk_train_b, f_train_b, loss),
    }
    g_b = _output_average(g_b, outputs)
    for layer in range(spec.architecture.hidden_layers):
        per_batch[f"phi_L{layer + 1}"] = phi_b[:, layer, :, :num_train, :num_train]
        per_batch[f"g_L{layer + 1}"] = g_b[:, layer, :, :num_train, :num_train]
    if data.num_test > 0:
        ftest_b = f_b[:, :, num_train:]
        per_batch["f_test"] = ftest_b
        per_batch["ntk_test_train"] = ntk_points_b[..., num_train:, :num_train]
        if data.y_test is not None:
            per_batch["loss_test"] = np.asarray(loss.value(ftest_b, data.y_test, rows=rows))
    return per_batch


# ----------------------------------------------------------------------------------------------
# Implementation


@dataclasses.dataclass(frozen=True)
class _Config:
    """The static (compile-time) settings of a march: a jit static argument."""

    num_layers: int
    num_train: int
    num_points: int
    num_grid: int
    num_samples: int
    num_batches: int
    rcond: float
    control_variates: bool
    activation: Any
    mesh: Any
    keep_rows: bool = False
    phase_ends: tuple[int, ...] = ()
    kernel_control_variates: bool = True
    readout_control_variate: bool = True  # F = (1/P)∫(K − K̂)Δ in the read-out
    network: Any = None  # the NTK sum (`_march_network`)
    ticker: StepTicker | None = None  # the solve's progress bar; None when bars are off
    rule: str = "flow"  # "flow" (trapezoid march of gradient flow) or "gd" (exact GD / SGD)
    branch: float | None = None  # residual branch scale α/L^β of layers 2..L (None: plain)
    num_outputs: int = 1  # C: backward fields, Δ and f run over (point, output) pairs
    loss: Any = LOSS  # the loss object that forms Δ (`dmft.network.MSE`, `CrossEntropy`)

    @property
    def num_pairs(self) -> int:
        """Q·C: the index set of the backward fields g^ℓ, r^ℓ (point μ, output c; c fastest)."""
        return self.num_points * self.num_outputs


class _Grid(NamedTuple):
    """The march grid: saved times, step dt (η0 for GD), number of steps, the rule ("flow" or
    "gd", SGD being "gd" with batch weights) and ω (steps + 1, P): ω_kμ = P/B on step k's batch
    (ones for full-batch GD and for flow; the last row is never used), filled in by `solve`
    once the march's cost has been checked."""

    times: np.ndarray
    dt: float
    steps: int
    rule: str
    omega: np.ndarray | None


class _Inputs(NamedTuple):
    """The traced inputs of a march: dt (η0 for GD), γ0, Φ^0 (Q, Q), y (P·C,) and ω (T, P·C)
    over the training (point, output) pairs."""

    dt: Any
    gamma0: Any
    kx: Any
    y: Any
    omega: Any


def _batch_weights(spec: Spec, grid: _Grid) -> np.ndarray:
    """ω (steps + 1, P): the training rule's batch weights per step (ones for flow and GD; the
    last row, after the last step, is never used)."""
    omega = np.ones((grid.steps + 1, spec.data.num_train))
    if grid.rule == "gd":
        omega[:grid.steps] = spec.training.dynamics.batch_weights(spec.data.num_train, grid.steps)
    return omega


def _inputs(spec: Spec, grid: _Grid) -> _Inputs:
    dtype = jnp.result_type(float)
    y_pairs = np.asarray(spec.data.y_train).reshape(-1)  # (P·C,), c fastest
    omega = _expand(grid.omega, spec.data.num_outputs, 1)
    return _Inputs(jnp.asarray(grid.dt, dtype), jnp.asarray(spec.architecture.gamma0, dtype),
                   jnp.asarray(input_kernel(spec), dtype), jnp.asarray(y_pairs, dtype),
                   jnp.asarray(omega, dtype))


def _branch_scale(network) -> float | None:
    """β = α/L^{exponent} of the network's residual blocks (docs/conventions.md §2c), or None."""
    scales = {layer.scale for layer in network.layers if isinstance(layer, Residual)}
    if len(scales) > 1:
        raise InputError("the monte_carlo DMFT needs one residual branch scale for all blocks")
    return float(scales.pop()) if scales else None


def _march_network(spec: Spec):
    """The network whose `ntk` the march sums. γ0 enters the march as a traced scalar and the μP
    NTK sum K = Σ G^{ℓ+1} ⊙ Φ^ℓ does not depend on it, so the static network is the spec's with
    γ0 = 1: every γ0 then shares one compiled march."""
    return dataclasses.replace(network_of(spec), parameterization=MuP(1.0))


# ----------------------------------------------------------------------------------------------
# Several outputs: the backward index runs over (point μ, output c) pairs, b = μ·C + c


def _expand(x, num_outputs: int, axis: int):
    """x with every entry along `axis` repeated C times: a point index μ → the pairs (μ, c)."""
    if num_outputs == 1:
        return x
    return (np if isinstance(x, np.ndarray) else jnp).repeat(x, num_outputs, axis=axis)


def _expand_kernel(x, num_outputs: int):
    """A point kernel (..., Q, Q) on the pairs: X_{μc,αd} = X_{μα} (..., Q·C, Q·C)."""
    return _expand(_expand(x, num_outputs, -1), num_outputs, -2)


def _top_gradient_kernel(num_points: int, num_outputs: int):
    """G^{L+1}_{μc,αd} = δ_cd (the read-out w^L ∈ R^{N×C}); the scalar 1 for C = 1."""
    if num_outputs == 1:
        return 1.0
    return np.kron(np.ones((num_points, num_points)), np.eye(num_outputs))


def _pair_ntk(network, kx, phis, gs, num_outputs: int, xp=jnp):
    """K_{μc,αd} = Σ_ℓ G^{ℓ+1}_{μc,αd} Φ^ℓ_{μα} (eq:mo_ntk) from Φ^0 = `kx`, Φ^1..Φ^L (point
    kernels) and G^1..G^L (pair kernels), G^{L+1} = δ_cd; `layer_ntk` for C = 1."""
    if num_outputs == 1:
        return layer_ntk(network, kx, phis, gs)
    num_points = np.shape(kx)[-1]
    features = [_expand_kernel(xp.asarray(phi), num_outputs) for phi in (kx, *phis)]
    return network.ntk(features, [*gs, _top_gradient_kernel(num_points, num_outputs)])


def _output_average(kernel, num_outputs: int):
    """(1/C) Σ_c X_{μc,αc}: the output average of the diagonal blocks of a pair kernel
    (..., Q·C, Q'·C) → (..., Q, Q') (the reported ``ntk`` and ``g_L{l}``, as the two-layer
    solver's); the kernel itself for C = 1."""
    if num_outputs == 1:
        return kernel
    kernel = np.asarray(kernel)
    *lead, rows, cols = kernel.shape
    blocks = kernel.reshape(*lead, rows // num_outputs, num_outputs, cols // num_outputs,
                            num_outputs)
    return np.einsum("...icjc->...ij", blocks) / num_outputs


def _by_point(f, num_outputs: int):
    """Outputs over the pairs (..., Q·C) → (..., Q, C); unchanged (..., Q) for C = 1."""
    if num_outputs == 1:
        return f
    return np.asarray(f).reshape(*np.shape(f)[:-1], -1, num_outputs)


def _draw(key, kx, num_samples: int, num_grid: int, num_layers: int, num_batches: int,
          antithetic: bool, num_outputs: int = 1):
    """All standard-normal draws, full (S, ...) arrays from the key (device-count independent).

    u^1 ~ N(0, Φ^0) is static and r^L ~ N(0, I_C) is one scalar per sample (C = 1) or a C-vector
    (S, C); the dynamic sources u^ℓ (ℓ >= 2) and r^ℓ (ℓ <= L-1) get whitened draws ε of shape
    (S, T·Q) and (S, T·Q·C), time-major.
    With `antithetic`, each batch holds pairs (u-draws, r-draws) and (u-draws, −r-draws): the
    sample set is then closed under the symmetry (r, γ0) → (−r, −γ0) of the process, so every
    kernel is exactly even in γ0 (no O(γ0/√S) noise) and f(0) = γ0⁻¹⟨z^L φ(h^L)⟩ = 0 exactly.
    """
    num_points = kx.shape[0]
    keys = jax.random.split(key, 2 * num_layers)
    per_batch = num_samples // num_batches

    def normal(key, shape, flip, cov=None):
        x = draw_normal(key, num_batches, per_batch, shape, kx.dtype, antithetic=antithetic,
                        flip=flip, cov=cov)
        return x.reshape(num_samples, *x.shape[2:])

    u1 = normal(keys[0], (num_points,), False, cov=kx)
    r_last = normal(keys[1], () if num_outputs == 1 else (num_outputs,), True)
    shape = (num_grid * num_points,)
    eps_u = tuple(normal(keys[2 + i], shape, False) for i in range(num_layers - 1))
    eps_r = tuple(normal(keys[1 + num_layers + i], (num_grid * num_points * num_outputs,), True)
                  for i in range(num_layers - 1))
    return {"u1": u1, "r_last": r_last, "eps_u": eps_u, "eps_r": eps_r}


def _block(x, k, width):
    """Columns [k·width, (k+1)·width) of a 2-D array."""
    return jax.lax.dynamic_slice_in_dim(x, k * width, width, axis=1)


def _set_block(x, value, k, width):
    return jax.lax.dynamic_update_slice_in_dim(x, value, k * width, axis=1)


def _phase_ends(num_grid: int, phases: int) -> tuple[int, ...]:
    """Ends of the march phases; phase j's arrays span ends[j] grid points."""
    phases = max(1, min(phases, num_grid))
    ends = sorted({int(math.ceil(num_grid * (j + 1) / phases)) for j in range(phases)})
    return tuple(ends)


def _dual(act, cov):
    """E[φ(u)φ(v)] for the covariance matrices `cov` (..., Q, Q)."""
    q = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return act.dual(q[..., :, None], q[..., None, :], cov)


def _dual_derivative(act, cov):
    """E[φ'(u)φ'(v)] for the covariance matrices `cov` (..., Q, Q)."""
    q = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return act.dual_derivative(q[..., :, None], q[..., None, :], cov)


def _cholesky_row(linv, row, k, width, rcond):
    """Append block row k to the inverse block-Cholesky factor 𝐋⁻¹ of a covariance 𝐂.

    `row` = 𝐂[k, :] (width × T·width, zero beyond block k). With 𝐋_{k,<k} = 𝐂_{k,<k} 𝐋_{<k}^{-T}
    and the conditional covariance 𝐒 = 𝐂_kk − 𝐋_{k,<k}𝐋_{k,<k}ᵀ = V λ Vᵀ, we take the symmetric
    root 𝐋_kk = V √λ Vᵀ, dropping λ <= rcond·tr 𝐂_kk/width (pseudo-inverse), and
    𝐋⁻¹_{k,:} = [−𝐋_kk⁺ 𝐋_{k,<k} 𝐋⁻¹_{<k}, 𝐋_kk⁺]. Returns (𝐋⁻¹, 𝐋_{k,:<k}, 𝐋_kk, rank).
    """
    l_row = row @ linv.T  # rows >= k of linv are still zero
    ckk = _block(row, k, width)
    schur = ckk - l_row @ l_row.T
    schur = 0.5 * (schur + schur.T)
    lam, vec = jnp.linalg.eigh(schur)
    keep = lam > rcond * jnp.trace(ckk) / width
    safe = jnp.where(keep, lam, 1.0)
    root = (vec * jnp.where(keep, jnp.sqrt(safe), 0.0)) @ vec.T
    root_pinv = (vec * jnp.where(keep, 1.0 / jnp.sqrt(safe), 0.0)) @ vec.T
    new = -(root_pinv @ (l_row @ linv))
    new = _set_block(new, root_pinv, k, width)
    linv = jax.lax.dynamic_update_slice_in_dim(linv, new, k * width, axis=0)
    return linv, l_row, root, jnp.sum(keep)


def _trapezoid_step(ntk, delta, c):
    """Δ_k = (I + c K)⁻¹ (I − c K) Δ_{k-1}, c = dt/(2P): one trapezoid step of ∂tΔ = −KΔ/P."""
    eye = jnp.eye(ntk.shape[-1], dtype=ntk.dtype)
    return jnp.linalg.solve(eye + c * ntk, delta - c * ntk @ delta)


def _readout_step(f_identity, shift_prev, shift, delta_prev, corr_prev, y, c, loss=LOSS,
                  num_outputs=1):
    """One step of the read-out error signal with the lazy-NTK control variate (eq:mc_readout).

    f = f_id + F with f_id = γ0⁻¹⟨z^L φ(h^L)⟩ and F(t) = (1/P)∫_0^t D(s)Δ(s)ds, D = K − K̂ the
    control-variate shift of the NTK (exact minus sampled lazy part, zero-mean); trapezoid in
    time, so Δ_k = err(f_id,k + F_{k-1} + cD_{k-1}Δ_{k-1} + cD_kΔ_k), c = dt/(2P) (for MSE
    (I + cD_k)Δ_k = y − f_id,k − F_{k-1} − cD_{k-1}Δ_{k-1}). Arrays run over the (point, output)
    pairs; leading batch axes are allowed for MSE. Returns (Δ_k (…, P·C), F_k (…, Q·C)).
    """
    num_train = y.shape[-1]

    def apply(matrix, vector):
        return jnp.einsum("...ij,...j->...i", matrix[..., :num_train], vector)

    # the explicit part of the read-out; the implicit cD_kΔ_k is solved for
    f_explicit = (f_identity[..., :num_train] + corr_prev[..., :num_train]
                  + c * apply(shift_prev[..., :num_train, :], delta_prev))
    delta = _implicit_error(loss, f_explicit, c * shift[..., :num_train, :num_train], y,
                            num_outputs)
    corr = corr_prev + c * (apply(shift_prev, delta_prev) + apply(shift, delta))
    return delta, corr


def _readout_step_gd(f_identity, shift_prev, signal_prev, corr_prev, y, c, loss=LOSS,
                     num_outputs=1):
    """One gradient-descent step of the read-out error signal (eq:gd_readout): f_k = f_id,k + F_k
    with F_k = F_{k−1} + c·D_{k−1}(ω_{k−1}⊙Δ_{k−1}), c = η0/P, D the control-variate shift of
    the NTK; explicit, like gradient descent itself. `signal_prev` = ω_{k−1}⊙Δ_{k−1}; arrays run
    over the (point, output) pairs. Leading batch axes are allowed. Returns (Δ_k (…, P·C),
    F_k (…, Q·C))."""
    num_train = y.shape[-1]
    corr = corr_prev + c * jnp.einsum("...ij,...j->...i", shift_prev[..., :num_train],
                                      signal_prev)
    f_train = f_identity[..., :num_train] + corr[..., :num_train]
    return _error(loss, f_train, y, num_outputs), corr


#: Newton steps for the implicit error signal of a non-linear loss: they start from err(f0),
#: which is O(‖M‖) from the root, and converge quadratically.
_NEWTON_STEPS = 4


def _error(loss, f, y, num_outputs: int):
    """Δ = −P ∂𝓛/∂f from the loss object, over the (point, output) pairs (…, P·C), c fastest."""
    lead = f.shape[:-1]
    rows = loss.error_signal(f.reshape(*lead, -1, num_outputs), y.reshape(-1, num_outputs),
                             rows=True)
    return rows.reshape(*lead, -1)


def _implicit_error(loss, f0, matrix, y, num_outputs: int):
    """Δ (…, P·C) solving Δ = err(f0 + MΔ): for MSE the linear solve (I + M)Δ = y − f0 (leading
    batch axes allowed), otherwise Newton's method with the Jacobian of the loss's own error
    signal (autodiff; no batch axes)."""
    rhs = _error(loss, f0, y, num_outputs)
    if loss.name == "mse":
        eye = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
        return jnp.linalg.solve(eye + matrix, rhs[..., None])[..., 0]

    def residual(delta):
        return delta - _error(loss, f0 + matrix @ delta, y, num_outputs)

    delta = rhs
    for _ in range(_NEWTON_STEPS):
        delta = delta - jnp.linalg.solve(jax.jacfwd(residual)(delta), residual(delta))
    return delta


@partial(jax.jit, static_argnums=(5, 6, 7))
def _readout_error(f_identity, shift, y, dt, omega, rule, loss=LOSS, num_outputs=1):
    """Δ(t_k) and f(t_k) over all points on the whole grid from the read-out (`_readout_step`,
    or `_readout_step_gd` for rule "gd"), per batch; f_identity (Tg, B, Q·C), shift
    (Tg, B, Q·C, Q·C), y and ω over the training pairs ((P·C,), (Tg, P·C)). Used for the
    per-batch estimates of one fixed point."""
    num_train = y.shape[-1]

    def one_batch(f_identity, shift):  # (Tg, Q·C), (Tg, Q·C, Q·C)
        delta0 = _error(loss, jnp.zeros_like(y), y, num_outputs)  # f(0) = 0
        corr0 = jnp.zeros(f_identity.shape[1:], f_identity.dtype)

        def step(carry, inputs):
            delta_prev, corr_prev, shift_prev, w_prev = carry
            f_id, shift_k, w_k = inputs
            if rule == "gd":
                delta, corr = _readout_step_gd(f_id, shift_prev, w_prev * delta_prev, corr_prev,
                                               y, dt / (num_train // num_outputs), loss,
                                               num_outputs)
            else:
                delta, corr = _readout_step(f_id, shift_prev, shift_k, delta_prev, corr_prev, y,
                                            dt / (2 * (num_train // num_outputs)), loss,
                                            num_outputs)
            return (delta, corr, shift_k, w_k), (delta, f_id + corr)

        _, (delta, f) = jax.lax.scan(step, (delta0, corr0, shift[0], omega[0]),
                                     (f_identity[1:], shift[1:], omega[1:]))
        return jnp.concatenate([delta0[None], delta]), jnp.concatenate([f_identity[:1] * 0.0, f])

    return jax.vmap(one_batch, in_axes=1, out_axes=1)(f_identity, shift)


def _ntk_flow(ntk, delta, grid: _Grid):
    """(1/P)∫_0^{t_k} K Δ ds on the grid (trapezoid) for flow, (η0/P) Σ_{s<k} K_s (ω_s⊙Δ_s) for
    GD; ntk (Tg, Q, P), delta (Tg, P) → (Tg, Q).

    For flow the read-out f equals it up to O(dt²) and Monte Carlo noise for smooth φ; for kinked
    φ (ReLU) f − flow also holds the term of the sliding neurons (eq:sliding), which the NTK
    over-counts. For GD f − flow is the O(η0²γ0²) curvature of the steps (eq:gd_linear_gap).
    """
    dt = grid.dt
    if grid.rule == "gd":
        rate = np.einsum("kij,kj->ki", ntk, grid.omega * delta) / delta.shape[-1]
        return np.concatenate([np.zeros_like(rate[:1]), np.cumsum(dt * rate[:-1], axis=0)])
    rate = np.einsum("kij,kj->ki", ntk, delta) / delta.shape[-1]
    return np.concatenate([np.zeros_like(rate[:1]),
                           np.cumsum(0.5 * dt * (rate[1:] + rate[:-1]), axis=0)])


def _check_diverged(out, grid: _Grid, y, config: _Config):
    """SolveError for a march that diverged: for GD the shared criterion of `dmft._divergence`
    on the loss at every step (naming the step and the loss), then any non-finite kernel."""
    if grid.rule == "gd":
        y = np.asarray(y)
        rows = y.ndim == 2
        f_train = _by_point(out["f"], config.num_outputs)[:, :config.num_train]
        with np.errstate(over="ignore", invalid="ignore"):
            losses = np.asarray(config.loss.value(f_train, y, rows=rows))
        check_not_diverged(losses, grid.dt * np.arange(losses.shape[0]),
                           float(config.loss.value(np.zeros_like(y), y, rows=rows)),
                           "the monte_carlo DMFT (gradient descent)",
                           steps=np.arange(losses.shape[0]))
    hint = "try a smaller solver.dt" if grid.rule == "flow" else "lower training.learning_rate"
    for name in ("delta", "ntk", "phi", "g"):
        value = out[name]
        bad = ~np.all(np.isfinite(value.reshape(value.shape[0], -1)), axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            t = k * grid.dt
            raise SolveError(f"DMFT diverged: non-finite {name} at t = {t:g} (step {k}); " + hint,
                             time=t, step=k)


def _residual(new, old) -> float:
    """Max-abs change of every frozen quantity (kernel and response rows, Δ)."""
    leaves = zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(old))
    return float(max(np.max(np.abs(a - b)) for a, b in leaves))


@partial(jax.jit, static_argnums=0)
def _march(config: _Config, inputs: _Inputs, draws):
    return _run(config, inputs, draws, frozen=None)


@partial(jax.jit, static_argnums=0)
def _march_independent(config: _Config, inputs: _Inputs, draws):
    """One march per batch of draws (leading axis), each its own fixed point."""
    return jax.vmap(lambda d: _run(config, inputs, d, frozen=None))(draws)


def _combine_independent(out):
    """Batch-leading outputs of `_march_independent` → means plus the per-batch layout."""
    mean = {key: value.mean(axis=0) for key, value in out.items()
            if key in ("delta", "f", "ntk", "phi", "g")}
    mean["rank"] = out["rank"].min(axis=0) if out["rank"].size else out["rank"][0]
    mean["phi_batches"] = np.moveaxis(out["phi"], 0, 2)  # (Tg, L, B, Q, Q)
    mean["g_batches"] = np.moveaxis(out["g"], 0, 2)
    mean["ntk_batches"] = np.moveaxis(out["ntk"], 0, 1)  # (Tg, B, Q, Q)
    mean["f_batches"] = np.moveaxis(out["f"], 0, 1)
    return mean


@partial(jax.jit, static_argnums=0)
def _sweep(config: _Config, inputs: _Inputs, draws, frozen):
    return _run(config, inputs, draws, frozen=frozen)


def _run(config: _Config, inputs: _Inputs, draws, frozen):
    """One causal pass over the grid. With `frozen` (a previous pass's rows) it is a Jacobi
    (Picard) sweep that uses those rows instead of the ones it computes; otherwise the
    Gauss–Seidel march, whose result is the fixed point.

    Phases: steps k < T_1 only touch the first T_1 grid points of every history, so they run on
    arrays of that width (causality makes the rest zero); widths grow phase by phase."""
    carry, outs_all, start = None, [], 0
    for end in config.phase_ends:
        carry = _phase_carry(config, carry, end, inputs.kx.dtype)
        step = _make_step(config, end, inputs, draws, frozen)
        carry, outs = jax.lax.scan(step, carry, jnp.arange(start, end))
        outs["rows"] = {key: _pad_to(x, config.num_grid * _row_width(config, key), (2,))
                        for key, x in outs["rows"].items()}
        outs_all.append(outs)
        start = end
    outs = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x, axis=0), *outs_all)
    rows = outs.pop("rows")
    if config.keep_rows:  # what a check sweep freezes: kernel and response rows, and Δ
        outs["frozen"] = {"rows": rows, "delta": outs["delta"], "ntk_raw": outs["ntk_raw"]}
        if config.loss.name != "mse":  # the flow predictor of a non-linear loss needs f too
            outs["frozen"]["f"] = outs["f"]
    return outs


class _Carry(NamedTuple):
    """What one step hands the next: per-sample histories φ(h^ℓ), g^ℓ (S, T·Q), the inverse
    Cholesky factors of the dynamic sources u^ℓ (ℓ >= 2), r^ℓ (ℓ <= L−1) (T·Q, T·Q), Δ on the grid,
    the last sampled NTK, the last read-out control-variate shift and its integral F, and the last
    train read-out f. The backward histories, Δ, f and the NTK run over the (point, output)
    pairs (Q·C; C = 1: Q)."""

    phi_h: tuple
    g_h: tuple
    linv_u: tuple
    linv_r: tuple
    delta_h: Any
    ntk_prev: Any
    shift_prev: Any
    corr_prev: Any
    f_prev: Any


def _pad_to(x, width, axes):
    pads = [(0, width - x.shape[a]) if a in axes else (0, 0) for a in range(x.ndim)]
    return jnp.pad(x, pads)


def _phase_carry(config: _Config, carry: _Carry | None, end: int, dtype) -> _Carry:
    """The carry of a phase whose histories span `end` grid points: zeros for the first phase,
    else the last phase's carry zero-padded."""
    L, S, mesh = config.num_layers, config.num_samples, config.mesh
    P, Q = config.num_train * config.num_outputs, config.num_pairs  # (point, output) pairs
    width, width_r = end * config.num_points, end * Q  # forward and backward histories

    def zeros(shape):
        return jnp.zeros(shape, dtype)

    if carry is None:
        phi_h = tuple(constrain_samples(zeros((S, width)), mesh) for _ in range(L))
        g_h = tuple(constrain_samples(zeros((S, width_r)), mesh) for _ in range(L))
        linv_u = tuple(zeros((width, width)) for _ in range(L - 1))
        linv_r = tuple(zeros((width_r, width_r)) for _ in range(L - 1))
        return _Carry(phi_h, g_h, linv_u, linv_r, zeros((config.num_grid, P)), zeros((Q, Q)),
                      zeros((Q, Q)), zeros((Q,)), zeros((P,)))
    return carry._replace(
        phi_h=tuple(constrain_samples(_pad_to(x, width, (1,)), mesh) for x in carry.phi_h),
        g_h=tuple(constrain_samples(_pad_to(x, width_r, (1,)), mesh) for x in carry.g_h),
        linv_u=tuple(_pad_to(x, width, (0, 1)) for x in carry.linv_u),
        linv_r=tuple(_pad_to(x, width_r, (0, 1)) for x in carry.linv_r))


class _Phase(NamedTuple):
    """Per-phase constants: T grid points of history, the draws truncated to them."""

    T: int
    time_index: Any
    u1: Any
    r_last: Any
    eps_u: tuple
    eps_r: tuple


class _Weights(NamedTuple):
    """Memory weights (γ0/P)·w_s·Δ_α(s): trapezoid on s < k (`dw`, (T, Q)), the endpoint s = k
    (`dend`, (Q,)), and both together for the z-integral (`dw_z`)."""

    dw: Any
    dend: Any
    dw_z: Any


@dataclasses.dataclass
class _StepState:
    """The fields of one step t_k, filled layer by layer; layer-keyed dicts (keys 1..L), with the
    boundary values Φ^0 (``phi_cv[0]``) and G^{L+1} = 1 (``g_cv[L+1]``) in place."""

    phi_h: list
    g_h: list
    linv_u: list
    linv_r: list
    rank: list = dataclasses.field(default_factory=list)
    u: dict = dataclasses.field(default_factory=dict)
    h: dict = dataclasses.field(default_factory=dict)
    act: dict = dataclasses.field(default_factory=dict)  # φ(h^ℓ)
    grad: dict = dataclasses.field(default_factory=dict)  # g^ℓ
    h_lazy: dict = dataclasses.field(default_factory=dict)  # lazy values of h^ℓ (u^ℓ; residual:
    # u^1 + β Σ_{m<=ℓ} u^m)
    phi_u: dict = dataclasses.field(default_factory=dict)  # lazy values φ(h_lazy^ℓ)
    g_lazy: dict = dataclasses.field(default_factory=dict)  # lazy values of g^ℓ
    cov_lazy: dict = dataclasses.field(default_factory=dict)  # covariance of h_lazy^ℓ
    cov_lazy_b: dict = dataclasses.field(default_factory=dict)
    g_exact: dict = dataclasses.field(default_factory=dict)  # E[g_lazy g_lazyᵀ]
    g_exact_b: dict = dataclasses.field(default_factory=dict)
    phi_raw: dict = dataclasses.field(default_factory=dict)
    phi_raw_b: dict = dataclasses.field(default_factory=dict)
    phi_cv: dict = dataclasses.field(default_factory=dict)
    phi_cv_b: dict = dataclasses.field(default_factory=dict)
    g_raw: dict = dataclasses.field(default_factory=dict)
    g_raw_b: dict = dataclasses.field(default_factory=dict)
    g_cv: dict = dataclasses.field(default_factory=dict)
    g_cv_b: dict = dataclasses.field(default_factory=dict)
    phi_rows: dict = dataclasses.field(default_factory=dict)  # Φ^ℓ(t_k, ·), sources of layer ℓ+1
    g_rows: dict = dataclasses.field(default_factory=dict)  # G^ℓ(t_k, ·), sources of layer ℓ−1
    rows_out: dict = dataclasses.field(default_factory=dict)
    r_top: Any = None  # r^L, and the memory part z^L − r^L, for the read-out
    z_memory: Any = None


def _make_step(config: _Config, T: int, inputs: _Inputs, draws, frozen):
    """The step of a phase whose histories span the first T grid points: the memory weights,
    the forward pass ℓ = 1..L, the backward pass ℓ = L..1, then the read-out."""
    TQ, TQC = T * config.num_points, T * config.num_pairs
    phase = _Phase(T, jnp.arange(T), draws["u1"], draws["r_last"],
                   tuple(e[:, :TQ] for e in draws["eps_u"]),
                   tuple(e[:, :TQC] for e in draws["eps_r"]))
    L, kx = config.num_layers, inputs.kx
    g_top = _top_gradient_kernel(config.num_points, config.num_outputs)

    def step(carry: _Carry, k):
        fz = None if frozen is None else {
            key: x[k][:, :T * _row_width(config, key)] for key, x in frozen["rows"].items()}
        st = _StepState(list(carry.phi_h), list(carry.g_h), list(carry.linv_u),
                        list(carry.linv_r))
        st.phi_cv[0], st.phi_cv_b[0] = kx, kx[None]  # Φ^0, exact and the same in every batch
        st.g_cv[L + 1], st.g_cv_b[L + 1] = g_top, g_top  # G^{L+1} = 1 (δ_cd for C outputs)
        weights = _memory_weights(config, phase, carry, frozen, k, inputs)
        for layer in range(1, L + 1):
            _forward_layer(config, phase, st, weights, fz, layer, k, kx)
        for layer in range(L, 0, -1):
            _backward_layer(config, phase, st, weights, fz, layer, k)
        return _read_out(config, st, carry, k, inputs)

    return step


def _row_width(config: _Config, key: str) -> int:
    """Columns per grid point of a frozen row: Q for Φ^ℓ and ℬ^ℓ rows (sources u), Q·C for G^ℓ
    and 𝒜^ℓ rows (sources r, over the (point, output) pairs)."""
    return config.num_pairs if key[0] in "gA" else config.num_points


def _memory_weights(config: _Config, phase: _Phase, carry: _Carry, frozen, k, inputs: _Inputs):
    """(γ0/P)·w_s·Δ_{αc}(s) over the (point, output) pairs. Gradient descent (eq:gd_process):
    w_s = η0 on the past steps s < k and the step's batch weights, Δ_s → ω_s⊙Δ_s; no endpoint.
    Flow: trapezoid on s < k, the endpoint s = k separately, with Δ(t_k) predicted by the
    trapezoid step of the sampled NTK of t_{k-1} (eq:mc_predictor), f_k = f_{k−1} +
    (dt/2P)K_{k−1}(Δ_{k−1} + Δ_k), Δ_k = err(f_k) (eq:mo_predictor): this keeps the lazy part
    of the march A-stable."""
    P, Q, T = config.num_train * config.num_outputs, config.num_pairs, phase.T  # pairs
    dt, dtype = inputs.dt, carry.delta_h.dtype
    scale = inputs.gamma0 / config.num_train
    delta_src = carry.delta_h if frozen is None else frozen["delta"]
    pad = jnp.zeros((T, Q - P), dtype)
    if config.rule == "gd":
        w = jnp.where(phase.time_index < k, dt, 0.0)
        signal = delta_src[:T] * inputs.omega[:T]
        dw = scale * w[:, None] * jnp.concatenate([signal, pad], axis=1)  # (T, Q)
        return _Weights(dw, jnp.zeros((Q,), dtype), dw)
    w = jnp.where(phase.time_index < k, dt, 0.0).at[0].multiply(0.5)
    d1 = delta_src[jnp.maximum(k - 1, 0)]
    k_pred = carry.ntk_prev if frozen is None else frozen["ntk_raw"][jnp.maximum(k - 1, 0)]
    c = dt / (2 * config.num_train)
    if config.loss.name == "mse":  # Δ linear in f: the step acts on Δ alone
        delta_end = _trapezoid_step(k_pred[:P, :P], d1, c)
    else:
        f1 = carry.f_prev if frozen is None else frozen["f"][jnp.maximum(k - 1, 0), :P]
        delta_end = _implicit_error(config.loss, f1 + c * k_pred[:P, :P] @ d1,
                                    c * k_pred[:P, :P], inputs.y, config.num_outputs)
    w_end = jnp.where(k >= 1, 0.5 * dt, 0.0)
    dw = scale * w[:, None] * jnp.concatenate([delta_src[:T], pad], axis=1)  # (T, Q)
    dend = jnp.concatenate([delta_end, jnp.zeros(Q - P, dtype)]) * (scale * w_end)  # (Q,)
    return _Weights(dw, dend, dw.at[k].set(dend))


def _mean_outer(a, b):
    """⟨a bᵀ⟩ over the samples (leading axis)."""
    return a.T @ b / a.shape[0]


def _batch_means(x, num_batches):
    """⟨x xᵀ⟩ per batch of samples, (B, Q, Q)."""
    S, Q = x.shape
    xb = x.reshape(num_batches, S // num_batches, Q)
    return jnp.einsum("bsi,bsj->bij", xb, xb) / (S // num_batches)


def _conditional_source(config: _Config, st: _StepState, linv_list: list, index: int, eps,
                        row, k, width: int):
    """A dynamic source at t_k conditioned on its past, L_{k,<k} ε_{<k} + L_kk ε_k, from its
    covariance row `row` (the layer's Φ or G row, `width` columns per grid point: Q or Q·C);
    extends the inverse Cholesky factor."""
    Q = width
    linv, l_row, l_kk, kept = _cholesky_row(linv_list[index], row, k, Q, config.rcond)
    linv_list[index] = linv
    st.rank.append(kept)
    return eps @ l_row.T + _block(eps, k, Q) @ l_kk.T


def _stein_response(config: _Config, value, lazy, eps, linv):
    """⟨∂F/∂source⟩ = ⟨(F − b) εᵀ⟩ 𝐋⁻¹ (Stein), with the lazy control variate b when enabled;
    a (Q, T·Q) response row."""
    resid = value - lazy if config.control_variates else value
    return _mean_outer(resid, eps) @ linv


def _kernel_estimates(config: _Config, x, lazy, exact, exact_b):
    """Raw Gram averages of x (all samples, per batch) and their control-variate estimates
    ⟨xxᵀ⟩ − ⟨bbᵀ⟩ + E[bbᵀ] with b the lazy values and E[bbᵀ] = `exact()` / `exact_b()`."""
    raw, raw_b = _mean_outer(x, x), _batch_means(x, config.num_batches)
    if not config.kernel_control_variates:
        return raw, raw_b, raw, raw_b
    return (raw, raw_b, raw - _mean_outer(lazy, lazy) + exact(),
            raw_b - _batch_means(lazy, config.num_batches) + exact_b())


def _forward_coefficients(config: _Config, phase: _Phase, st: _StepState, weights: _Weights,
                          fz, l, k, kx):
    """The source u^ℓ(t_k) and the memory coefficients of layer ℓ's (branch) field: returns
    (u, coef (Q, T, Q·C) or None for ℓ = 1, Φ^{ℓ-1}(t_k, t_k) for the flow endpoint). coef holds
    𝒜^{ℓ-1}_{μ,αc}(t_k, s) + (γ0/P) w_s Δ_{αc}(s) Φ^{ℓ-1}_{μα}(t_k, s) (eq:mo_process), the
    second term × β in a residual block; it multiplies g^ℓ_{αc}(s)."""
    Q, QC, T = config.num_points, config.num_pairs, phase.T
    if l == 1:  # u^1 ~ N(0, Φ^0) is static and there is no r^0: no response
        return phase.u1, None, kx
    src_row = st.phi_rows[l - 1] if fz is None else fz[f"phi{l - 1}"]
    u = _conditional_source(config, st, st.linv_u, l - 2, phase.eps_u[l - 2], src_row, k, Q)
    coef = (_expand(src_row.reshape(Q, T, Q), config.num_outputs, 2)
            * (_branch(config) * weights.dw)[None])
    # 𝒜^{l-1}(t_k, s<k): response of φ(h^{l-1}(t_k)) to r^{l-1}, by Stein
    a_row = _stein_response(config, st.act[l - 1], st.phi_u[l - 1], phase.eps_r[l - 2],
                            st.linv_r[l - 2]).reshape(Q, T, QC)
    st.rows_out[f"A{l - 1}"] = a_row.reshape(Q, T * QC)
    if fz is not None:
        a_row = fz[f"A{l - 1}"].reshape(Q, T, QC)
    return u, coef + a_row, _block(src_row, k, Q)


def _branch(config: _Config) -> float:
    """The factor β of a residual branch's weight updates in its memory terms (1 without
    residual blocks); callers apply it to the branch weights W^1..W^{L−1} only."""
    return 1.0 if config.branch is None else config.branch


def _forward_layer(config: _Config, phase: _Phase, st: _StepState, weights: _Weights, fz, l, k,
                   kx):
    """h^ℓ(t_k) = u^ℓ + [𝒜^{ℓ-1} g^ℓ] + (γ0/P) Σ_s w_s Σ_α Φ^{ℓ-1}_{μα}(t_k, s) Σ_c Δ_{αc}
    g^ℓ_{αc}(s) (eq:mo_process), or for a residual block (ℓ >= 2) h^ℓ = h^{ℓ-1} + β·(the same
    with (γ0β/P)) (eq:res_process); then φ(h^ℓ), its history and the Φ^ℓ estimates."""
    Q, QC, T, L, mesh = (config.num_points, config.num_pairs, phase.T, config.num_layers,
                         config.mesh)
    C, act = config.num_outputs, config.activation
    u, coef, prev_kk = _forward_coefficients(config, phase, st, weights, fz, l, k, kx)
    u = constrain_samples(u, mesh)
    g_h = st.g_h[l - 1]
    if coef is None:  # Σ_{s,α,c} Φ^0_{μα} w_s Δ_αc(s) g_αc(s) = [Φ^0 (Σ_{s,c} w_s Δ_c g_c)]_μ
        weighted = jnp.sum(g_h.reshape(g_h.shape[0], T, QC) * weights.dw[None], axis=1)
        if C > 1:
            weighted = weighted.reshape(-1, Q, C).sum(axis=-1)
        memory = weighted @ kx.T
    else:
        memory = g_h @ coef.reshape(Q, T * QC).T
    if config.rule == "flow":  # the endpoint s = k, with g^ℓ(t_k) extrapolated
        g_prev1 = _block(g_h, jnp.maximum(k - 1, 0), QC)
        g_prev2 = _block(g_h, jnp.maximum(k - 2, 0), QC)
        g_end = jnp.where(k >= 2, 2 * g_prev1 - g_prev2, g_prev1)
        scale = _branch(config) if l > 1 else 1.0
        memory = memory + g_end @ (_expand(prev_kk, C, 1) * (scale * weights.dend)[None, :]).T
    residual = config.branch is not None and l > 1
    if residual:
        h = st.h[l - 1] + config.branch * (u + memory)
        st.h_lazy[l] = st.h_lazy[l - 1] + config.branch * u
        st.cov_lazy[l] = st.cov_lazy[l - 1] + config.branch**2 * st.phi_cv[l - 1]
        st.cov_lazy_b[l] = st.cov_lazy_b[l - 1] + config.branch**2 * st.phi_cv_b[l - 1]
    else:
        h = u + memory
        st.h_lazy[l], st.cov_lazy[l], st.cov_lazy_b[l] = u, st.phi_cv[l - 1], st.phi_cv_b[l - 1]
    h = constrain_samples(h, mesh)
    act_h = act.phi(h)
    st.phi_h[l - 1] = _set_block(st.phi_h[l - 1], act_h, k, Q)
    if l < L:  # the row of Φ^ℓ: covariance of the source u^{ℓ+1}
        st.phi_rows[l] = st.rows_out[f"phi{l}"] = _mean_outer(act_h, st.phi_h[l - 1])
    st.u[l], st.h[l], st.act[l] = u, h, act_h
    # Reported Φ^ℓ(t_k,t_k): Gram average with the lazy control variate φ(h_lazy^ℓ), whose exact
    # mean is the dual kernel of its covariance (eq:mc_kernel_cv, eq:res_kernel_cv): exact at t = 0.
    lazy = st.phi_u[l] = act.phi(st.h_lazy[l])
    st.phi_raw[l], st.phi_raw_b[l], st.phi_cv[l], st.phi_cv_b[l] = _kernel_estimates(
        config, act_h, lazy, lambda: _dual(act, st.cov_lazy[l]),
        lambda: _dual(act, st.cov_lazy_b[l]))


def _backward_layer(config: _Config, phase: _Phase, st: _StepState, weights: _Weights, fz, l, k):
    """z^ℓ_c(t_k) = r^ℓ_c + [ℬ^ℓ φ^ℓ]_c + (γ0/P) Σ_s w_s Σ_{α,d} Δ_{αd} G^{ℓ+1}_{μc,αd}(t_k, s)
    φ^ℓ_α(s) (eq:mo_process; the endpoint s = k included for flow), then g^ℓ_c = φ'(h^ℓ) z^ℓ_c,
    or for a residual block (ℓ < L) g^ℓ_c = g^{ℓ+1}_c + β φ'(h^ℓ) z^ℓ_c with (γ0β/P) in the
    memory; its history and the G^ℓ estimates. Fields run over the (point, output) pairs."""
    Q, QC, T, L, S, mesh = (config.num_points, config.num_pairs, phase.T, config.num_layers,
                            config.num_samples, config.mesh)
    C, act = config.num_outputs, config.activation
    residual = config.branch is not None and l < L
    if l == L:  # G^{L+1} = δ_cd: one r^L ∈ R^C per sample and the same memory sum for every μ
        if C == 1:
            r = jnp.broadcast_to(phase.r_last[:, None], (S, Q))
            z_memory = (st.phi_h[l - 1] @ weights.dw_z.reshape(T * Q))[:, None]
        else:  # z^L_c − r_c = Σ_{s,α} w_s Δ_αc(s) φ(h^L_α(s)), (S, C), the same for every μ
            r = jnp.broadcast_to(phase.r_last[:, None, :], (S, Q, C)).reshape(S, QC)
            z_out = st.phi_h[l - 1] @ weights.dw_z.reshape(T * Q, C)
            z_memory = jnp.broadcast_to(z_out[:, None, :], (S, Q, C)).reshape(S, QC)
        r = constrain_samples(r, mesh)
        z = r + z_memory
        st.r_top, st.z_memory = r, z_memory
    else:
        src_row = st.g_rows[l + 1] if fz is None else fz[f"g{l + 1}"]
        r = _conditional_source(config, st, st.linv_r, l - 1, phase.eps_r[l - 1], src_row, k,
                                QC)
        dw_z = _branch(config) * weights.dw_z
        if C == 1:
            coef = src_row.reshape(Q, T, Q) * dw_z[None]
        else:  # Σ_d G^{ℓ+1}_{μc,αd} w_s Δ_αd, (Q·C, T, Q)
            coef = jnp.sum(src_row.reshape(QC, T, Q, C) * dw_z.reshape(T, Q, C)[None], axis=-1)
        # ℬ^l(t_k, s<=k): response of g^{l+1}(t_k) to u^{l+1}, by Stein
        b_row = _stein_response(config, st.grad[l + 1], st.g_lazy[l + 1], phase.eps_u[l - 1],
                                st.linv_u[l - 1]).reshape(QC, T, Q)
        st.rows_out[f"B{l}"] = b_row.reshape(QC, T * Q)
        if fz is not None:
            b_row = fz[f"B{l}"].reshape(QC, T, Q)
        r = constrain_samples(r, mesh)
        z = r + st.phi_h[l - 1] @ (coef + b_row).reshape(QC, T * Q).T
    dphi, dphi_lazy = _expand(act.dphi(st.h[l]), C, 1), _expand(act.dphi(st.h_lazy[l]), C, 1)
    kdot, kdot_b = (lambda: _expand_kernel(_dual_derivative(act, st.cov_lazy[l]), C),
                    lambda: _expand_kernel(_dual_derivative(act, st.cov_lazy_b[l]), C))
    if residual:
        beta = config.branch
        grad = st.grad[l + 1] + beta * dphi * z
        lazy = st.g_lazy[l + 1] + beta * dphi_lazy * r
        # E[g_lazy g_lazyᵀ]: the layer above's plus β² G^{ℓ+1} ⊙ K̇ (r^ℓ ⟂ the rest, zero mean)
        exact = lambda: st.g_exact[l + 1] + beta**2 * st.g_cv[l + 1] * kdot()
        exact_b = lambda: st.g_exact_b[l + 1] + beta**2 * st.g_cv_b[l + 1] * kdot_b()
    else:
        grad, lazy = dphi * z, dphi_lazy * r
        exact = lambda: st.g_cv[l + 1] * kdot()  # mean G^{ℓ+1} ⊙ K̇(Φ^{ℓ-1})
        exact_b = lambda: st.g_cv_b[l + 1] * kdot_b()
    grad = constrain_samples(grad, mesh)
    st.g_h[l - 1] = _set_block(st.g_h[l - 1], grad, k, QC)
    if l > 1:  # the row of G^ℓ: covariance of the source r^{ℓ-1}
        st.g_rows[l] = st.rows_out[f"g{l}"] = _mean_outer(grad, st.g_h[l - 1])
    st.grad[l], st.g_lazy[l] = grad, lazy
    if config.kernel_control_variates:
        st.g_exact[l], st.g_exact_b[l] = exact(), exact_b()
    # Reported G^ℓ(t_k,t_k) with the control variate g_lazy^ℓ (eq:mc_kernel_cv, eq:res_kernel_cv)
    st.g_raw[l], st.g_raw_b[l], st.g_cv[l], st.g_cv_b[l] = _kernel_estimates(
        config, grad, lazy, lambda: st.g_exact[l], lambda: st.g_exact_b[l])


def _read_out(config: _Config, st: _StepState, carry: _Carry, k, inputs: _Inputs):
    """The NTK of t_k (raw and control-variate, over the (point, output) pairs) and the error
    signal Δ(t_k) of the loss from the read-out f_c = γ0⁻¹⟨z^L_c φ(h^L)⟩ + F (eq:mc_readout;
    eq:gd_readout for GD); the step's outputs and the next carry."""
    L, P, B, C = config.num_layers, config.num_train, config.num_batches, config.num_outputs
    kx, y, dt = inputs.kx, inputs.y, inputs.dt
    layers = range(1, L + 1)
    readout = readout_terms(st.r_top, st.z_memory, _expand(st.phi_u[L], C, 1),
                            _expand(st.act[L], C, 1), inputs.gamma0)  # (S, Q·C)
    f_identity = jnp.mean(readout, axis=0)
    f_identity_b = jnp.mean(readout.reshape(B, readout.shape[0] // B, -1), axis=1)
    ntk_raw = _pair_ntk(config.network, kx, [st.phi_raw[l] for l in layers],
                        [st.g_raw[l] for l in layers], C)
    ntk = _pair_ntk(config.network, kx, [st.phi_cv[l] for l in layers],
                    [st.g_cv[l] for l in layers], C)
    # the lazy control variate of the read-out (0 without it)
    shift = ntk - ntk_raw if config.readout_control_variate else jnp.zeros_like(ntk)
    d_prev = carry.delta_h[jnp.maximum(k - 1, 0)]
    if config.rule == "gd":
        signal = inputs.omega[jnp.maximum(k - 1, 0)] * d_prev
        d_new, corr = _readout_step_gd(f_identity, carry.shift_prev, signal, carry.corr_prev, y,
                                       dt / P, config.loss, C)
    else:
        d_new, corr = _readout_step(f_identity, carry.shift_prev, shift, d_prev, carry.corr_prev,
                                    y, dt / (2 * P), config.loss, C)
    d_new = jnp.where(k == 0, _error(config.loss, jnp.zeros_like(y), y, C), d_new)  # f(0) = 0
    corr = jnp.where(k == 0, jnp.zeros_like(corr), corr)
    f = jnp.where(k == 0, jnp.zeros_like(f_identity), f_identity + corr)  # (Q·C,)
    out = {
        "delta": d_new,
        "f": f,
        "ntk": ntk,
        "ntk_raw": ntk_raw,
        "phi": jnp.stack([st.phi_cv[l] for l in layers]),
        "g": jnp.stack([st.g_cv[l] for l in layers]),
        "phi_batches": jnp.stack([st.phi_cv_b[l] for l in layers]),
        "g_batches": jnp.stack([st.g_cv_b[l] for l in layers]),
        "phi_raw_batches": jnp.stack([st.phi_raw_b[l] for l in layers]),
        "g_raw_batches": jnp.stack([st.g_raw_b[l] for l in layers]),
        "f_identity_batches": f_identity_b,
        "rank": jnp.stack(st.rank) if st.rank else jnp.zeros((0,), jnp.int32),
        "rows": st.rows_out if config.keep_rows else {},
    }
    if config.ticker is not None:
        config.ticker.tick(k)
    new_carry = _Carry(tuple(st.phi_h), tuple(st.g_h), tuple(st.linv_u), tuple(st.linv_r),
                       carry.delta_h.at[k].set(d_new), ntk_raw, shift, corr, f[:P * C])
    return new_carry, out
