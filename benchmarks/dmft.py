"""Speed and memory of the Monte Carlo DMFT solver (deep tanh μP MLP), and the public reference.

Each case runs in its own process (peak RSS = the whole process, imports included). Inputs
x ~ N(0, 1) with D = 16, y = sign(x_1), γ0 = 1, saved times t = 0, 0.1, …, 0.1·(T−1) with
dt = 0.1 (so the grid is the T saved times), float64. Printed: first call (compile included),
warm median of `--repeats` calls, peak RSS, and the Monte Carlo standard error of the final loss.

    python benchmarks/dmft.py                   # the table over P, T, L, S (headline P=32 T=100 L=2 S=4096)
    python benchmarks/dmft.py --cases 32,100,2,4096 --repeats 3
    python benchmarks/dmft.py --reference /path/to/jpc/experiments/dmft/src

After the Monte Carlo rows the table has GD-vs-flow rows (`RULE_CASES`, ``--skip-rules`` leaves
them out): the lazy closed form (flow, GD) and SGD recursion, and the two-layer particle DMFT
(adaptive flow solve against the exact GD / SGD steps), L = 1, η0 = 0.1, T saved steps.

``--reference DIR`` imports ``theory_utils.solve_kernels_nonlin`` (thebuckleylab/jpc, the public DMFT reference code)
from DIR and runs it side by side with ours on the notes' PD4 tanh case (P = 4, L = 2, γ0 = 1,
20 steps of 0.1): wall time and the final loss, against the width-1024 network value of notes
§7b; ours at several S with its standard error. Nothing of the reference is copied here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# this file would shadow the dmft package when its folder is first on sys.path
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

DEFAULT_CASES = [  # (P, T, L, S)
    (8, 50, 2, 4096), (32, 50, 2, 4096), (32, 25, 2, 4096), (32, 100, 2, 4096),
    (32, 50, 1, 4096), (32, 50, 3, 4096), (32, 50, 2, 1024), (32, 50, 2, 16384),
]
HEADLINE = (32, 100, 2, 4096)
# published PD4 numbers: tanh, L = 2, γ0 = 1, η = 0.1; loss at steps 5/10/15/19 of width-1024 networks
PD4_NETWORK_LOSS = (0.41353, 0.33374, 0.25865, 0.20366)


def _problem(num_points: int, steps: int, layers: int):
    import numpy as np

    from dmft.spec import Architecture, Data, Spec, Training

    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_points, 16))
    y = np.sign(x[:, 0])
    return Spec(Architecture(hidden_layers=layers, activation="tanh", parameterization="mup",
                             gamma0=1.0),
                Data(x, y), Training(tuple(0.1 * np.arange(steps))))


def _pd4(times):
    import numpy as np

    from dmft.spec import Architecture, Data, Spec, Training

    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    return Spec(Architecture(hidden_layers=2, activation="tanh", parameterization="mup",
                             gamma0=1.0),
                Data(2.0 * np.linalg.cholesky(kx), np.array([1.0, 1.0, -1.0, -1.0])),
                Training(tuple(times)))


def _cpu() -> float:
    """CPU seconds of this process (all threads): independent of other users of the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_solve(method, spec, repeats: int) -> dict:
    """Time the first solve (compile included) and the median of ``repeats`` more, wall and CPU."""
    import jax

    start, cpu_start = time.perf_counter(), _cpu()
    sol = method.solve(spec)
    first, first_cpu = time.perf_counter() - start, _cpu() - cpu_start
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), _cpu()
        sol = method.solve(spec)
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu() - cpu_start)
    loss = sol.losses(spec.data.y_train)["loss_train"]
    stderr = sol.stderr.get("loss_train")
    return {"first_s": first, "median_s": statistics.median(times) if times else float("nan"),
            "first_cpu_s": first_cpu,
            "median_cpu_s": statistics.median(cpu_times) if cpu_times else float("nan"),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loss_end": float(loss[-1]),
            "loss_end_stderr": float(stderr[-1]) if stderr is not None else 0.0,
            "devices": sol.diagnostics.get("devices", len(jax.devices())),
            "backend": jax.default_backend()}


