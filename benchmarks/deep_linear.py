"""Speed and accuracy of the deep-linear DMFT closure (issue 12 item 6), old against new.

The case: examples/mup_deep_linear.toml (L = 2 hidden layers, φ = id, γ0 = 1.5, P = 8 plus 4
test points, D = 4) with 31 saved times t = 0, 0.8, …, 24 ("full"), and its first 7 saved times
("short", t <= 4.8) where the old solver finishes. Each solve runs in its own process; printed:
median wall time and median CPU time (time.process_time of the child, compile included) over
`--repeats` runs, and the largest error of f (train and test points) and of the NTK against a
converged reference: the new solver at dt_ref/2 and dt_ref/4, Richardson-combined for its
second order, (4 x_{dt/4} − x_{dt/2})/3.

"old" is the default solver of commit eac2ff3 (Euler march at dt and dt/2, Richardson, the dt
enlarged to fit 2 GB), run from a git worktree (created with `git worktree add -f DIR eac2ff3`
when DIR does not exist); a run past `--cap` seconds is reported as "> cap".

    python benchmarks/deep_linear.py                       # both cases, old and new
    python benchmarks/deep_linear.py --cases short --repeats 3 --cap 600
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OLD_COMMIT = "eac2ff3"

CHILD = r"""
import json, sys, time, tomllib
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from dmft.spec import Architecture, Data, Spec, Training
from dmft.solvers import DeepLinearDMFT
args = json.loads(sys.argv[1])
d = tomllib.load(open(args["toml"], "rb"))["data"]
data = Data(x_train=np.array(d["x_train"]), y_train=np.array(d["y_train"]),
            x_test=np.array(d["x_test"]), y_test=np.array(d["y_test"]))
spec = Spec(Architecture(2, "linear", "mup", gamma0=1.5), data, Training(tuple(args["times"])))
solver = DeepLinearDMFT(**args["options"])
wall, cpu = time.perf_counter(), time.process_time()
solution = solver.solve(spec)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
np.savez(args["out"], f=np.concatenate([solution.f_train, solution.f_test], axis=1),
         ntk=solution.ntk)
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def run(code_root, times, options, out, cap):
    """One solve in a child process: (wall, cpu) seconds, or None past `cap`."""
    env = dict(os.environ, PYTHONPATH=code_root, PYTHONWARNINGS="ignore")
    args = json.dumps({"toml": os.path.join(ROOT, "examples", "mup_deep_linear.toml"),
                       "times": list(times), "options": options, "out": out})
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, args], env=env, cwd=tempfile.gettempdir(),
                              capture_output=True, text=True, timeout=cap)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["wall"], result["cpu"]


def timed(code_root, times, options, out, cap, repeats):
    runs = []
    for _ in range(repeats):
        result = run(code_root, times, options, out, cap)
        if result is None:
            return None
        runs.append(result)
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def errors(path, reference):
    import numpy as np

    values = np.load(path)
    return (float(np.max(np.abs(values["f"] - reference["f"]))),
            float(np.max(np.abs(values["ntk"] - reference["ntk"]))))


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="short,full")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cap", type=float, default=900.0, help="seconds per old solve")
    parser.add_argument("--old", default=os.path.join(tempfile.gettempdir(), "dmft_dl_old"),
                        help="worktree of the old commit (created if missing)")
    parser.add_argument("--dt-ref", type=float, default=0.025)
    parser.add_argument("--no-old", action="store_true")
    args = parser.parse_args()
    if not args.no_old and not os.path.isdir(args.old):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "-f", args.old, OLD_COMMIT],
                       check=True, capture_output=True)
    all_times = 0.8 * np.arange(31)
    cases = {"short": all_times[:7], "full": all_times}
    work = tempfile.mkdtemp(prefix="dmft_dl_bench_")
    print("| case | solver | wall s (median) | CPU s (median) | max error f | max error NTK |")
    print("|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        times = cases[name]
        half, quarter = (os.path.join(work, f"{name}_ref{i}.npz") for i in (2, 4))
        run(ROOT, times, {"dt": args.dt_ref / 2}, half, None)
        run(ROOT, times, {"dt": args.dt_ref / 4}, quarter, None)
        a, b = np.load(half), np.load(quarter)
        reference = {key: (4 * b[key] - a[key]) / 3 for key in ("f", "ntk")}
        rows = [("new (default)", ROOT, {}), ("new, dt = 0.05", ROOT, {"dt": 0.05})]
        if not args.no_old:
            rows.append(("old eac2ff3 (default)", args.old, {}))
        for label, root, options in rows:
            out = os.path.join(work, f"{name}_{len(label)}_{hash(label) % 997}.npz")
            cap = args.cap if root == args.old else None
            result = timed(root, times, options, out, cap, args.repeats)
            if result is None:
                print(f"| {name} | {label} | > {args.cap:g} | – | – | – |", flush=True)
                continue
            ef, ek = errors(out, reference)
            print(f"| {name} | {label} | {result[0]:.1f} | {result[1]:.1f} | {ef:.1e} | {ek:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
