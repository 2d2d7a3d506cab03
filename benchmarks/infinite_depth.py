"""What does depth L → ∞ look like? The infinite-width residual deep-linear DMFT at growing L and its
1/L extrapolation (issue 12's infinite-depth table).

Residual linear μP networks h^{ℓ+1} = h^ℓ + (α/L^β) W^ℓ h^ℓ/√N, with α = 1 and β = ½ (depth-μP;
`--exponent 1` is CompleteP's 1/L), at γ0 = 1 on the P = D = 8 task of
`residual_vs_networks.py`, trained by gradient flow. `dmft.solvers.infinite_depth_limit` solves
each depth and extrapolates the training loss to L → ∞ from the two deepest (Richardson in 1/L).
Its error is the change from the previous pair, and the observed rate p is set by
|𝓛(L) − 𝓛(L/2)| ∝ L^{−p}. Printed as a markdown table: the loss at the saved times for each L,
the L → ∞ row with its error, and |𝓛(L) − 𝓛(∞)|.

    python benchmarks/infinite_depth.py                       # L = 2 … 32
    python benchmarks/infinite_depth.py --depths 2,4,8 --exponent 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from dmft import Architecture, Data, Spec, Training  # noqa: E402
from dmft.solvers import DeepLinearDMFT, infinite_depth_limit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="2,4,8,16,32")
    parser.add_argument("--times", default="0.5,1,2")
    parser.add_argument("--dt", type=float, default=0.05,
                        help="the closure's time step (its memory grows as (L·t/dt)²)")
    parser.add_argument("--gamma0", type=float, default=1.0)
    parser.add_argument("--exponent", type=float, default=0.5, help="branch exponent β")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    times = (0.0, *(float(t) for t in args.times.split(",")))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = 0.5 * np.sign(rng.standard_normal(8))
    spec = Spec(Architecture(depths[0], "linear", "mup", gamma0=args.gamma0, residual_scale=1.0,
                             residual_exponent=args.exponent), Data(x, y), Training(times))
    start = time.perf_counter()
    result = infinite_depth_limit(spec, depths, DeepLinearDMFT(dt=args.dt))
    wall = time.perf_counter() - start
    shown = times[1:]
    print(f"residual linear μP, α = 1, β = {args.exponent:g}, γ0 = {args.gamma0:g}, gradient flow "
          f"(dt = {args.dt:g}); training loss 𝓛(t) (𝓛(0) = {result.loss[0][0]:.4f}); {wall:.0f} s")
    print("| L | " + " | ".join(f"𝓛(t = {t:g})" for t in shown) + " | max |𝓛(L) − 𝓛(∞)| |")
    print("|---" * (len(shown) + 2) + "|")
    for depth, loss in zip(result.depths, result.loss):
        gap = np.max(np.abs(loss[1:] - result.limit[1:]))
        print(f"| {depth} | " + " | ".join(f"{v:.5f}" for v in loss[1:]) + f" | {gap:.2e} |")
    print("| ∞ (1/L) | " + " | ".join(f"{v:.5f} ± {e:.1e}" for v, e
                                      in zip(result.limit[1:], result.error[1:])) + " | |")
    print(f"observed rate p = {result.rate:.2f} (|𝓛(L) − 𝓛(L/2)| ∝ L^-p)")


if __name__ == "__main__":
    main()
