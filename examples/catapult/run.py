"""A catapult: two-layer tanh μP networks (γ0 = 1, P = 8) trained by full-batch GD at
η0·λ_max(K0)/P = 1.8. The loss falls, rises for a few steps while η0·λ_max(K)/P shoots past 2,
then the kernel flattens (η0·λ_max(K)/P back below 2) and training converges. The exact
infinite-width DMFT against real networks of widths 256–4096, and the lazy limit (the NTK
parameterization's closed form at the same η0, which cannot change its kernel), at this η0 and
at η0·λ_max(K0)/P = `--lazy-ratio` (default 2.2 > 2), where the lazy limit diverges.

    python examples/catapult/run.py            # full (a few minutes)
    python examples/catapult/run.py --quick    # tiny version (tests)

Writes catapult.pdf/.png and catapult.npz next to this file (or in --out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_of_stability"))
import numpy as np  # noqa: E402

import finite_step as fs  # noqa: E402


def lazy_run(ratio: float, steps: int):
    """The lazy (NTK-parameterization) limit by GD at η0 = ratio·P/λ_max(K0): arrays or the
    divergence message."""
    spec, eta = fs.gd_spec(ratio, steps, 0, parameterization="ntk")
    return fs.limit(spec), eta


def outcome(result) -> str:
    """"diverged: ..." when the solve raised or the loss ends above its start, else converged."""
    if isinstance(result, str):
        return "diverged: " + result
    loss = result["loss_train"]
    if not np.isfinite(loss[-1]) or loss[-1] > loss[0]:
        return f"diverged: the loss grew from {loss[0]:.3g} to {loss[-1]:.3g}"
    return f"converged to loss {loss[-1]:.3g}"


def main(argv=None) -> int:
    def add_lazy_ratio(parser):
        parser.add_argument("--lazy-ratio", type=float, default=2.2,
                            help="a second η0·λ_max(K0)/P for the lazy limit")

    args = fs.parse_args(__doc__, ratio=1.8, quick_steps=8, full_steps=30, argv=argv,
                         add_arguments=add_lazy_ratio)
    out = args.out or Path(__file__).resolve().parent
    steps, particles = args.steps, args.particles
    solved = fs.limit_and_widths(args)
    if solved is None:
        return 1
    spec, eta, lim, ens = solved

    lazy, _ = lazy_run(args.ratio, steps)
    lazy_hi, eta_hi = lazy_run(args.lazy_ratio, steps)
    lazy_text = outcome(lazy_hi)
    print(f"lazy limit at eta0*lambda_max(K0)/P = {args.ratio:g}: final loss "
          f"{lazy['loss_train'][-1]:.5f}, eta0*lambda/P = {eta * lazy['sharpness'][-1]:.4f} "
          "(constant kernel)")
    print(f"lazy limit at eta0*lambda_max(K0)/P = {args.lazy_ratio:g}: {lazy_text}")

    # the lazy GD modes at the higher rate: |1 - eta0 lambda_i/P| per eigenvalue of K0
    base_spec, _ = fs.gd_spec(args.lazy_ratio, 1, particles)
    kernels = fs.dmft.kernels(base_spec)
    eig = np.linalg.eigvalsh(kernels["ntk_L2"]) / spec.data.num_train
    factors = np.abs(1 - eta_hi * eig)
    print(f"lazy GD factors |1 - eta0 lambda_i/P| at ratio {args.lazy_ratio:g}: "
          f"{np.round(factors, 3).tolist()}")
    # and the μP limit at the higher rate
    spec_hi, _ = fs.gd_spec(args.lazy_ratio, steps, particles)
    mup_hi = fs.limit(spec_hi)
    mup_hi_text = outcome(mup_hi)
    print(f"muP limit at eta0*lambda_max(K0)/P = {args.lazy_ratio:g}: {mup_hi_text}")

    loss = lim["loss_train"]
    first_min = int(np.argmax(np.diff(loss) > 0))  # the step before the first rise
    peak = first_min + int(np.argmax(loss[first_min:first_min + 10]))
    sharp = eta * lim["sharpness"]
    summary = {
        "eta0": eta, "ratio": args.ratio,
        "limit_loss_before_spike": float(loss[first_min]), "limit_spike_step": peak,
        "limit_spike_loss": float(loss[peak]),
        "limit_spike_factor": float(loss[peak] / loss[first_min]),
        "limit_peak_eta_sharpness": float(sharp.max()), "limit_peak_step": int(sharp.argmax()),
        "limit_final_eta_sharpness": float(sharp[-1]), "limit_final_loss": float(loss[-1]),
        "lazy_final_loss_same_eta": float(lazy["loss_train"][-1]),
        "lazy_higher_ratio": lazy_text, "mup_higher_ratio": mup_hi_text,
        "max_deviation": fs.deviation_summary(lim, ens, eta),
    }
    print(json.dumps(summary, indent=1))
    fs.save_arrays(out / "catapult.npz", eta, lim, ens, lazy_loss=lazy["loss_train"],
                   lazy_sharpness=lazy["sharpness"])
    label = r"lazy limit (NTK param.), same $\eta_0$"
    paths = fs.figure(eta, args.ratio, lim, ens, out / "catapult",
                      lazy=(np.arange(steps + 1), lazy["loss_train"], lazy["sharpness"], label))
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
