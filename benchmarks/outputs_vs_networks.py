"""Several outputs and cross-entropy: the μP DMFT (gradient descent) against networks trained by the
sampler, 1/N-extrapolated (issue 13's check).

P = D = 8 Gaussian inputs (rng seed 0). The targets are either 3 classes, the argmax of a random
linear teacher (``ce3``, cross-entropy), or 2 outputs tanh(x A) (``mse2``, MSE). μP networks of
`--depths` hidden layers are trained by gradient descent at η0 for `--steps` steps, and every
step is saved. For each (task, φ, L, γ0) the sampler's ensembles at `--widths` (`--seeds` members
each) give the training loss mean(N) ± its standard error, fitted by mean(N) = limit + b/N. The
DMFT gives the limit directly: the exact deep-linear closure for φ = x under the MSE, else the
two-layer particle solver for L = 1 and Monte Carlo for L ≥ 2.
Printed per case, over the saved steps:

- ``max|Δ|/𝓛0``: the largest |DMFT − extrapolated networks|, in % of the initial loss;
- ``criterion``: max |Δ| / (3σ + 0.01·𝓛0), with σ the two errors combined. The issue's pass mark
  is ≤ 1 at every saved step;
- ``χ²/dof``: how well a + b/N describes the widths (dof = #widths − 2; "-" for two widths).

    python benchmarks/outputs_vs_networks.py                         # the full grid
    python benchmarks/outputs_vs_networks.py --tasks ce3 --activations tanh --depths 1 \
        --gamma0 1 --widths 256,1024 --seeds 8                       # a quick look
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

from dmft import Architecture, Data, DmftError, Spec, Training  # noqa: E402
from dmft.solvers import DeepLinearDMFT, MonteCarloDMFT, TwoLayerDMFT  # noqa: E402

sys.path.append(_HERE)  # the package is imported: the shared helpers can be found now
from _against_networks import criterion, networks_limit  # noqa: E402


def task_data(task: str) -> tuple[Data, str]:
    """The P = 8 task's data and its loss name."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    teacher = rng.standard_normal((8, 3))
    if task == "ce3":
        return Data(x, np.argmax(x @ teacher, axis=1).astype(float)), "cross_entropy"
    if task == "mse2":
        return Data(x, np.tanh(x @ teacher[:, :2])), "mse"
    raise SystemExit(f"--tasks: unknown task {task!r} (ce3, mse2)")


def task_spec(task: str, activation: str, depth: int, gamma0: float, eta: float, steps: int
              ) -> Spec:
    data, loss = task_data(task)
    times = tuple(eta * k for k in range(steps + 1))
    return Spec(Architecture(depth, activation, "mup", gamma0=gamma0), data,
                Training(times, optimizer="gd", learning_rate=eta, loss=loss))


def dmft_loss(spec: Spec, samples: int, replicas: int):
    """The DMFT training loss and its standard error: the exact deep-linear closure for φ = x under
    the MSE (error 0), two-layer particles for L = 1, Monte Carlo otherwise."""
    if spec.architecture.activation == "linear" and spec.training.loss == "mse":
        solution = DeepLinearDMFT().solve(spec)
        loss = np.asarray(solution.losses(spec.data.y_train)["loss_train"])
        return loss, np.zeros_like(loss)
    if spec.architecture.hidden_layers == 1:
        solution = TwoLayerDMFT(particles=samples, batches=8).solve(spec)
    else:
        solution = MonteCarloDMFT(num_samples=samples, replicas=replicas).solve(spec)
    loss = np.asarray(solution.losses(spec.data.y_train)["loss_train"])
    return loss, np.asarray(solution.stderr["loss_train"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="ce3,mse2")
    parser.add_argument("--activations", default="tanh,relu")
    parser.add_argument("--depths", default="1,2")
    parser.add_argument("--gamma0", default="1,0.5")
    parser.add_argument("--widths", default="512,1024,2048")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8192, help="DMFT particles / samples")
    parser.add_argument("--replicas", type=int, default=2, help="Monte Carlo replicas")
    parser.add_argument("--eta", type=float, default=0.5, help="learning rate η0")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    print(f"μP, GD η0 = {args.eta:g}, {args.steps} steps; widths {widths} × {args.seeds} seeds; "
          f"DMFT {args.samples} samples")
    print(f"{'task':>5} {'φ':>5} {'L':>2} {'γ0':>4} | {'𝓛0':>7} {'𝓛(T) DMFT':>10} "
          f"{'𝓛(T) nets':>10} | {'max|Δ|/𝓛0':>10} {'criterion':>9} {'χ²/dof':>7} {'div':>4} | "
          f"{'wall s':>6}")
    for task in args.tasks.split(","):
        for activation in args.activations.split(","):
            for depth in map(int, args.depths.split(",")):
                for gamma0 in map(float, args.gamma0.split(",")):
                    start = time.perf_counter()
                    spec = task_spec(task, activation, depth, gamma0, args.eta, args.steps)
                    head = f"{task:>5} {activation:>5} {depth:>2} {gamma0:>4g} |"
                    try:
                        loss, loss_err = dmft_loss(spec, args.samples, args.replicas)
                    except DmftError as error:
                        print(f"{head} DMFT refused: {error}", flush=True)
                        continue
                    nets, nets_err, chi2, diverged = networks_limit(spec, widths, args.seeds)
                    gap, worst = criterion(loss, loss_err, nets, nets_err)
                    fit_quality = "-" if np.isnan(chi2) else f"{chi2:.2f}"
                    print(f"{head} {loss[0]:7.4f} {loss[-1]:10.5f} {nets[-1]:10.5f} | "
                          f"{gap:9.2f}% {worst:9.2f} {fit_quality:>7} {diverged:>4} | "
                          f"{time.perf_counter() - start:6.0f}", flush=True)


if __name__ == "__main__":
    main()