def worker(num_points: int, steps: int, layers: int, samples: int, repeats: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from dmft.solvers._deep_nonlinear import MonteCarloDMFT

    spec = _problem(num_points, steps, layers)
    return _timed_solve(MonteCarloDMFT(num_samples=samples, dt=0.1), spec, repeats)


def reference_worker(path: str, samples: int, damping: float, iterations: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, path)
    import theory_utils  # the public reference (jpc), from the user's checkout

    kx = 0.5 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    y = np.array([1.0, 1.0, -1.0, -1.0])
    start = time.perf_counter()
    phi, g, _, _ = theory_utils.solve_kernels_nonlin(
        jnp.asarray(kx), jnp.asarray(y), depth=2, T=20, eta=0.1, gamma=1.0, num_iter=iterations,
        samples=samples, damping=damping, nonlin="tanh", key=jax.random.PRNGKey(0))
    delta = theory_utils.solve_Delta(jnp.asarray(kx), y, phi, g, 0.1)
    wall = time.perf_counter() - start
    loss = 0.5 * np.mean(np.asarray(delta) ** 2, axis=1)
    return {"wall_s": wall, "loss": [float(loss[k]) for k in (5, 10, 15, 19)],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def ours_pd4_worker(samples: int, repeats: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from dmft.solvers._deep_nonlinear import MonteCarloDMFT

    spec = _pd4((0.0, 0.5, 1.0, 1.5, 1.9))
    method = MonteCarloDMFT(num_samples=samples, dt=0.1)
    start = time.perf_counter()
    sol = method.solve(spec)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sol = method.solve(spec)
        times.append(time.perf_counter() - start)
    loss = sol.losses(spec.data.y_train)["loss_train"]
    return {"first_s": first, "median_s": statistics.median(times) if times else float("nan"),
            "loss": [float(v) for v in loss[1:]],
            "stderr": [float(v) for v in sol.stderr["loss_train"][1:]],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


#: GD against flow rows of the table: (family, optimizer, P, T saved steps, S particles); the
#: two-layer rows are tanh, L = 1; lazy rows are the closed form (flow, GD) and the SGD recursion.
RULE_CASES = [("lazy", "flow", 32, 100, 0), ("lazy", "gd", 32, 100, 0), ("lazy", "sgd", 32, 100, 0),
              ("two_layer", "flow", 32, 100, 4096), ("two_layer", "gd", 32, 100, 4096),
              ("two_layer", "sgd", 32, 100, 4096)]


def rule_worker(family: str, optimizer: str, num_points: int, steps: int, samples: int,
                repeats: int) -> dict:
    """One GD-vs-flow row: the `_problem` data with L = 1, η0 = 0.1 for "gd" / "sgd" (batch P/4),
    saved at every step t = 0, 0.1, …, i.e. the same saved times as the flow row."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from dmft.solvers import ClosedForm, TwoLayerDMFT
    from dmft.spec import Architecture, Training

    spec = _problem(num_points, steps, 1)
    if family == "lazy":
        spec = spec.replace(architecture=Architecture(1, "tanh"))
    if optimizer != "flow":
        extra = {"batch_size": num_points // 4, "seed": 0} if optimizer == "sgd" else {}
        spec = spec.replace(training=Training(spec.training.times, optimizer=optimizer,
                                              learning_rate=0.1, **extra))
    method = ClosedForm() if family == "lazy" else TwoLayerDMFT(particles=samples)
    return _timed_solve(method, spec, repeats)


RESULT_ENV = "DMFT_BENCHMARK_RESULT"  # the file a worker writes its JSON result to


def _emit(result: dict) -> None:
    """Hand a worker's result to `_spawn`: a JSON file named by $DMFT_BENCHMARK_RESULT (stdout
    is not reliable: the reference code writes ``\\r iteration: …`` progress there with no
    newline), else stdout when the worker is run by hand."""
    target = os.environ.get(RESULT_ENV)
    if target:
        with open(target, "w", encoding="utf-8") as stream:
            json.dump(result, stream)
    else:
        print(json.dumps(result))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _spawn(args: list[str]) -> dict:
    import tempfile

    env = dict(os.environ, DMFT_PROGRESS="0")
    with tempfile.TemporaryDirectory(prefix="dmft-benchmark-") as folder:
        result_file = os.path.join(folder, "result.json")
        env[RESULT_ENV] = result_file
        done = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env,
                              capture_output=True, text=True)
        if done.returncode:
            return {"error": _last_line(done.stderr) or f"worker exited with {done.returncode}"}
        try:
            with open(result_file, encoding="utf-8") as stream:
                return json.load(stream)
        except (OSError, ValueError) as error:
            return {"error": f"worker wrote no readable result ({error}); stdout ends with "
                             f"{_last_line(done.stdout)[-200:]!r}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=None,
                        help="semicolon-separated P,T,L,S cases (default: the table above)")
    parser.add_argument("--repeats", type=int, default=3, help="warm calls (median reported)")
    parser.add_argument("--reference", default=None,
                        help="folder holding jpc's theory_utils.py: run it side by side")
    parser.add_argument("--reference-samples", default="1000,3000")
    parser.add_argument("--ours-samples", default="1024,4096,16384")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-rules", action="store_true",
                        help="leave out the GD-vs-flow rows (lazy and two-layer)")
    parser.add_argument("--worker", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rule-worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--ours-pd4-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        _emit(worker(*args.worker, args.repeats))
        return
    if args.rule_worker:
        family, optimizer, *sizes = args.rule_worker
        _emit(rule_worker(family, optimizer, *map(int, sizes), args.repeats))
        return
    if args.reference_worker:
        path, samples, damping, iterations = args.reference_worker
        _emit(reference_worker(path, int(samples), float(damping), int(iterations)))
        return
    if args.ours_pd4_worker:
        _emit(ours_pd4_worker(args.ours_pd4_worker, args.repeats))
        return

    if not args.skip_table:
        cases = DEFAULT_CASES if args.cases is None else [
            tuple(int(v) for v in case.split(",")) for case in args.cases.split(";")]
        print(f"Monte Carlo DMFT, tanh, γ0 = 1, dt = 0.1, float64; warm = median of {args.repeats}")
        print("wall = elapsed seconds; cpu = CPU seconds of the process (all threads), which does not")
        print("grow when other jobs share the machine: on an idle 2-core CPU, wall ≈ cpu/2 … cpu.")
        print(f"{'P':>4} {'T':>4} {'L':>2} {'S':>6} | {'first wall':>10} {'cpu':>6} | {'warm wall':>9} "
              f"{'cpu':>6} | {'peak MiB':>8} | {'loss(T)':>8} {'± MC':>8}  backend")
        for case in cases:
            out = _spawn(["--worker", *map(str, case), "--repeats", str(args.repeats)])
            label = f"{case[0]:>4} {case[1]:>4} {case[2]:>2} {case[3]:>6}"
            if "error" in out:
                print(f"{label} | failed: {out['error']}")
                continue
            mark = "  <- headline (target <= 60 s)" if tuple(case) == HEADLINE else ""
            print(f"{label} | {out['first_s']:10.2f} {out['first_cpu_s']:6.1f} | {out['median_s']:9.2f} "
                  f"{out['median_cpu_s']:6.1f} | {out['peak_mib']:8.0f} | "
                  f"{out['loss_end']:8.5f} {out['loss_end_stderr']:8.5f}  "
                  f"{out['backend']}×{out['devices']}{mark}", flush=True)
    if not args.skip_table and not args.skip_rules:
        # GD / SGD against flow, same columns: L = 1, η0 = 0.1, one saved time per step
        for family, optimizer, num_points, steps, samples in RULE_CASES:
            out = _spawn(["--rule-worker", family, optimizer, str(num_points), str(steps),
                          str(samples), "--repeats", str(args.repeats)])
            label = f"{num_points:>4} {steps:>4} {1:>2} {samples or '-':>6}"
            what = f"  {family} {optimizer}"
            if "error" in out:
                print(f"{label} | failed: {out['error']}{what}")
                continue
            print(f"{label} | {out['first_s']:10.2f} {out['first_cpu_s']:6.1f} | {out['median_s']:9.2f} "
                  f"{out['median_cpu_s']:6.1f} | {out['peak_mib']:8.0f} | "
                  f"{out['loss_end']:8.5f} {out['loss_end_stderr']:8.5f}  "
                  f"{out['backend']}×{out['devices']}{what}", flush=True)

    if args.reference:
        print("\nPD4 tanh, L = 2, γ0 = 1 (published networks): loss at t = 0.5 / 1.0 / 1.5 / 1.9")
        print("  width-1024 networks (GD, η = 0.1):        "
              + " / ".join(f"{v:.5f}" for v in PD4_NETWORK_LOSS))
        for samples in args.ours_samples.split(","):
            out = _spawn(["--ours-pd4-worker", samples, "--repeats", str(args.repeats)])
            if "error" in out:
                print(f"  dmft S = {samples}: failed: {out['error']}")
                continue
            print(f"  dmft S = {samples:>5} (gradient flow):       "
                  + " / ".join(f"{v:.5f}" for v in out["loss"])
                  + f"  ± {max(out['stderr']):.1e} | first {out['first_s']:.1f} s, "
                    f"warm {out['median_s']:.2f} s")
        for samples, damping in [(s, 1.0 if int(s) <= 1000 else 0.5)
                                 for s in args.reference_samples.split(",")]:
            out = _spawn(["--reference-worker", args.reference, samples, str(damping), "10"])
            if "error" in out:
                print(f"  reference S = {samples}: failed: {out['error']}")
                continue
            print(f"  jpc reference S = {samples:>5}, damping {damping}: "
                  + " / ".join(f"{v:.5f}" for v in out["loss"])
                  + f"  | {out['wall_s']:.1f} s (10 sweeps)")


if __name__ == "__main__":
    main()
