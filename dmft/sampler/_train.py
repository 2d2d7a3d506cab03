"""Training finite-width ensembles by the spec's training rule (docs/conventions.md §2, §2a).

One member is θ(0) ~ N(0, 1) drawn from ``fold_in(key(seed), N)``. Two kinds of training:

- **Gradient flow** (``training.optimizer = "flow"``), dθ/dt = −η ∇_θ 𝓛, integrated by a
  *numerical method*: `AdaptiveSteps` (Diffrax) or `FixedSteps(dt)` (Euler steps of the flow, dt a
  discretisation parameter that should not matter).
- **The discrete rules themselves** (``"gd"`` / ``"sgd"``), θ_{k+1} = θ_k − η0 η ∇𝓛_k with
  η0 = ``training.learning_rate`` (a physical parameter: step k *is* t = k·η0) and 𝓛_k the
  full-batch loss (GD) or the loss of step k's minibatch (SGD, batches from
  ``spec.training.dynamics.batches``, the same as in the limit). `RuleSteps` wraps the rule; it
  has no numerical option, and `sample` builds it from the spec.

At each saved time the member records its observables (`FiniteNetwork.kernels` on train ∪ test
inputs, the Gauss–Newton sharpness λ_max(K)/P and, by Lanczos, λ_max(η∇²𝓛); `dmft.sampler._sharpness`),
never its parameters, so the memory per member is O(#params) however many times are saved. Members
are vmapped; the seed axis is sharded over all devices. A member trained by a discrete rule that
diverges is not an error: its observables are recorded as they come (inf / NaN included) and
``diverged_step`` names the first step whose step loss is non-finite or passes the threshold of
`dmft._divergence` (−1 when none does).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .._divergence import DIVERGENCE_FACTOR
from .._errors import InputError, SolveError
from .._ode import integrate_flow
from .._options import check_ode_options, options_from_table
from ..network import SGD, GradientDescent
from ._network import FiniteNetwork
from ._sharpness import hessian_sharpness

#: Lanczos steps of the Hessian sharpness per member and saved time (0: not computed)
HESSIAN_STEPS = 40


@dataclasses.dataclass(frozen=True)
class AdaptiveSteps:
    """Integrate the training dynamics (gradient flow dθ/dt = −η ∇_θ 𝓛) with Diffrax: Tsit5
    (order 5) and a PID step-size controller, float64.

    The controller measures the error as the RMS over all parameters (rtol, atol relative to
    weights of order 1). For activations with a kink (relu, abs, ...) the vector field jumps
    whenever a pre-activation crosses the kink, and tight tolerances then cost thousands of
    steps: loosen rtol/atol or use `FixedSteps` there (`sample` warns).
    """

    rtol: float = 1e-8
    atol: float = 1e-8
    max_steps: int = 100_000

    def __post_init__(self):
        check_ode_options(self, "sampler")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> AdaptiveSteps:
        return options_from_table(cls, table, "flow", "sampler")

    losses = ("mse", "cross_entropy")
    multi_output = True

    #: parameter-sized arrays alive during one step (Tsit5: 7 stages, y0, y1, error, gradient work,
    #: XLA temporaries); calibrated on the sampler benchmark
    memory_copies = 18


@dataclasses.dataclass(frozen=True)
class FixedSteps:
    """Explicit Euler steps θ_{k+1} = θ_k + dt·dθ/dt of the gradient flow: a numerical step dt of
    the flow (order 1 in dt), not a learning rate; time stays gradient-flow time (docs/conventions.md §2).

    Every saved time must be a multiple of dt.
    """

    dt: float = 0.01

    def __post_init__(self):
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0):
            raise InputError(f"sampler.dt (--dt) must be a number > 0, got {self.dt!r}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> FixedSteps:
        return options_from_table(cls, table, "gd", "sampler")

    losses = ("mse", "cross_entropy")
    multi_output = True

    memory_copies = 5

    def steps(self, times: np.ndarray) -> np.ndarray:
        steps = np.rint(times / self.dt)
        off = np.abs(steps * self.dt - times)
        if np.any(off > 1e-9 * np.maximum(1.0, times)):
            bad = float(times[int(np.argmax(off))])
            raise InputError(
                f"training.times must be multiples of the sampler step dt = {self.dt:g}; "
                f"t = {bad:g} is not"
            )
        return steps.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class RuleSteps:
    """Train by the discrete rule itself: θ_{k+1} = θ_k − η0 η ∇𝓛_k (``training.optimizer`` "gd"
    or "sgd", docs/conventions.md §2a), with η0 = ``rule.learning_rate``, η the
    parameterization's learning rate (1 for NTK, γ0² N for μP) and 𝓛_k the full-batch loss (GD) or
    the loss of step k's batch (SGD, `rule.batches`; for the MSE (1/2B) Σ_{μ∈batch k} ‖f_μ − y_μ‖²). Step k is
    saved at t = k·η0, so the save times must be multiples of η0. No numerical option: nothing
    here discretises anything, and the flow-only options (dt, rtol, atol, max_steps) do not apply.
    """

    rule: GradientDescent | SGD

    optimizers = ("gd", "sgd")
    losses = ("mse", "cross_entropy")
    multi_output = True
    #: θ, ∇𝓛 and its temporaries, and the three Lanczos vectors with the Hessian–vector product's
    #: forward-over-reverse work
    memory_copies = 9

    def __post_init__(self):
        if not isinstance(self.rule, GradientDescent):
            raise InputError(f"RuleSteps needs a GradientDescent or SGD training rule, got "
                             f"{self.rule!r}")

    def steps(self, times: np.ndarray) -> np.ndarray:
        """The step index k = t/η0 of each save time; InputError when one is not a multiple."""
        eta = self.rule.learning_rate
        steps = np.rint(np.asarray(times, dtype=np.float64) / eta)
        off = np.abs(steps * eta - times)
        if np.any(off > 1e-9 * np.maximum(eta, times)):
            bad = float(times[int(np.argmax(off))])
            raise InputError(f"training.times must be multiples of training.learning_rate = "
                             f"{eta:g}; t = {bad:g} is not")
        return steps.astype(np.int64)

    def batches(self, num_points: int, num_steps: int) -> np.ndarray | None:
        """(K, B) sorted indices of each step's batch (SGD), None for full-batch GD."""
        if not isinstance(self.rule, SGD):
            return None
        return np.asarray(self.rule.batches(num_points, num_steps), dtype=np.int32)


