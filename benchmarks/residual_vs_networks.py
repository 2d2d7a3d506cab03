"""Residual depth-μP DMFT (Monte Carlo, gradient descent) against residual networks trained by the
sampler, 1/N-extrapolated (issue 12's check).

P = D = 8 Gaussian inputs, ±½ labels (rng seed 0), h^{ℓ+1} = h^ℓ + (α/L^β)·W^ℓφ(h^ℓ)/√N with
α = 1, trained by gradient descent at η0 for `--steps` steps, every step saved. For each
(activation, L, γ0): the sampler's ensembles at `--widths` (`--seeds` members each) give
mean(N) ± standard error of the training loss, fitted by mean(N) = limit + b/N
(`dmft.sampler.fit_inverse_width`); the Monte Carlo DMFT gives the limit directly, with the
standard error of `--replicas` independent replicas. Printed per case, over the saved steps:

- ``max|Δ|/𝓛0``: the largest |DMFT − extrapolated networks| in % of the initial loss;
- ``criterion``: max |Δ| / (3σ + 0.01·𝓛0), σ the two errors combined — the issue's pass mark is
  ≤ 1 at every saved step;
- ``χ²/dof``: how well a + b/N describes the widths (dof = #widths − 2; "-" for two widths).

    python benchmarks/residual_vs_networks.py                        # the issue's grid
    python benchmarks/residual_vs_networks.py --depths 2 --activations tanh --gamma0 1 \
        --widths 256,512 --seeds 4 --samples 2048                    # a quick look
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
from dmft.solvers import MonteCarloDMFT  # noqa: E402

sys.path.append(_HERE)  # the package is imported: the shared helpers can be found now
from _against_networks import criterion, networks_limit  # noqa: E402


def residual_spec(activation: str, depth: int, gamma0: float, eta: float, steps: int,
                  exponent: float) -> Spec:
    """The P = 8 task on a residual μP network of `depth` hidden layers, GD at η0 = `eta`."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    y = 0.5 * np.sign(rng.standard_normal(8))
    times = tuple(eta * k for k in range(steps + 1))
    return Spec(Architecture(depth, activation, "mup", gamma0=gamma0, residual_scale=1.0,
                             residual_exponent=exponent),
                Data(x, y), Training(times, optimizer="gd", learning_rate=eta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", default="tanh,relu")
    parser.add_argument("--depths", default="2,4,8")
    parser.add_argument("--gamma0", default="1,0.5")
    parser.add_argument("--widths", default="512,1024,2048")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8192, help="Monte Carlo samples")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--eta", type=float, default=0.5, help="learning rate η0")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--exponent", type=float, default=0.5, help="branch exponent β")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"residual μP, α = 1, β = {args.exponent:g}, GD η0 = {args.eta:g}, {args.steps} steps; "
          f"widths {widths} × {args.seeds} seeds; DMFT S = {args.samples} × {args.replicas} "
          "replicas")
    print(f"{'φ':>5} {'L':>3} {'γ0':>5} | {'𝓛0':>7} {'𝓛(T) DMFT':>10} {'𝓛(T) nets':>10} | "
          f"{'max|Δ|/𝓛0':>10} {'criterion':>9} {'χ²/dof':>7} {'div':>4} | {'wall s':>6}")
    for activation in args.activations.split(","):
        for depth in map(int, args.depths.split(",")):
            for gamma0 in map(float, args.gamma0.split(",")):
                start = time.perf_counter()
                spec = residual_spec(activation, depth, gamma0, args.eta, args.steps,
                                     args.exponent)
                nets, nets_err, chi2, diverged = networks_limit(spec, widths, args.seeds)
                sol = MonteCarloDMFT(num_samples=args.samples, replicas=args.replicas).solve(spec)
                loss = np.asarray(sol.losses(spec.data.y_train)["loss_train"])
                gap, worst = criterion(loss, sol.stderr["loss_train"], nets, nets_err)
                fit_quality = "-" if np.isnan(chi2) else f"{chi2:.2f}"
                print(f"{activation:>5} {depth:>3} {gamma0:>5g} | {loss[0]:7.4f} {loss[-1]:10.5f} "
                      f"{nets[-1]:10.5f} | {gap:9.2f}% {worst:9.2f} "
                      f"{fit_quality:>7} {diverged:>4} | {time.perf_counter() - start:6.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
