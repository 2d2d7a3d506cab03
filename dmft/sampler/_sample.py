"""`sample`: ensembles of finite-width networks of a spec, over widths and seeds, memory-bounded."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import Float

from .._errors import InputError
from .._options import check_training_rule
from .._precision import require_float64
from .._progress import progress_bar
from .._resources import available_memory_bytes
from ..network import mlp
from ..spec import Spec
from ._network import FiniteNetwork
from ._train import (
    HESSIAN_STEPS,
    AdaptiveSteps,
    FixedSteps,
    Method,
    RuleSteps,
    seed_mesh,
    train_ensemble,
)

GIB = 2.0**30


@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
    """Observables of trained finite-width ensembles at the saved times.

    ``members[N]`` holds, for width N, arrays with leading axes (seeds, T): ``f_train`` (P) or
    (P, C) for C outputs, ``loss_train``, ``ntk`` (P, P), ``phi`` and ``g`` (L, P, P: Φ^ℓ(t,t),
    G^ℓ(t,t) for ℓ = 1..L; with C outputs G and the NTK are the output averages of their diagonal
    blocks, as in the limit), ``sharpness`` (the loss's Gauss–Newton sharpness, λ_max(K)/P for
    MSE) and ``hessian_sharpness`` (λ_max(η∇²𝓛), unless switched off), ``accuracy_train`` /
    ``accuracy_test`` where the data have class labels, and with test inputs ``f_test``,
    ``ntk_test_train`` and (with targets) ``loss_test``; plus ``num_steps`` and
    ``diverged_step`` (seeds,; −1: did not diverge).
    ``diagnostics["diverged"][N]`` maps each diverged seed to its first divergent step (discrete
    rules only; docs/conventions.md §2a, `dmft._divergence`).
    """

    t: Float[np.ndarray, " T"]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    members: Mapping[int, dict[str, np.ndarray]]
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, width: int) -> dict[str, np.ndarray]:
        return self.members[width]

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat result-file arrays (docs/conventions.md §5): ``t``, ``widths``, ``seeds``,
        ``N{N}_f_train`` (seeds, T, P), ``N{N}_ntk`` (seeds, T, P, P), ``N{N}_loss_train``,
        ``N{N}_phi_L{l}``, ``N{N}_g_L{l}`` (seeds, T, P, P), test arrays when present."""
        out: dict[str, np.ndarray] = {
            "t": np.asarray(self.t),
            "widths": np.asarray(self.widths),
            "seeds": np.asarray(self.seeds),
        }
        for width in self.widths:
            for key, value in self.members[width].items():
                if key in ("phi", "g"):
                    for layer in range(value.shape[2]):
                        out[f"N{width}_{key}_L{layer + 1}"] = value[:, :, layer]
                else:
                    out[f"N{width}_{key}"] = value
        return out


#: ``[sampler]`` keys that are not options of the numerical method
SAMPLER_KEYS = ("widths", "seeds", "max_memory_gib", "hessian_steps")
#: ``[sampler]`` keys that configure a numerical integration of gradient flow
FLOW_METHOD_KEYS = ("method", "dt", "rtol", "atol", "max_steps")


def method_from_table(table: Mapping[str, Any]) -> Method:
    """The numerical method of gradient flow in a spec's ``[sampler]`` table: ``method = "flow"``
    (`AdaptiveSteps`: rtol, atol, max_steps) or ``"euler"`` (`FixedSteps`: dt; also spelled
    ``"gd"``, an Euler step of the flow, not the ``training.optimizer = "gd"`` rule)."""
    table = {k: v for k, v in dict(table).items() if k not in SAMPLER_KEYS}
    name = table.pop("method", "flow")
    classes = {"flow": AdaptiveSteps, "euler": FixedSteps, "gd": FixedSteps}
    if name not in classes:
        raise InputError(f"sampler.method must be 'flow' or 'euler' (alias 'gd'), got {name!r}")
    return classes[name].from_table(table)


