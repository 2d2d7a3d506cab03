"""μP DMFT (Monte Carlo) against trained networks on the issue's P = 8 task (issue 3).

P = D = 8 Gaussian inputs, ±1 labels (rng seed 0), L = 2 (or `--hidden-layers`), γ0 = 1, saved at
t = 0, 0.5, …, 4. Prints, per activation, the training loss at t = 2 and t = 4:
- networks: centred gradient descent (step 0.025, or each of `--steps`) at each width, mean ±
  standard error over seeds, and their weighted fit mean(N) = limit + b/N; with several steps,
  the paired (same seeds) difference to the smallest step, i.e. the step's offset from the flow;
- DMFT: for each (S, dt), mean ± standard error over `--replicas` seeds; the seed-to-seed
  spread and the mean reported (batch-means) error at t = 2 / 4, which calibrate the error bars;
  the deviation from the networks' limit in % of 𝓛(0); and the largest gap between the read-out
  f and the NTK flow (1/P)∫KΔ (O(dt²) for smooth φ; the sliding neurons of
  derivations/dmft.md eq:sliding for ReLU).

    python benchmarks/dmft_vs_networks.py                          # the table of the issue note
    python benchmarks/dmft_vs_networks.py --widths 512 --seeds 16 --samples 4096   # quick look
    python benchmarks/dmft_vs_networks.py --activations relu --widths 8192 --seeds 32 \
        --first-seed 1000 --samples 65536 --dts 0.1                # the width-8192 check (25 min)
    python benchmarks/dmft_vs_networks.py --hidden-layers 1 --activations relu,leaky_relu,abs,gelu \
        --widths 1024,4096 --seeds 128,64 --samples 65536 --dts 0.1,0.05,0.025,0.0125
    python benchmarks/dmft_vs_networks.py --activations relu --widths 1024 --seeds 24 \
        --first-seed 500 --steps 0.05,0.025,0.0125 --samples 4096 --dts 0.1   # step offset
    python benchmarks/dmft_vs_networks.py --activations relu,tanh --widths 1024 --seeds 4 \
        --samples 4096,16384 --dts 0.1 --replicas 16 --first-dmft-seed 300     # error bars
    python benchmarks/dmft_vs_networks.py --activations tanh --gamma0 0.2 --widths 1024 --seeds 4 \
        --samples 4096 --dts 0.1 --replicas 8 --first-dmft-seed 300            # ... at small γ0
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
from dmft.sampler import FixedSteps, sample  # noqa: E402
from dmft.sampler._compare import fit_inverse_width  # noqa: E402
from dmft.solvers._deep_nonlinear import MonteCarloDMFT  # noqa: E402

MID, END = 4, 8  # indices of t = 2 and t = 4


def p8_spec(activation: str, hidden_layers: int = 2, gamma0: float = 1.0) -> Spec:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = np.sign(rng.standard_normal(8))
    return Spec(Architecture(hidden_layers, activation, "mup", gamma0=gamma0), Data(x, y),
                Training(tuple(np.linspace(0, 4, 9))))


def mean_err(values):
    values = np.asarray(values)
    return values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values))


def _row(label, m, e, *rest):
    cells = " | ".join(str(x) for x in rest)
    print(f"| {label} | {m[MID]:.4f} ± {e[MID]:.4f} | {m[END]:.4f} ± {e[END]:.4f} | {cells} |",
          flush=True)


def networks(spec, widths, seeds, first_seed, steps):
    """Rows per width and step; returns the 1/N fit limit at the first step (None for one width)."""
    means, errors = [], []
    for width, count in zip(widths, seeds):
        members = list(range(first_seed, first_seed + count))
        losses = {step: sample(spec, [width], members, method=FixedSteps(dt=step),
                               centered=True)[width]["loss_train"] for step in steps}
        for step, values in losses.items():
            _row(f"networks N = {width}, step {step} ({count} seeds)", *mean_err(values), "", "",
                 "", "")
        finest = losses[min(steps)]
        for step in steps:
            if step != min(steps):
                _row(f"  paired: step {step} − step {min(steps)}",
                     *mean_err(losses[step] - finest), "", "", "", "")
        m, e = mean_err(losses[steps[0]])
        means.append(m)
        errors.append(e)
    if len(widths) < 2:
        return None
    fit = fit_inverse_width(widths, np.array(means), np.array(errors))
    _row("networks, fit limit + b/N", fit.limit, fit.limit_err, "", "", "", "")
    return fit.limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--hidden-layers", type=int, default=2)
    parser.add_argument("--gamma0", type=float, default=1.0)
    parser.add_argument("--widths", default="512,1024,2048,4096")
    parser.add_argument("--seeds", default="128,128,64,32", help="networks per width")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds of the networks start here")
    parser.add_argument("--steps", default="0.025", help="gradient-descent steps of the networks")
    parser.add_argument("--samples", default="4096,16384,65536", help="DMFT sample counts S")
    parser.add_argument("--dts", default="0.1,0.05")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--first-dmft-seed", type=int, default=0)
    args = parser.parse_args()
    set_progress(False)
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    seeds = (seeds * len(widths))[: len(widths)] if len(seeds) == 1 else seeds
    steps = [float(s) for s in args.steps.split(",")]
    for activation in args.activations.split(","):
        spec = p8_spec(activation, args.hidden_layers, args.gamma0)
        y = spec.data.y_train
        print(f"\n{activation}, L = {args.hidden_layers}, γ0 = {args.gamma0}: loss at t = 2 / t = 4")
        print("| source | loss(2) | loss(4) | spread(2) / (4) | reported err(2) / (4) "
              "| dev. from limit (2) / (4) | read-out − NTK flow |")
        print("|---|---|---|---|---|---|---|")
        limit = networks(spec, widths, seeds, args.first_seed, steps)
        for dt in (float(d) for d in args.dts.split(",")):
            for num_samples in (int(s) for s in args.samples.split(",")):
                losses, reported, gaps = [], [], []
                for i in range(args.replicas):
                    sol = MonteCarloDMFT(num_samples=num_samples, dt=dt,
                                         seed=args.first_dmft_seed + i).solve(spec)
                    losses.append(sol.losses(y)["loss_train"])
                    reported.append(sol.stderr["loss_train"])
                    gaps.append(sol.diagnostics["ntk_flow_gap"])
                m, e = mean_err(losses)
                spread = np.std(losses, axis=0, ddof=1)
                rep = np.mean(reported, axis=0)
                deviation = ""
                if limit is not None:
                    dev = 100 * (m - limit) / m[0]
                    deviation = f"{dev[MID]:+.2f} % / {dev[END]:+.2f} %"
                _row(f"DMFT S = {num_samples}, dt = {dt} ({args.replicas} seeds)", m, e,
                     f"{spread[MID]:.4f} / {spread[END]:.4f}", f"{rep[MID]:.4f} / {rep[END]:.4f}",
                     deviation, f"{np.mean(gaps):.4f}")


if __name__ == "__main__":
    main()
