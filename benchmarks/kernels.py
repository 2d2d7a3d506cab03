"""Speed and memory of the infinite-width kernels: NNGP + NTK of a depth-3 MLP.

The set-up of the published neural-tangents benchmark (neural-tangents 0.6.5, analytic kernels): three hidden
layers, σ_w = 1.5, σ_b = 0.05, inputs N(0, 1) with D = 100, float64, output-layer NNGP and NTK on
train × train. Each case runs in its own process, so the peak RSS is that of the whole process
(imports included), as for the peer's numbers.

    python benchmarks/kernels.py                      # ReLU and Erf, P = 1000 … 8000
    python benchmarks/kernels.py --sizes 1000 --repeats 7
    python benchmarks/kernels.py --sizes 2000,8000 --repeats 3 --against 3fcbe8ba --rounds 3

``--against COMMIT`` checks COMMIT out into a temporary git worktree and times it side by side with
this tree: per case and round, one process each (old first in odd rounds, new first in even
ones, so that a drifting machine load favours neither), and the table gives the medians over
rounds of each side's median and of the per-round ratio new/old, for wall-clock and for process
CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# benchmarks/dmft.py would shadow the dmft package when this folder is first on sys.path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

# neural-tangents 0.6.5 on a 2-core CPU, float64, as measured for this project: warm median
# seconds and whole-process peak RSS (MiB), ReLU; Erf at P = 1000 only.
PEER = {("relu", 1000): (0.0557, 706), ("relu", 2000): (0.215, 961), ("relu", 4000): (0.840, 1972),
        ("relu", 8000): (4.03, 6005), ("erf", 1000): (0.0476, 698)}


def worker(activation: str, size: int, repeats: int) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import dmft

    # the tree timed, as imported (PYTHONPATH selects it in `--against` runs)
    tree = os.path.dirname(os.path.dirname(os.path.abspath(dmft.__file__)))
    arch = dmft.Architecture(3, activation, "ntk", sigma_w=1.5, sigma_b=0.05)
    x = jax.random.normal(jax.random.key(0), (size, 100))

    def run():
        out = dmft.layer_kernels(arch, x, layers=(4,), with_derivative=False)
        return out.nngp[-1], out.ntk[-1]

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_s": first, "median_s": statistics.median(times), "cpu_s": statistics.median(cpu_times),
            "peak_mib": peak_mib, "tree": tree}


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _measure(tree: str, activation: str, size: int, repeats: int) -> dict:
    """One worker process importing dmft from `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", activation, str(size), "--repeats", str(repeats)],
        capture_output=True, text=True, check=True, env=env, cwd=tree,
    )
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    if os.path.realpath(row["tree"]) != os.path.realpath(tree):
        raise RuntimeError(f"worker imported dmft from {row['tree']}, not from {tree}")
    return row


def side_by_side(commit: str, activations: list[str], sizes: list[int], repeats: int, rounds: int) -> None:
    """Time `commit` (in a temporary worktree) against this tree, alternating per round."""
    old = tempfile.mkdtemp(prefix="dmft_against_")
    subprocess.run(["git", "-C", _ROOT, "worktree", "add", "--detach", "-f", old, commit],
                   check=True, capture_output=True)
    try:
        sha = subprocess.run(["git", "-C", old, "rev-parse", "--short", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
        new = subprocess.run(["git", "-C", _ROOT, "describe", "--always", "--dirty"], check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"old = {sha} (worktree {old}), new = {new} ({_ROOT}); {rounds} rounds of "
              f"{repeats} warm repeats each; medians over rounds")
        print("wall: warm wall-clock seconds; CPU: process CPU seconds of the same calls (all threads),"
              " less sensitive to other load on the machine")
        header = (f"{'activation':>10} {'P':>6} {'old wall':>9} {'new wall':>9} {'new/old':>8} "
                  f"{'old CPU':>9} {'new CPU':>9} {'new/old':>8}  per-round wall ratios")
        print(header)
        print("-" * len(header))
        for activation in activations:
            for size in sizes:
                rows = {old: [], _ROOT: []}
                for r in range(rounds):
                    for tree in (old, _ROOT) if r % 2 == 0 else (_ROOT, old):
                        rows[tree].append(_measure(tree, activation, size, repeats))
                cells = []
                for key in ("median_s", "cpu_s"):
                    olds = [row[key] for row in rows[old]]
                    news = [row[key] for row in rows[_ROOT]]
                    ratios = [n / o for n, o in zip(news, olds)]
                    cells.append((statistics.median(olds), statistics.median(news), statistics.median(ratios), ratios))
                (wo, wn, wr, wall_ratios), (co, cn, cr, _) = cells
                print(f"{activation:>10} {size:>6} {wo:>9.4f} {wn:>9.4f} {wr:>8.3f} {co:>9.4f} {cn:>9.4f} "
                      f"{cr:>8.3f}  " + " ".join(f"{x:.3f}" for x in wall_ratios), flush=True)
    finally:
        subprocess.run(["git", "-C", _ROOT, "worktree", "remove", "--force", old], check=False,
                       capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", default="relu,erf")
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", metavar="COMMIT",
                        help="time COMMIT (a temporary git worktree) side by side with this tree")
    parser.add_argument("--rounds", type=int, default=3, help="alternating old/new rounds (--against)")
    parser.add_argument("--worker", nargs=2, metavar=("ACTIVATION", "P"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
        return
    if args.against:
        side_by_side(args.against, args.activations.split(","), [int(p) for p in args.sizes.split(",")],
                     args.repeats, args.rounds)
        return
    header = f"{'activation':>10} {'P':>6} {'first (s)':>10} {'median (s)':>11} {'peak RSS (MiB)':>15}" \
             f" {'peer median (s)':>16} {'peer RSS (MiB)':>15}"
    print(header)
    print("-" * len(header))
    for activation in args.activations.split(","):
        for size in map(int, args.sizes.split(",")):
            completed = subprocess.run(
                [sys.executable, __file__, "--worker", activation, str(size), "--repeats", str(args.repeats)],
                capture_output=True, text=True, check=True,
            )
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            peer_time, peer_rss = PEER.get((activation, size), (float("nan"), float("nan")))
            print(f"{activation:>10} {size:>6} {row['first_s']:>10.3f} {row['median_s']:>11.4f} "
                  f"{row['peak_mib']:>15.0f} {peer_time:>16.4f} {peer_rss:>15.0f}", flush=True)


if __name__ == "__main__":
    main()