def _refuse_flow_method(spec: Spec, what: str) -> None:
    training = spec.training
    raise InputError(
        f"{what} is a numerical integration of gradient flow, but training.optimizer = "
        f"{training.optimizer!r} trains the networks by the rule itself (step training."
        f"learning_rate = {training.learning_rate:g}), which needs no sampler method: drop "
        "sampler.method/dt/rtol/atol/max_steps (--method/--dt/--rtol/--atol)"
    )


def method_for_spec(spec: Spec) -> Method:
    """The sampler's method for `spec`: the numerical method of its ``[sampler]`` table for
    gradient flow (`method_from_table`), `RuleSteps` of ``spec.training.dynamics`` for "gd" /
    "sgd" (whose ``[sampler]`` table must then have no flow-method keys)."""
    if spec.training.optimizer == "flow":
        return method_from_table(spec.sampler)
    given = [key for key in FLOW_METHOD_KEYS if key in spec.sampler]
    if given:
        _refuse_flow_method(spec, f"sampler.{given[0]}")
    return RuleSteps(spec.training.dynamics)


def _check_method(spec: Spec, method: Method) -> None:
    """InputError unless `method` trains by the spec's rule (a flow method for "flow", the spec's
    own `RuleSteps` for "gd" / "sgd")."""
    if spec.training.optimizer != "flow" and isinstance(method, (AdaptiveSteps, FixedSteps)):
        _refuse_flow_method(spec, f"the sampler method {type(method).__name__}")
    if isinstance(method, RuleSteps) and spec.training.optimizer != "flow" \
            and method.rule != spec.training.dynamics:
        raise InputError(f"RuleSteps({method.rule}) is not the spec's training rule "
                         f"{spec.training.dynamics}; pass no method to train by the spec's rule")
    check_training_rule(spec, method, f"the sampler method {type(method).__name__}")


def hessian_steps_from_table(table: Mapping[str, Any]) -> int:
    """``sampler.hessian_steps``: Lanczos steps of the Hessian sharpness (0 skips it)."""
    value = dict(table).get("hessian_steps", HESSIAN_STEPS)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"sampler.hessian_steps must be an integer >= 0 (Lanczos steps; 0 skips "
                         f"the Hessian sharpness), got {value!r}")
    return int(value)


def member_bytes(net: FiniteNetwork, method: Method, num_points: int, num_train: int, num_times: int) -> float:
    """Estimated peak bytes of one ensemble member: solver copies of the parameters, the fields
    of every layer and the recorded observables."""
    L, N = net.hidden_layers, net.width
    words = net.num_params * method.memory_copies
    words += 8 * L * num_points * N  # h, φ(h), φ'(h), g and their tangents
    C = net.outputs
    words += 4 * (C - 1) * L * num_points * N  # the backward fields g_c of the other outputs
    words += num_times * (num_points * num_train + 2 * L * num_train**2 + C * num_points + 2)
    return 8.0 * words


def _as_widths(widths) -> tuple[int, ...]:
    if isinstance(widths, (int, np.integer)):
        widths = (widths,)
    widths = tuple(widths)
    if not widths or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in widths):
        raise InputError(f"--widths must be a list of positive integers, got {widths!r}")
    if min(widths) <= 0:
        raise InputError(f"--widths must be positive integers, got {list(widths)}")
    return tuple(int(w) for w in widths)


def _as_seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds <= 0:
            raise InputError(f"--seeds must be a positive number of ensemble members, got {seeds}")
        return tuple(range(int(seeds)))
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                            for s in seeds):
        raise InputError(f"--seeds must be a positive count or a list of seeds >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds contains repeated seeds: {list(seeds)}")
    return tuple(int(s) for s in seeds)