Method = AdaptiveSteps | FixedSteps | RuleSteps


def member_key(seed: int, width: int) -> jax.Array:
    """The PRNG key of ensemble member `seed` at width `width` (independent across widths)."""
    return jax.random.fold_in(jax.random.key(seed), width)


def _sharpness_key(key: jax.Array) -> jax.Array:
    """The member's Lanczos start key (independent of its initialisation key)."""
    return jax.random.fold_in(key, 0x5A4C)


def _observe(net: FiniteNetwork, params, x_all, x_train, y_train, offset, key, hessian_steps: int):
    """The recorded observables at one saved time; `offset` is f(θ0) on all inputs for centred
    training (0 otherwise), and the Hessian sharpness differentiates the full-batch loss of
    f − offset."""
    out = net.kernels(params, x_all)
    P = x_train.shape[0]
    ntk = out["ntk"][:, :P]  # (P_all, P): train rows then test rows
    f = out["f"] - offset
    observed = {
        "f": f,
        "ntk": ntk,
        "phi": out["phi"][:, :P, :P],
        "g": out["g"][:, :P, :P],
        "sharpness": net.loss.sharpness(ntk[:P], f[:P]),
    }
    if hessian_steps:
        observed["hessian_sharpness"] = hessian_sharpness(net, params, x_train, y_train,
                                                          _sharpness_key(key), hessian_steps,
                                                          _rows(offset, slice(0, P)))
    return observed


def _rows(offset, index):
    """The rows `index` (a slice or an index array) of a centring offset; a scalar 0 stays 0."""
    return offset[index] if jnp.ndim(offset) else offset


