"""Deep μP DMFT (Monte Carlo) against trained networks on the issue's P = 8 task (issue 3).

P = D = 8 Gaussian inputs, ±1 labels (rng seed 0), L = 2, γ0 = 1, saved at t = 0, 0.5, …, 4.
Prints, per activation, the training loss at t = 2 and t = 4:
- networks: centred gradient descent (step 0.025) at each width, mean ± standard error over
  seeds, and their weighted fit mean(N) = limit + b/N;
- DMFT: for each (S, dt), mean ± standard error over `--replicas` seeds, the mean reported
  (batch-means) error, the deviation from the networks' limit in % of 𝓛(0), and the largest gap
  between the read-out f and the NTK flow (1/P)∫KΔ (O(dt²) for smooth φ; the sliding-mode term
  of derivations/dmft.md eq:sliding for ReLU).

    python benchmarks/dmft_vs_networks.py                          # the table of the issue note
    python benchmarks/dmft_vs_networks.py --widths 512 --seeds 16 --samples 4096   # quick look
    python benchmarks/dmft_vs_networks.py --activations relu --widths 8192 --seeds 32 \
        --first-seed 1000 --samples 65536 --dts 0.1                # the width-8192 check (25 min)
"""

from __future__ import annotations

import argparse
import os
import sys

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from dmft import Architecture, Data, Spec, Training  # noqa: E402
from dmft._progress import set_progress  # noqa: E402
from dmft.sampler import GradientDescent, sample  # noqa: E402
from dmft.sampler._compare import fit_inverse_width  # noqa: E402
from dmft.solvers._deep_nonlinear import MonteCarloDMFT  # noqa: E402

MID, END = 4, 8  # indices of t = 2 and t = 4


def p8_spec(activation: str) -> Spec:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = np.sign(rng.standard_normal(8))
    return Spec(Architecture(2, activation, "mup", gamma0=1.0), Data(x, y),
                Training(tuple(np.linspace(0, 4, 9))))


def mean_err(values):
    values = np.asarray(values)
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--widths", default="512,1024,2048,4096")
    parser.add_argument("--seeds", default="128,128,64,32", help="networks per width")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds of the networks start here")
    parser.add_argument("--samples", default="4096,16384,65536", help="DMFT sample counts S")
    parser.add_argument("--dts", default="0.1,0.05")
    parser.add_argument("--replicas", type=int, default=4)
    args = parser.parse_args()
    set_progress(False)
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    seeds = (seeds * len(widths))[: len(widths)] if len(seeds) == 1 else seeds
    for activation in args.activations.split(","):
        spec = p8_spec(activation)
        y = spec.data.y_train
        print(f"\n{activation}: loss at t = 2 / t = 4")
        print("| source | loss(2) | loss(4) | reported err(4) | dev. from limit (2) / (4) "
              "| read-out − NTK flow |")
        print("|---|---|---|---|---|---|")
        means, errors = [], []
        for width, count in zip(widths, seeds):
            members = list(range(args.first_seed, args.first_seed + count))
            losses = sample(spec, [width], members, method=GradientDescent(dt=0.025),
                            centered=True)[width]["loss_train"]
            m, e = mean_err(losses)
            means.append(m)
            errors.append(e)
            print(f"| networks N = {width} ({count} seeds) | {m[MID]:.4f} ± {e[MID]:.4f} "
                  f"| {m[END]:.4f} ± {e[END]:.4f} | | | |", flush=True)
        limit = None
        if len(widths) > 1:
            fit = fit_inverse_width(widths, np.array(means), np.array(errors))
            limit = fit.limit
            print(f"| networks, fit limit + b/N | {fit.limit[MID]:.4f} ± {fit.limit_err[MID]:.4f} "
                  f"| {fit.limit[END]:.4f} ± {fit.limit_err[END]:.4f} | | | |", flush=True)
        for dt in (float(d) for d in args.dts.split(",")):
            for num_samples in (int(s) for s in args.samples.split(",")):
                losses, reported, gaps = [], [], []
                for seed in range(args.replicas):
                    sol = MonteCarloDMFT(num_samples=num_samples, dt=dt, seed=seed).solve(spec)
                    losses.append(sol.losses(y)["loss_train"])
                    reported.append(sol.stderr["loss_train"][END])
                    gaps.append(sol.diagnostics["ntk_flow_gap"])
                m, e = mean_err(losses)
                deviation = ""
                if limit is not None:
                    dev = 100 * (m - limit) / m[0]
                    deviation = f"{dev[MID]:+.2f} % / {dev[END]:+.2f} %"
                print(f"| DMFT S = {num_samples}, dt = {dt} ({args.replicas} seeds) "
                      f"| {m[MID]:.4f} ± {e[MID]:.4f} | {m[END]:.4f} ± {e[END]:.4f} "
                      f"| {np.mean(reported):.4f} | {deviation} | {np.mean(gaps):.4f} |",
                      flush=True)


if __name__ == "__main__":
    main()
