"""Cost of the Monte Carlo DMFT march: gradient flow against gradient descent, plain and residual.

The issue's speed case (issue 12): a 240-step horizon at Q = 12 points (P = 8 train + 4 test),
L = 2, S = 4096 samples, tanh, γ0 = 1, float64. Inputs x ~ N(0, 1) with D = 16, y = sign(x_1).
Flow marches t ∈ [0, 24] with dt = 0.1 (240 steps); GD takes 240 steps of η0 = 0.1. Each case is
solved `--repeats` + 1 times in this process: the first call includes compilation, the table
gives it and the median of the warm calls, wall and CPU time (CPU = user + system time of all
threads, `time.process_time`; on a shared machine wall time depends on the load, CPU time less).

    python benchmarks/monte_carlo.py                     # the table below, 2 warm repeats
    python benchmarks/monte_carlo.py --cases gd,240,2,4096 --repeats 3
    python benchmarks/monte_carlo.py --phases 8          # march phases (solver.phases)

Cases are RULE,STEPS,L,S with RULE one of flow, gd, sgd (batch 4), res-flow, res-gd (residual
blocks, α = 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# this file would shadow the dmft package when its folder is first on sys.path
sys.path = [p for p in sys.path
            if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

DEFAULT_CASES = ["flow,240,2,4096", "gd,240,2,4096", "sgd,240,2,4096", "res-gd,240,2,4096",
                 "gd,240,1,4096", "gd,120,2,4096", "gd,240,2,1024"]


def problem(rule: str, steps: int, layers: int):
    import numpy as np

    from dmft.spec import Architecture, Data, Spec, Training

    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 16))
    y = np.sign(x[:8, 0])
    eta = 0.1
    times = (0.0, eta * steps / 2, eta * steps)
    base = rule.removeprefix("res-")
    if base == "flow":
        training = Training(times)
    elif base == "gd":
        training = Training(times, optimizer="gd", learning_rate=eta)
    else:
        training = Training(times, optimizer="sgd", learning_rate=eta, batch_size=4, seed=0)
    arch = Architecture(hidden_layers=layers, activation="tanh", parameterization="mup",
                        gamma0=1.0, residual_scale=1.0 if rule.startswith("res-") else None)
    return Spec(arch, Data(x[:8], y, x_test=x[8:]), training)


def run_case(case: str, repeats: int, phases: int | None):
    import jax

    jax.config.update("jax_enable_x64", True)
    from dmft.solvers import MonteCarloDMFT

    rule, steps, layers, samples = case.split(",")
    steps, layers, samples = int(steps), int(layers), int(samples)
    spec = problem(rule, steps, layers)
    dt = 0.1 if rule.removeprefix("res-") == "flow" else None
    method = MonteCarloDMFT(num_samples=samples, dt=dt, phases=phases)
    walls, cpus = [], []
    for _ in range(repeats + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        sol = method.solve(spec)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    loss = sol.losses(spec.data.y_train)["loss_train"][-1]
    warm_wall = statistics.median(walls[1:]) if repeats else float("nan")
    warm_cpu = statistics.median(cpus[1:]) if repeats else float("nan")
    return (rule, steps, layers, samples, walls[0], cpus[0], warm_wall, warm_cpu, loss,
            sol.stderr["loss_train"][-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES,
                        help="RULE,STEPS,L,S (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="warm calls per case")
    parser.add_argument("--phases", type=int, default=None, help="solver.phases (default auto)")
    args = parser.parse_args(argv)
    print(f"{'case':>10} {'steps':>5} {'L':>2} {'S':>6} {'first wall':>10} {'first CPU':>9} "
          f"{'warm wall':>9} {'warm CPU':>8}   final loss ± s.e.")
    for case in args.cases:
        row = run_case(case, args.repeats, args.phases)
        print(f"{row[0]:>10} {row[1]:>5} {row[2]:>2} {row[3]:>6} {row[4]:>9.1f}s {row[5]:>8.1f}s "
              f"{row[6]:>8.1f}s {row[7]:>7.1f}s   {row[8]:.4f} ± {row[9]:.4f}", flush=True)


if __name__ == "__main__":
    main()
