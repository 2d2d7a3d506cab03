"""Do the width and depth limits commute? Residual linear depth-μP networks (issue 12's check).

Residual linear μP networks (α = 1, branch exponent β = ½: depth-μP, where the literature —
Bordelon, Noci, Li, Hanin, Pehlevan 2023; Yang, Yu, Zhu, Hayou 2023 — finds that the limits
commute) on the P = D = 8 task of `residual_vs_networks.py`, trained by GD at η0 for `--steps`
steps. The observable is the training loss 𝓛 after the last step.

- Width first: the exact infinite-width deep-linear DMFT at each depth L, 𝓛_∞(L), then a fit
  a + b/L over the depths gives 𝓛_{∞,∞}.
- Depth first: the sampler's ensembles at each width N give 𝓛(N, L) ± s.e. A fit in 1/L at each
  N gives 𝓛(N, ∞), and a fit of those in 1/N gives 𝓛_{∞,∞} again.
- Also per depth: the networks' 1/N fit against 𝓛_∞(L), the infinite-width check at each depth.

The limits commute on this task when the two corner values agree within their errors. The fits
are weighted least squares a + b/x (`dmft.sampler.fit_inverse_width`).

    python benchmarks/width_depth_commutation.py
    python benchmarks/width_depth_commutation.py --depths 2,4,8 --widths 128,256,512 --seeds 4
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
from dmft.sampler import ensemble_statistics, fit_inverse_width, sample  # noqa: E402
from dmft.solvers import DeepLinearDMFT  # noqa: E402


def residual_linear_spec(depth: int, gamma0: float, eta: float, steps: int) -> Spec:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = 0.5 * np.sign(rng.standard_normal(8))
    return Spec(Architecture(depth, "linear", "mup", gamma0=gamma0, residual_scale=1.0),
                Data(x, y), Training((0.0, eta * steps), optimizer="gd", learning_rate=eta))


def final_loss(f, y) -> np.ndarray:
    """𝓛 = (1/2P) Σ (f − y)² at the last saved step, over any leading axes of f (..., T, P)."""
    return 0.5 * np.mean((np.asarray(f)[..., -1, :] - y) ** 2, axis=-1)


def corner(xs, means, errors):
    """The a of a + b/x fitted over xs, with its error and χ²/dof."""
    fit = fit_inverse_width(list(xs), np.asarray(means)[:, None], np.asarray(errors)[:, None])
    chi2 = float(fit.chi2[0] / fit.dof) if fit.dof > 0 else float("nan")
    return float(fit.limit[0]), float(fit.limit_err[0]), chi2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="2,4,8,16")
    parser.add_argument("--widths", default="128,256,512,1024")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--gamma0", type=float, default=1.0)
    parser.add_argument("--eta", type=float, default=0.5, help="learning rate η0")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    start = time.perf_counter()
    limit, nets, nets_err = {}, {}, {}
    for depth in depths:
        spec = residual_linear_spec(depth, args.gamma0, args.eta, args.steps)
        y = np.asarray(spec.data.y_train)
        limit[depth] = float(final_loss(DeepLinearDMFT().solve(spec).f_train, y))
        samples = sample(spec, widths, args.seeds, hessian_steps=0)
        for width in widths:
            stats = ensemble_statistics(final_loss(samples[width]["f_train"], y), width)
            nets[width, depth], nets_err[width, depth] = float(stats["mean"]), float(stats["stderr"])
        print(f"L = {depth:2d} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nresidual linear depth-μP (α = 1, β = ½), γ0 = {args.gamma0:g}, GD η0 = {args.eta:g}, "
          f"loss after {args.steps} steps; {args.seeds} seeds per width")
    print(f"{'':>10}" + "".join(f" {'L=' + str(d):>17}" for d in depths) + f" {'L→∞ (1/L fit)':>22}")
    depth_limits = []
    for width in widths:
        row = [(nets[width, d], nets_err[width, d]) for d in depths]
        a, a_err, chi2 = corner(depths, *zip(*row))
        depth_limits.append((a, a_err))
        print(f"{'N=' + str(width):>10}" + "".join(f" {m:10.5f}±{e:.5f}" for m, e in row)
              + f" {a:10.5f}±{a_err:.5f} (χ²/dof {chi2:.2f})")
    width_fits = [corner(widths, [nets[w, d] for w in widths], [nets_err[w, d] for w in widths])
                  for d in depths]
    print(f"{'N→∞ fit':>10}" + "".join(f" {a:10.5f}±{e:.5f}" for a, e, _ in width_fits))
    print(f"{'DMFT N=∞':>10}" + "".join(f" {limit[d]:17.5f}" for d in depths))
    exact_corner = corner(depths, [limit[d] for d in depths], [1e-9] * len(depths))[0]
    depth_first, depth_first_err, _ = corner(widths, *zip(*depth_limits))
    print(f"\nwidth first (DMFT at each L, then 1/L):      𝓛_∞,∞ = {exact_corner:.5f}")
    print(f"depth first (networks: 1/L at each N, then 1/N): 𝓛_∞,∞ = {depth_first:.5f} "
          f"± {depth_first_err:.5f}")
    gap = depth_first - exact_corner
    print(f"difference {gap:+.5f} = {gap / depth_first_err:+.2f} standard errors; per depth, the "
          "networks' 1/N fit minus the DMFT: "
          + ", ".join(f"L={d}: {(a - limit[d]) / e:+.2f}σ" for d, (a, e, _) in zip(depths, width_fits)))


if __name__ == "__main__":
    main()