def _start(net: FiniteNetwork, centered: bool, x_all, key):
    """θ(0) and the offset subtracted from f: f(θ0) on all inputs for centred training (a frozen
    copy of the initial network, so f(0) = 0, as in the limit), else 0."""
    params = net.init(key)
    return params, (net.predict(params, x_all) if centered else 0.0)


def _train_member_flow(net: FiniteNetwork, method: AdaptiveSteps, centered: bool,
                       hessian_steps: int, times, x_train, y_train, x_all, key):
    params, offset = _start(net, centered, x_all, key)
    offset_train = _rows(offset, slice(0, x_train.shape[0]))
    # Diffrax integrates the list of parameter arrays: the empty parameter tuples of activation
    # layers (inside residual branches) are no state, and equinox's buffers refuse them
    leaves, tree = jax.tree.flatten(params)
    unflatten = tree.unflatten

    def observe(t, state, args):
        return _observe(net, unflatten(state), x_all, x_train, y_train, offset, key, hessian_steps)

    def velocity(t, state, args):
        return jax.tree.leaves(net.flow(unflatten(state), x_train, y_train, offset_train))

    solution = integrate_flow(
        velocity, leaves, times,
        method.rtol, method.atol, method.max_steps, save=observe,
        # no reverse-mode through training: skip the checkpoint buffers (parameter-sized copies)
        adjoint=diffrax.ForwardMode(),
    )
    ok = solution.result == diffrax.RESULTS.successful
    return solution.ys, solution.stats["num_steps"], ok, jnp.asarray(-1)


def _train_member_euler(net: FiniteNetwork, centered: bool, hessian_steps: int, schedule, x_train,
                        y_train, x_all, key):
    """Euler steps θ ← θ + dt·dθ/dt of the gradient flow (`FixedSteps`)."""
    steps, step_size = schedule
    params, offset = _start(net, centered, x_all, key)
    offset_train = _rows(offset, slice(0, x_train.shape[0]))

    def euler_step(_, state):
        velocity = net.flow(state, x_train, y_train, offset_train)
        return jax.tree.map(lambda p, v: p + step_size * v, state, velocity)

    def advance(carry, target):
        state, done = carry
        state = jax.lax.fori_loop(done, target, euler_step, state)
        return (state, target), _observe(net, state, x_all, x_train, y_train, offset, key,
                                         hessian_steps)

    (_, total), ys = jax.lax.scan(advance, (params, jnp.asarray(0, steps.dtype)), steps)
    return ys, total, jnp.asarray(True), jnp.asarray(-1)


def _train_member_rule(net: FiniteNetwork, centered: bool, hessian_steps: int, schedule, x_train,
                       y_train, x_all, key):
    """The discrete rule (`RuleSteps`): θ_{k+1} = θ_k − (η0 η) ∇𝓛_k, 𝓛_k on step k's batch
    (all points when ``batches`` is None), observed at the saved steps."""
    steps, step_size, batches = schedule
    params, offset = _start(net, centered, x_all, key)
    offset_train = _rows(offset, slice(0, x_train.shape[0]))
    reference = net.loss_value(params, x_train, y_train, offset_train)
    at_zero = net.loss.value(jnp.zeros_like(y_train), y_train, rows=net.outputs > 1)
    reference = jnp.where(reference > 0, reference, at_zero)
    threshold = DIVERGENCE_FACTOR * jnp.maximum(reference, 1e-300)
    value_and_grad = jax.value_and_grad(net.loss_value)

    def rule_step(k, carry):
        state, first_bad = carry
        if batches is None:
            loss, grads = value_and_grad(state, x_train, y_train, offset_train)
        else:
            batch = batches[k]
            loss, grads = value_and_grad(state, x_train[batch], y_train[batch],
                                         _rows(offset_train, batch))
        bad = ~jnp.isfinite(loss) | (loss > threshold)
        first_bad = jnp.where((first_bad < 0) & bad, k, first_bad)
        # GradientDescent.update with the step η0·η traced (one compile serves every η0)
        state = jax.tree.map(lambda p, g: p - step_size * g, state, grads)
        return state, first_bad

    def advance(carry, target):
        state, first_bad, done = carry
        state, first_bad = jax.lax.fori_loop(done, target, rule_step, (state, first_bad))
        return (state, first_bad, target), _observe(net, state, x_all, x_train, y_train, offset,
                                                    key, hessian_steps)

    start = (params, jnp.asarray(-1, steps.dtype), jnp.asarray(0, steps.dtype))
    (state, first_bad, total), ys = jax.lax.scan(advance, start, steps)
    # the state after the last step: a loss that became non-finite or passed the threshold there
    last = net.loss_value(state, x_train, y_train, offset_train)
    first_bad = jnp.where((first_bad < 0) & (~jnp.isfinite(last) | (last > threshold)), total,
                          first_bad)
    return ys, total, jnp.asarray(True), first_bad


