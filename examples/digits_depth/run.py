"""Real data, depth and richness: scikit-learn's 8×8 digits, two classes (3 against 8, ±1
targets), a tanh μP network with L = 3 hidden layers at γ0 = 0.5, 1 and 1.5, trained by gradient
descent, in the setting of Bordelon & Pehlevan (2022). The infinite-width Monte Carlo DMFT is set
against real networks of several widths (`dmft.sample`), for the train loss, the test loss and the
test accuracy. The networks are also extrapolated in 1/N and compared with the limit.

    python examples/digits_depth/run.py            # full: widths 256, 1024, 4096, 8 seeds
    python examples/digits_depth/run.py --quick    # tiny version (tests)

Needs the optional extra: pip install ".[data]" (the digits ship inside scikit-learn). Writes
digits_depth.pdf/.png next to this file (or in --out) and prints a table and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft  # noqa: E402
from dmft.spec import spec_from_dict  # noqa: E402

#: η0 as a fraction of the lazy stability edge 2P/λ_max(K0): small steps, close to the flow
STEP_FRACTION = 0.05


def table(gamma0: float, samples: int, learning_rate: float = 1.0, times=(0.0,)) -> dict:
    return {"architecture": {"hidden_layers": 3, "activation": "tanh", "parameterization": "mup",
                             "gamma0": gamma0},
            "data": {"dataset": "digits", "classes": [3, 8], "train_size": 32, "test_size": 64,
                     "seed": 0, "standardize": True, "targets": "pm1"},
            "training": {"optimizer": "gd", "learning_rate": learning_rate, "times": list(times)},
            # the read-out control variate biases late times of long rich deep runs (README)
            "solver": {"method": "monte_carlo", "num_samples": samples,
                       "readout_control_variate": False},
            "sampler": {"hessian_steps": 0}}


def learning_rate(samples: int) -> float:
    """η0 = STEP_FRACTION · 2P/λ_max(K0), from the lazy NTK (the same for every γ0 in μP)."""
    spec = spec_from_dict(table(1.0, samples))
    depth = spec.architecture.hidden_layers
    ntk = dmft.kernels(spec)[f"ntk_L{depth + 1}"]
    return float(STEP_FRACTION * 2 * spec.data.num_train / np.linalg.eigvalsh(ntk)[-1])


def run_case(gamma0, samples, eta, steps, save_every, widths, seeds):
    times = [eta * k for k in range(0, steps + 1, save_every)]
    spec = spec_from_dict(table(gamma0, samples, eta, times))
    solution = dmft.solve(spec)
    limit = solution.arrays(spec.data.y_train, spec.data.y_test)
    ensembles = dmft.sample(spec, widths, seeds)
    comparison = dmft.compare(ensembles, spec, limit=limit, limit_note="Monte Carlo DMFT")
    return spec, limit, ensembles, comparison


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny version: γ0 = 1, 2 widths, 4 seeds, 8 steps")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--widths", default=None, help="comma-separated widths")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else \
        ((128, 512) if args.quick else (256, 1024, 4096))
    seeds = args.seeds or (4 if args.quick else 8)
    gammas = (1.0,) if args.quick else (0.5, 1.0, 1.5)
    samples, steps, save_every = (2048, 8, 2) if args.quick else (8192, 60, 4)
    eta = round(learning_rate(samples), 6)
    print(f"digits 3 vs 8, P = 32, 64 test points, tanh L = 3 muP, GD eta0 = {eta:g} "
          f"({STEP_FRACTION:g} of the lazy edge), {steps} steps; widths {list(widths)} x {seeds} "
          f"seeds; DMFT {samples} samples")
    results, report = {}, {}
    for gamma0 in gammas:
        spec, limit, ensembles, comparison = run_case(gamma0, samples, eta, steps, save_every,
                                                      widths, seeds)
        results[gamma0] = (limit, ensembles)
        report[f"gamma0={gamma0:g}"] = case_summary(gamma0, limit, ensembles, comparison, widths)
    print(json.dumps(report, indent=1))
    paths = figure(results, widths, args.out / "digits_depth")
    print("wrote", *paths)
    return 0


def case_summary(gamma0, limit, ensembles, comparison, widths) -> dict:
    """The final losses and accuracy of the limit and each width, and the 1/N-extrapolated
    networks' largest gap to the limit in % of 𝓛(0) with its criterion max|Δ|/(3σ + 1 % 𝓛0)."""
    loss0 = float(limit["loss_train"][0])
    out = {"limit": {k: float(limit[k][-1]) for k in ("loss_train", "loss_test", "accuracy_test")}}
    for w in widths:
        out[f"N{w}"] = {k: float(np.nanmean(ensembles[w][k][:, -1]))
                        for k in ("loss_train", "loss_test", "accuracy_test")}
    print(f"\ngamma0 = {gamma0:g}: final values (mean over seeds)")
    print(f"{'':>8} {'loss_train':>10} {'loss_test':>10} {'acc_test':>9}")
    for name, row in out.items():
        print(f"{name:>8} {row['loss_train']:10.5f} {row['loss_test']:10.5f} "
              f"{row['accuracy_test']:9.3f}")
    for key in ("loss_train", "loss_test"):
        fit = comparison.fits[key]
        sigma = np.hypot(fit.limit_err, limit.get(f"{key}_stderr", 0.0))
        gap = np.abs(fit.limit - limit[key])
        out[f"{key}_extrapolated_gap_pct"] = float(100 * gap.max() / loss0)
        out[f"{key}_criterion"] = float(np.max(gap / (3 * sigma + 0.01 * loss0)))
        print(f"{key}: 1/N-extrapolated networks vs the limit: max gap "
              f"{out[f'{key}_extrapolated_gap_pct']:.2f}% of L(0), criterion "
              f"{out[f'{key}_criterion']:.2f} (pass <= 1)")
    return out


def figure(results, widths, stem):
    import matplotlib.pyplot as plt

    from dmft.figures import figure_size, ordered_colors, paper_style, save_figure

    panels = (("loss_train", "train loss"), ("loss_test", "test loss"),
              ("accuracy_test", "test accuracy"))
    with paper_style():
        fig, axes = plt.subplots(1, 3, figsize=figure_size(True, 2.4))
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.19, top=0.86, wspace=0.32)
        colors = ordered_colors(len(results))
        shades = np.linspace(0.35, 0.9, len(widths))
        for (gamma0, (limit, ensembles)), color in zip(results.items(), colors):
            t = limit["t"]
            for ax, (key, label) in zip(axes, panels):
                ax.plot(t, limit[key], color=color, linewidth=1.6,
                        label=rf"$\gamma_0 = {gamma0:g}$ limit")
                for w, alpha in zip(widths, shades):
                    ax.plot(t, np.nanmean(ensembles[w][key], axis=0), "o", color=color,
                            alpha=alpha, markersize=2.2,
                            label=f"$N = {w}$" if gamma0 == next(iter(results)) else None)
                ax.set_xlabel("time $t = k\\eta_0$")
                ax.set_title(label)
        for ax in axes[:2]:
            ax.set_yscale("log")
        axes[2].legend(fontsize=5.5, loc="lower right")  # the empty corner of the accuracy panel
        fig.suptitle(r"digits 3 vs 8, tanh $L = 3$ $\mu$P: DMFT limit (lines) and networks "
                     r"(markers)", fontsize=8)
        return save_figure(fig, stem)


if __name__ == "__main__":
    sys.exit(main())