def plan_batches(spec: Spec, widths, seeds, method: Method, max_memory_gib: float | None = None,
                 batch_size: int | None = None) -> dict[int, int]:
    """Members per batch for each width, from the memory estimate; InputError if even one
    member per device does not fit."""
    widths, seeds = _as_widths(widths), _as_seeds(seeds)
    data = spec.data
    devices = len(jax.devices())
    if max_memory_gib is not None:
        if not (isinstance(max_memory_gib, (int, float)) and max_memory_gib > 0):
            raise InputError(f"--max-memory must be a number of GiB > 0, got {max_memory_gib!r}")
        budget = max_memory_gib * GIB / devices
    else:
        budget = 0.6 * available_memory_bytes()  # headroom for XLA temporaries and the host copies
    plan = {}
    for width in widths:
        net = FiniteNetwork.for_spec(spec, width)
        per_member = member_bytes(net, method, data.num_train + data.num_test, data.num_train,
                                  len(spec.training.times))
        per_device = int(budget // per_member)
        if per_device < 1:
            raise InputError(
                f"ensemble at width {width} needs {per_member / GIB:.2f} GiB per member "
                f"({net.num_params:,} parameters), but only {budget / GIB:.2f} GiB per device is "
                f"available; use smaller --widths or pass --max-memory"
            )
        size = per_device * devices
        if batch_size is not None:
            size = min(size, max(1, int(batch_size)))
        ceiling = -(-len(seeds) // devices) * devices
        plan[width] = int(min(size, ceiling))
    return plan


def _losses_and_accuracies(net: FiniteNetwork, data, member: dict[str, np.ndarray]
                           ) -> dict[str, np.ndarray]:
    """``loss_train`` (seeds, T), ``loss_test`` where there are test targets, and
    ``accuracy_train`` / ``accuracy_test`` where the data have class labels."""
    rows = net.outputs > 1
    out = {"loss_train": np.asarray(net.loss.value(member["f_train"], data.y_train, rows=rows))}
    if data.y_test is not None and data.num_test > 0:
        out["loss_test"] = np.asarray(net.loss.value(member["f_test"], data.y_test, rows=rows))
    if data.labels is not None:
        out["accuracy_train"] = data.accuracy(member["f_train"])
    if data.labels_test is not None and data.num_test > 0:
        out["accuracy_test"] = data.accuracy(member["f_test"], test=True)
    return out


def _warn_if_adaptive_steps_crawl(spec: Spec, method: Method) -> None:
    """Adaptive steps on a kinked φ: the flow's vector field jumps at every kink crossing, and the
    controller then takes tens of thousands of steps. Say so before the work starts."""
    kinked = [layer.activation for layer in mlp(spec.architecture).activations if layer.kinked]
    if isinstance(method, AdaptiveSteps) and kinked:
        warnings.warn(
            f"dmft sample: activation {kinked[0]} has kinks, where adaptive steps "
            f"(rtol = {method.rtol:g}) crawl; expect slow training, or use "
            "--method euler --dt 0.01 (sampler.method = \"euler\") for fixed Euler steps of the flow",
            stacklevel=3,
        )


def sample(
    spec: Spec,
    widths: int | Sequence[int],
    seeds: int | Sequence[int],
    method: Method | None = None,
    *,
    batch_size: int | None = None,
    max_memory_gib: float | None = None,
    centered: bool = False,
    hessian_steps: int | None = None,
) -> Samples:
    """Train ensembles of width-N networks of `spec` for each N in `widths` and record their
    observables at ``spec.training.times``.

    Args:
        spec: architecture (plain or residual), data, training rule and saved times;
            ``spec.sampler`` may name the numerical method of gradient flow.
        widths: hidden widths N (positive integers).
        seeds: a number of members (seeds 0..n−1) or explicit non-negative seeds.
        method: for ``training.optimizer = "flow"`` the numerical method, `AdaptiveSteps`
            (default, Diffrax Tsit5 + PID) or `FixedSteps(dt)` (Euler steps of the flow). For
            "gd" / "sgd" leave it None: members are trained by the rule itself (`RuleSteps` of
            ``spec.training.dynamics``), and a flow method is an InputError.
        batch_size: most members trained at once (default: as many as fit in memory).
        max_memory_gib: memory budget over all devices (default: 60 % of what is available).
        centered: train f(θ) − f(θ0) with a frozen initial copy, so that f(0) = 0 (default: the
            plain network of the conventions).
        hessian_steps: Lanczos steps of ``hessian_sharpness`` per member and saved time
            (default: ``sampler.hessian_steps``, else 40; 0 skips it).

    Members trained by a discrete rule that diverge do not stop the ensemble: they are recorded
    as they are and listed in ``diagnostics["diverged"]`` (width → {seed: first divergent step}),
    with a warning.
    """
    require_float64("dmft.sample")
    widths, seeds = _as_widths(widths), _as_seeds(seeds)
    if method is None:
        method = method_for_spec(spec)
    _check_method(spec, method)
    if hessian_steps is None:
        hessian_steps = hessian_steps_from_table(spec.sampler)
    else:
        hessian_steps = hessian_steps_from_table({"hessian_steps": hessian_steps})
    _warn_if_adaptive_steps_crawl(spec, method)
    plan = plan_batches(spec, widths, seeds, method, max_memory_gib, batch_size)
    data = spec.data
    times = np.asarray(spec.training.times, dtype=np.float64)
    if isinstance(method, (FixedSteps, RuleSteps)):
        steps = method.steps(times)  # validate before any work
        if isinstance(method, RuleSteps):
            method.batches(data.num_train, max(int(steps.max()), 1))
    mesh = seed_mesh()
    total = sum(-(-len(seeds) // plan[w]) for w in widths)
    bar = progress_bar(total, "sampling")
    members: dict[int, dict[str, np.ndarray]] = {}
    wall: dict[int, float] = {}
    try:
        for width in widths:
            net = FiniteNetwork.for_spec(spec, width)
            size = plan[width]
            start = time.perf_counter()
            pieces = []
            for first in range(0, len(seeds), size):
                bar.set_postfix(N=width, seeds=f"{first}-{min(first + size, len(seeds)) - 1}")
                pieces.append(train_ensemble(net, times, data.x_train, data.y_train, data.x_test,
                                             seeds[first:first + size], method, mesh, pad_to=size,
                                             centered=centered, hessian_steps=hessian_steps))
                bar.update(1)
            merged = {key: np.concatenate([piece[key] for piece in pieces]) for key in pieces[0]}
            merged.update(_losses_and_accuracies(net, data, merged))
            members[width] = merged
            wall[width] = time.perf_counter() - start
    finally:
        bar.close()
    diverged = {w: {int(s): int(k) for s, k in zip(seeds, members[w]["diverged_step"]) if k >= 0}
                for w in widths}
    if any(diverged.values()):
        lines = "; ".join(f"N = {w}: seeds {sorted(d)} (first at step {min(d.values())})"
                          for w, d in diverged.items() if d)
        warnings.warn(f"dmft sample: members diverged under training.learning_rate = "
                      f"{spec.training.learning_rate:g}: {lines}; they are recorded as they are "
                      "(inf/NaN included) and left out of the comparison", stacklevel=2)
    options = ({"rule": spec.training.to_dict()} if isinstance(method, RuleSteps)
               else dataclasses.asdict(method))
    diagnostics = {
        "method": type(method).__name__,
        "method_options": options,
        "training_rule": spec.training.optimizer,
        "hessian_steps": hessian_steps,
        "diverged": diverged,
        "centered": bool(centered),
        "batch_size": plan,
        "devices": len(jax.devices()),
        "wall_time_s": wall,
        "num_steps_max": {w: int(members[w]["num_steps"].max()) for w in widths},
    }
    return Samples(t=times, widths=widths, seeds=seeds, members=members, diagnostics=diagnostics)