def _init_member(net: FiniteNetwork, centered: bool, hessian_steps: int, schedule, x_train,
                 y_train, x_all, key):
    params, offset = _start(net, centered, x_all, key)
    obs = _observe(net, params, x_all, x_train, y_train, offset, key, hessian_steps)
    return jax.tree.map(lambda a: a[None], obs), jnp.asarray(0), jnp.asarray(True), jnp.asarray(-1)


@functools.partial(jax.jit, static_argnames=("net", "method", "centered", "hessian_steps"))
def _train_batch(net: FiniteNetwork, method, centered: bool, hessian_steps: int, schedule, x_train,
                 y_train, x_all, keys):
    if method is None:  # only t = 0 is saved: no training at all
        member = functools.partial(_init_member, net, centered, hessian_steps)
    elif isinstance(method, AdaptiveSteps):
        member = functools.partial(_train_member_flow, net, method, centered, hessian_steps)
    elif method == "rule":  # η0 and the batches are traced: one compile serves every η0
        member = functools.partial(_train_member_rule, net, centered, hessian_steps)
    else:  # the step size is traced: one compile serves every dt
        member = functools.partial(_train_member_euler, net, centered, hessian_steps)
    batched = jax.vmap(member, in_axes=(None, None, None, None, 0))
    return batched(schedule, x_train, y_train, x_all, keys)


