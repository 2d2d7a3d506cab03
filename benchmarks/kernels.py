"""Speed and memory of the infinite-width kernels: NNGP + NTK of a depth-3 MLP.

The set-up of the published neural-tangents benchmark (neural-tangents 0.6.5, analytic kernels): three hidden
layers, σ_w = 1.5, σ_b = 0.05, inputs N(0, 1) with D = 100, float64, output-layer NNGP and NTK on
train × train. Each case runs in its own process, so the peak RSS is that of the whole process
(imports included), as for the peer's numbers.

    python benchmarks/kernels.py                      # ReLU and Erf, P = 1000 … 8000
    python benchmarks/kernels.py --sizes 1000 --repeats 7
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

    arch = dmft.Architecture(3, activation, "ntk", sigma_w=1.5, sigma_b=0.05)
    x = jax.random.normal(jax.random.key(0), (size, 100))

    def run():
        out = dmft.layer_kernels(arch, x, layers=(4,), with_derivative=False)
        return out.nngp[-1], out.ntk[-1]

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_s": first, "median_s": statistics.median(times), "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", default="relu,erf")
    parser.add_argument("--sizes", default="1000,2000,4000,8000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("ACTIVATION", "P"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeats)))
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
