"""Training finite-width ensembles: gradient flow (Diffrax) or discrete gradient descent.

One member is θ(0) ~ N(0, 1) drawn from ``fold_in(key(seed), N)``, trained by dθ/dt = −η ∇_θ 𝓛
(docs/conventions.md §2). At each saved time the member records its observables (`FiniteNetwork.kernels` on
train ∪ test inputs), never its parameters, so the memory per member is O(#params) however many
times are saved. Members are vmapped; the seed axis is sharded over all devices.
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

from .._errors import InputError, SolveError
from .._ode import integrate_flow
from .._options import check_ode_options, options_from_table
from ._network import FiniteNetwork


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


Method = AdaptiveSteps | FixedSteps


def member_key(seed: int, width: int) -> jax.Array:
    """The PRNG key of ensemble member `seed` at width `width` (independent across widths)."""
    return jax.random.fold_in(jax.random.key(seed), width)


def _observe(net: FiniteNetwork, params, x_all, num_train: int, offset=0.0):
    out = net.kernels(params, x_all)
    P = num_train
    return {
        "f": out["f"] - offset,
        "ntk": out["ntk"][:, :P],  # (P_all, P): train rows then test rows
        "phi": out["phi"][:, :P, :P],
        "g": out["g"][:, :P, :P],
    }


def _start(net: FiniteNetwork, centered: bool, x_train, y_train, x_all, key):
    """θ(0), the offset subtracted from f and the effective targets.

    Centred training uses f(θ) − f(θ0) (a frozen copy of the initial network): its loss
    (1/2P)|f − f0 − y|² is the plain loss with targets y + f0 on the training inputs.
    """
    params = net.init(key)
    if not centered:
        return params, 0.0, y_train
    offset = net.predict(params, x_all)
    return params, offset, y_train + offset[: x_train.shape[0]]


def _train_member_flow(net: FiniteNetwork, method: AdaptiveSteps, centered: bool, times, x_train, y_train,
                       x_all, key):
    params, offset, y_train = _start(net, centered, x_train, y_train, x_all, key)
    P = x_train.shape[0]
    observe = lambda t, state, args: _observe(net, state, x_all, P, offset)  # noqa: E731
    solution = integrate_flow(
        lambda t, state, args: net.flow(state, x_train, y_train), params, times,
        method.rtol, method.atol, method.max_steps, save=observe,
        # no reverse-mode through training: skip the checkpoint buffers (parameter-sized copies)
        adjoint=diffrax.ForwardMode(),
    )
    ok = solution.result == diffrax.RESULTS.successful
    return solution.ys, solution.stats["num_steps"], ok


def _train_member_gd(net: FiniteNetwork, centered: bool, schedule, x_train, y_train, x_all, key):
    steps, step_size = schedule
    params, offset, y_train = _start(net, centered, x_train, y_train, x_all, key)
    P = x_train.shape[0]

    def gd_step(_, state):
        return jax.tree.map(lambda p, v: p + step_size * v, state, net.flow(state, x_train, y_train))

    def advance(carry, target):
        state, done = carry
        state = jax.lax.fori_loop(done, target, gd_step, state)
        return (state, target), _observe(net, state, x_all, P, offset)

    (_, total), ys = jax.lax.scan(advance, (params, jnp.asarray(0, steps.dtype)), steps)
    return ys, total, jnp.asarray(True)


def _init_member(net: FiniteNetwork, centered: bool, x_train, y_train, x_all, key):
    params, offset, _ = _start(net, centered, x_train, y_train, x_all, key)
    obs = _observe(net, params, x_all, x_train.shape[0], offset)
    return jax.tree.map(lambda a: a[None], obs), jnp.asarray(0), jnp.asarray(True)


@functools.partial(jax.jit, static_argnames=("net", "method", "centered"))
def _train_batch(net: FiniteNetwork, method: Method | None, centered: bool, schedule, x_train, y_train,
                 x_all, keys):
    if method is None:  # only t = 0 is saved: no training at all
        member = functools.partial(_init_member, net, centered)
    elif isinstance(method, AdaptiveSteps):
        member = functools.partial(_train_member_flow, net, method, centered, schedule)
    else:  # the step size is traced: one compile serves every dt
        member = functools.partial(_train_member_gd, net, centered, schedule)
    return jax.vmap(member, in_axes=(None, None, None, 0))(x_train, y_train, x_all, keys)


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
) -> dict[str, np.ndarray]:
    """Train one batch of ensemble members (one per seed) and return their observables.

    Returns numpy arrays with a leading (seeds, T) shape: ``f_train`` (P), ``f_test`` (P_test),
    ``ntk`` (P, P), ``ntk_test_train`` (P_test, P), ``phi`` and ``g`` (L, P, P), plus
    ``num_steps`` (seeds,). The seed axis is padded to a multiple of the device count and
    sharded over `mesh` (default: all devices); the padding is dropped again. ``pad_to`` pads
    the batch further (repeating the last seed) so that batches of one ensemble share a compile.
    ``centered=True`` trains and records f(θ) − f(θ0) (so f(0) = 0, as in the limit).
    """
    seeds = [int(s) for s in seeds]
    x_train = jnp.asarray(x_train)
    y_train = jnp.asarray(y_train)
    P = x_train.shape[0]
    if x_test is not None and len(x_test) == 0:
        x_test = None
    x_all = x_train if x_test is None else jnp.concatenate([x_train, jnp.asarray(x_test)], axis=0)
    times = np.asarray(times, dtype=np.float64)
    if isinstance(method, AdaptiveSteps):
        schedule = jnp.asarray(times)
    else:
        schedule = (jnp.asarray(method.steps(times)), jnp.asarray(method.dt, dtype=x_train.dtype))

    mesh = seed_mesh() if mesh is None else mesh
    devices = mesh.devices.size
    size = max(len(seeds), pad_to or 0)
    size += -size % devices
    padded = seeds + [seeds[-1]] * (size - len(seeds))
    keys = jax.vmap(lambda s: member_key(s, net.width))(jnp.asarray(padded, dtype=jnp.uint32))
    keys = jax.device_put(keys, NamedSharding(mesh, PartitionSpec("seeds")))
    at_init_only = times.size == 1 and times[0] == 0.0
    static_method = FixedSteps() if isinstance(method, FixedSteps) else method
    ys, num_steps, ok = _train_batch(net, None if at_init_only else static_method, bool(centered),
                                     schedule, x_train, y_train, x_all, keys)
    ys = jax.tree.map(lambda a: np.asarray(a)[: len(seeds)], ys)
    num_steps = np.asarray(num_steps)[: len(seeds)]
    ok = np.asarray(ok)[: len(seeds)]
    if not ok.all():
        bad = [s for s, good in zip(seeds, ok) if not good]
        raise SolveError(
            f"gradient flow at width {net.width} did not reach t = {times[-1]:g} for seeds {bad} "
            f"within max_steps = {method.max_steps} (raise sampler.max_steps or loosen rtol/atol)"
        )
    out = {
        "f_train": ys["f"][..., :P],
        "ntk": ys["ntk"][..., :P, :],
        "phi": ys["phi"],
        "g": ys["g"],
        "num_steps": num_steps,
    }
    if x_test is not None:
        out["f_test"] = ys["f"][..., P:]
        out["ntk_test_train"] = ys["ntk"][..., P:, :]
    for key, value in out.items():
        if key != "num_steps" and not np.all(np.isfinite(value)):
            raise SolveError(
                f"training at width {net.width} diverged: non-finite {key} "
                f"(max |finite value| {np.nanmax(np.abs(np.where(np.isfinite(value), value, np.nan))):.3g})"
            )
    return out
