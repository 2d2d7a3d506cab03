"""Progressive sharpening up to the edge of stability: two-layer tanh μP networks (γ0 = 1,
P = 8) trained by full-batch GD at η0·λ_max(K0)/P = 1.2, the exact infinite-width DMFT against
real networks of widths 256–4096.

    python examples/edge_of_stability/run.py            # full (a few minutes)
    python examples/edge_of_stability/run.py --quick    # tiny version (tests)

Writes edge_of_stability.pdf/.png and edge_of_stability.npz next to this file (or in --out) and
prints the loss and η0·λ_max(K)/P per step, for the limit and every width.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import finite_step as fs  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny version: 4 steps, 2 widths")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--ratio", type=float, default=1.2, help="η0·λ_max(K0)/P")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    steps = args.steps or (4 if args.quick else 40)
    seeds = args.seeds or (2 if args.quick else 4)
    widths = fs.QUICK_WIDTHS if args.quick else fs.WIDTHS
    particles = 1024 if args.quick else 8192
    spec, eta = fs.gd_spec(args.ratio, steps, particles)
    print(f"lambda_max(K0)/P = {args.ratio / eta:.6f}; eta0 = {eta:.6f} "
          f"(eta0*lambda_max(K0)/P = {args.ratio:g}); steps {steps}, widths {list(widths)}, "
          f"seeds {seeds}, particles {particles}")
    lim = fs.limit(spec)
    if isinstance(lim, str):
        print("the limit diverged:", lim)
        return 1
    ens = fs.ensembles(spec, widths, seeds)
    fs.print_table(eta, lim, ens)
    sharp = eta * lim["sharpness"]
    summary = {
        "eta0": eta, "ratio": args.ratio,
        "limit_peak_eta_sharpness": float(sharp.max()), "limit_peak_step": int(sharp.argmax()),
        "limit_final_eta_sharpness": float(sharp[-1]),
        "limit_final_loss": float(lim["loss_train"][-1]),
        "max_deviation": {str(w): {"loss_over_L0": d[0], "sharpness_rel": d[1]}
                          for w, d in fs.deviations(lim, ens, eta).items()},
    }
    print(json.dumps(summary, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = {"eta0": np.asarray(eta), "limit_loss": lim["loss_train"],
              "limit_sharpness": lim["sharpness"]}
    for w, a in ens.items():
        arrays[f"N{w}_loss"] = a["loss"]
        arrays[f"N{w}_sharpness"] = a["sharpness"]
    np.savez(args.out / "edge_of_stability.npz", **arrays)
    paths = fs.figure(eta, args.ratio, lim, ens, args.out / "edge_of_stability")
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
