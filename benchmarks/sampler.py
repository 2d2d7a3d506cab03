"""Benchmark of the finite-width sampler (issue 4).

16 seeds × widths 256…4096 of a 2-hidden-layer tanh μP network (γ0 = 1) on P = 32 teacher
points, gradient flow (Diffrax Tsit5 + PID, rtol = atol = 1e-8) saved at 100 times in [0, 10].
For every width: wall time of the first call (trace + compile + run) and of repeated calls
(median), Diffrax steps, the sampler's memory estimate and the measured peak memory (device
statistics on accelerators, the process's peak RSS on CPU).

    python benchmarks/sampler.py                      # full table (minutes on CPU)
    python benchmarks/sampler.py --widths 256,512 --seeds 4 --repeats 1   # quick look
    python benchmarks/sampler.py --optimizer gd --learning-rate 0.1     # GD members (steps t/η0)

``--optimizer gd`` trains the same members by gradient descent itself (`RuleSteps`, one step per
η0 of time) instead of the adaptive flow integration; ``--hessian-steps`` sets the Lanczos steps
of the recorded Hessian sharpness (0 leaves it out, as the flow table did before it existed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from dmft import Architecture, Spec, Training  # noqa: E402
from dmft._progress import set_progress  # noqa: E402
from dmft.sampler import (  # noqa: E402
    AdaptiveSteps,
    FiniteNetwork,
    member_bytes,
    method_for_spec,
    plan_batches,
    sample,
)
from dmft.spec import teacher_data  # noqa: E402


def peak_memory_gib() -> float:
    device = jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends have no device statistics
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB → GiB (Linux)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="256,512,1024,2048,4096")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--times", type=int, default=100)
    parser.add_argument("--t-max", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats after the first call for widths ≤ --repeat-below")
    parser.add_argument("--repeat-below", type=int, default=1024)
    parser.add_argument("--optimizer", default="flow", choices=("flow", "gd"))
    parser.add_argument("--learning-rate", type=float, default=0.1, help="η0 with --optimizer gd")
    parser.add_argument("--hessian-steps", type=int, default=40)
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    set_progress(False)

    widths = [int(w) for w in args.widths.split(",")]
    data = teacher_data(num_train=args.points, num_test=0, input_dim=16)
    if args.optimizer == "gd":
        steps = np.unique(np.rint(np.linspace(0.0, args.t_max, args.times) / args.learning_rate))
        training = Training(tuple(steps * args.learning_rate), optimizer="gd",
                            learning_rate=args.learning_rate)
    else:
        training = Training(tuple(np.linspace(0.0, args.t_max, args.times)))
    spec = Spec(Architecture(2, "tanh", "mup", gamma0=1.0), data, training)
    method = AdaptiveSteps(rtol=1e-8, atol=1e-8) if args.optimizer == "flow" else method_for_spec(spec)
    plan = plan_batches(spec, widths, args.seeds, method)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} × {len(jax.devices())} ({jax.default_backend()}), "
          f"float64, P = {args.points}, T = {args.times} saved times, {args.seeds} seeds, "
          f"L = 2 tanh μP, γ0 = 1, "
          + ("Tsit5 + PID(1e-8)" if args.optimizer == "flow" else f"GD, η0 = {args.learning_rate:g}")
          + f", {args.hessian_steps} Lanczos steps of the Hessian sharpness per saved time")
    header = (f"{'N':>6} {'params':>10} {'batch':>6} {'first (s)':>10} {'median (s)':>11} "
              f"{'s/seed':>8} {'steps':>6} {'est GiB/seed':>13} {'peak GiB':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for width in widths:
        net = FiniteNetwork(spec.architecture, width, data.input_dim)
        estimate = member_bytes(net, method, data.num_train, data.num_train, args.times) / 2**30
        start = time.perf_counter()
        samples = sample(spec, [width], args.seeds, method, hessian_steps=args.hessian_steps)
        first = time.perf_counter() - start
        repeats = []
        if width <= args.repeat_below:
            for _ in range(args.repeats):
                start = time.perf_counter()
                sample(spec, [width], args.seeds, method, hessian_steps=args.hessian_steps)
                repeats.append(time.perf_counter() - start)
        median = float(np.median(repeats)) if repeats else first
        steps = int(samples[width]["num_steps"].max())
        row = {"width": width, "params": net.num_params, "batch": plan[width], "first_s": first,
               "median_s": median, "repeats": len(repeats), "steps": steps,
               "estimate_gib_per_seed": estimate, "peak_gib": peak_memory_gib(),
               "final_loss": float(samples[width]["loss_train"][:, -1].mean())}
        rows.append(row)
        print(f"{width:>6} {net.num_params:>10,} {plan[width]:>6} {first:>10.2f} "
              f"{median:>11.2f}{'*' if not repeats else ' '} {median / args.seeds:>7.3f} "
              f"{steps:>6} {estimate:>13.3f} {row['peak_gib']:>9.2f}", flush=True)
    print("* no repeats (first call only); peak memory is the process maximum so far")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device.device_kind, "backend": jax.default_backend(),
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
