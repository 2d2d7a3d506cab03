"""Progressive sharpening up to the edge of stability: two-layer tanh μP networks (γ0 = 1,
P = 8) trained by full-batch GD at η0·λ_max(K0)/P = 1.2, the exact infinite-width DMFT against
real networks of widths 256–4096.

    python examples/edge_of_stability/run.py            # full (a few minutes)
    python examples/edge_of_stability/run.py --quick    # tiny version (tests)

Writes edge_of_stability.pdf/.png and edge_of_stability.npz next to this file (or in --out) and
prints the loss and η0·λ_max(K)/P per step, for the limit and every width.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finite_step as fs  # noqa: E402


def main(argv=None) -> int:
    args = fs.parse_args(__doc__, ratio=1.2, quick_steps=4, full_steps=40, argv=argv)
    out = args.out or Path(__file__).resolve().parent
    solved = fs.limit_and_widths(args)
    if solved is None:
        return 1
    _, eta, lim, ens = solved
    sharp = eta * lim["sharpness"]
    summary = {
        "eta0": eta, "ratio": args.ratio,
        "limit_peak_eta_sharpness": float(sharp.max()), "limit_peak_step": int(sharp.argmax()),
        "limit_final_eta_sharpness": float(sharp[-1]),
        "limit_final_loss": float(lim["loss_train"][-1]),
        "max_deviation": fs.deviation_summary(lim, ens, eta),
    }
    print(json.dumps(summary, indent=1))
    fs.save_arrays(out / "edge_of_stability.npz", eta, lim, ens)
    paths = fs.figure(eta, args.ratio, lim, ens, out / "edge_of_stability")
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