def seed_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over all devices with an Auto axis (vmap + diffrax need Auto, not Explicit)."""
    devices = jax.devices()
    return jax.make_mesh((len(devices),), ("seeds",), axis_types=(jax.sharding.AxisType.Auto,))


def train_ensemble(
    net: FiniteNetwork,
    times,
    x_train,
    y_train,
    x_test=None,
    seeds=(0,),
    method: Method = AdaptiveSteps(),
    mesh: jax.sharding.Mesh | None = None,
    pad_to: int | None = None,
    centered: bool = False,
    hessian_steps: int = HESSIAN_STEPS,
) -> dict[str, np.ndarray]:
    """Train one batch of ensemble members (one per seed) and return their observables.

    Returns numpy arrays with a leading (seeds, T) shape: ``f_train`` (P), ``f_test`` (P_test),
    ``ntk`` (P, P), ``ntk_test_train`` (P_test, P), ``phi`` and ``g`` (L, P, P), ``sharpness``
    (λ_max(K)/P) and, with ``hessian_steps`` > 0 Lanczos steps, ``hessian_sharpness``
    (λ_max(η∇²𝓛)); plus ``num_steps`` and ``diverged_step`` (seeds,): the first step of a
    discrete rule (`RuleSteps`) whose step loss is non-finite or passes the divergence threshold,
    −1 if none (always −1 for gradient flow). A diverging `RuleSteps` member is recorded as it
    is (inf / NaN included); non-finite gradient-flow observables are a SolveError. The seed axis
    is padded to a multiple of the device count and sharded over `mesh` (default: all devices);
    the padding is dropped again. ``pad_to`` pads the batch further (repeating the last seed) so
    that batches of one ensemble share a compile. ``centered=True`` trains and records
    f(θ) − f(θ0) (so f(0) = 0, as in the limit).
    """
    seeds = [int(s) for s in seeds]
    if isinstance(hessian_steps, bool) or not isinstance(hessian_steps, (int, np.integer)) \
            or hessian_steps < 0:
        raise InputError(f"sampler.hessian_steps (--hessian-steps) must be an integer >= 0 "
                         f"(Lanczos steps; 0 skips the Hessian sharpness), got {hessian_steps!r}")
    hessian_steps = int(hessian_steps)
    x_train = jnp.asarray(x_train)
    y_train = jnp.asarray(y_train)
    P = x_train.shape[0]
    if x_test is not None and len(x_test) == 0:
        x_test = None
    x_all = x_train if x_test is None else jnp.concatenate([x_train, jnp.asarray(x_test)], axis=0)
    times = np.asarray(times, dtype=np.float64)
    if isinstance(method, AdaptiveSteps):
        schedule, static_method = jnp.asarray(times), method
    elif isinstance(method, RuleSteps):
        steps = method.steps(times)
        batches = method.batches(P, max(int(steps.max()), 1))
        step_size = jnp.asarray(method.rule.learning_rate * net.learning_rate, dtype=x_train.dtype)
        schedule = (jnp.asarray(steps), step_size, None if batches is None else jnp.asarray(batches))
        static_method = "rule"
    elif isinstance(method, FixedSteps):
        schedule = (jnp.asarray(method.steps(times)), jnp.asarray(method.dt, dtype=x_train.dtype))
        static_method = FixedSteps()
    else:
        raise InputError(f"the sampler method must be AdaptiveSteps, FixedSteps or RuleSteps, got "
                         f"{method!r}")

    mesh = seed_mesh() if mesh is None else mesh
    if hessian_steps and mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu":
        # Several host devices (--xla_force_host_platform_device_count) share one multi-threaded
        # Eigen pool; with two or more members per device the Lanczos loop deadlocks in it (the
        # same run returns with --xla_cpu_multi_thread_eigen=false, and with one member each).
        # Such runs keep their members on one host device: same numbers, no device parallelism.
        mesh = jax.sharding.Mesh(mesh.devices.reshape(-1)[:1], ("seeds",),
                                 axis_types=(jax.sharding.AxisType.Auto,))
    devices = mesh.devices.size
    size = max(len(seeds), pad_to or 0)
    size += -size % devices
    padded = seeds + [seeds[-1]] * (size - len(seeds))
    keys = jax.vmap(lambda s: member_key(s, net.width))(jnp.asarray(padded, dtype=jnp.uint32))
    keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("seeds")))
    at_init_only = times.size == 1 and times[0] == 0.0
    ys, num_steps, ok, diverged = _train_batch(net, None if at_init_only else static_method,
                                               bool(centered), hessian_steps, schedule, x_train,
                                               y_train, x_all, keys)
    ys = jax.tree.map(lambda a: np.asarray(a)[: len(seeds)], ys)
    num_steps = np.asarray(num_steps)[: len(seeds)]
    ok = np.asarray(ok)[: len(seeds)]
    diverged = np.asarray(diverged, dtype=np.int64)[: len(seeds)]
    if not ok.all():
        bad = [s for s, good in zip(seeds, ok) if not good]
        raise SolveError(
            f"gradient flow at width {net.width} did not reach t = {times[-1]:g} for seeds {bad} "
            f"within max_steps = {method.max_steps} (raise sampler.max_steps or loosen rtol/atol)"
        )
    out = {
        "f_train": ys["f"][:, :, :P],
        "ntk": ys["ntk"][..., :P, :],
        "phi": ys["phi"],
        "g": ys["g"],
        "sharpness": ys["sharpness"],
        "num_steps": num_steps,
        "diverged_step": diverged,
    }
    if hessian_steps:
        out["hessian_sharpness"] = ys["hessian_sharpness"]
    if x_test is not None:
        out["f_test"] = ys["f"][:, :, P:]
        out["ntk_test_train"] = ys["ntk"][..., P:, :]
    if not isinstance(method, RuleSteps):
        for key, value in out.items():
            if key not in ("num_steps", "diverged_step") and not np.all(np.isfinite(value)):
                finite = np.where(np.isfinite(value), value, np.nan)
                raise SolveError(
                    f"training at width {net.width} diverged: non-finite {key} "
                    f"(max |finite value| {np.nanmax(np.abs(finite)):.3g})"
                )
    return out
