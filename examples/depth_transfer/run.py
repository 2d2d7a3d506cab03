"""Learning-rate transfer across depth: residual μP networks (deep linear, γ0 = 1, branch
scale α = 1) of depth L = 2, 4, 8, trained by GD for k steps, loss against η0; with depth-μP
branch scaling α/√L (``residual_exponent = 0.5``) and without depth scaling (``= 0``). The
exact infinite-width DMFT (deep-linear closure) per depth, and real networks at finite width.
Each panel is a `dmft.sweep` over ``training.learning_rate`` × ``architecture.hidden_layers``.

    python examples/depth_transfer/run.py            # full (several minutes)
    python examples/depth_transfer/run.py --quick    # tiny version (tests)

Writes depth_transfer.pdf/.png next to this file (or in --out), the sweep folders under --work
(default OUT/sweeps, each with its `dmft figure DIR --kind depth_transfer`) and prints the loss
table and each depth's optimum.
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
import dmft.figures  # noqa: E402
from dmft.spec import load_spec, spec_from_dict  # noqa: E402

TASK = REPO / "examples" / "mup_two_layer_tanh.toml"  # its P = 8 data
RATE, DEPTH = "training.learning_rate", "architecture.hidden_layers"
RATIOS = (0.125, 0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83)  # × P/λ_max(K0) of L = 2, β = 1/2
QUICK_RATIOS = (0.25, 1.0, 2.83)
EXPONENTS = (0.5, 0.0)


def base_table(depth: int, exponent: float, activation: str) -> dict:
    data = load_spec(TASK).data
    solver = {"method": "deep_linear"} if activation == "linear" else \
        {"method": "monte_carlo", "num_samples": 2048}
    return {"architecture": {"hidden_layers": depth, "activation": activation,
                             "parameterization": "mup", "gamma0": 1.0, "residual_scale": 1.0,
                             "residual_exponent": exponent},
            "data": {"x_train": data.x_train.tolist(), "y_train": data.y_train.tolist()},
            "training": {"optimizer": "gd", "learning_rate": 1.0, "times": [0.0]},
            "solver": solver, "sampler": {"hessian_steps": 0}}


def sharpness0(table: dict) -> float:
    spec = spec_from_dict(table)
    depth = spec.architecture.hidden_layers
    ntk = dmft.kernels(spec)[f"ntk_L{depth + 1}"]
    return float(np.linalg.eigvalsh(ntk)[-1] / spec.data.num_train)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny version: 3 rates, L = 2, 4")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--widths", default=None, help="comma-separated widths")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--activation", default="linear",
                        help="linear (exact deep-linear closure) or e.g. tanh (Monte Carlo)")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 10)
    seeds = args.seeds or 2
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else \
        ((256,) if args.quick else (256, 1024))
    depths = (2, 4) if args.quick else (2, 4, 8)
    ratios = QUICK_RATIOS if args.quick else RATIOS
    work = args.work or args.out / "sweeps"
    lam = sharpness0(base_table(2, 0.5, args.activation))
    rates = [round(r / lam, 6) for r in ratios]
    lam0 = {(b, L): sharpness0(base_table(L, b, args.activation))
            for b in EXPONENTS for L in depths}
    print(f"lambda_max(K0)/P of L = 2, beta = 1/2: {lam:.6f}; eta0 grid {rates}; k = {steps}; "
          f"widths {list(widths)}, seeds {seeds}")
    print("lambda_max(K0)/P per (beta, L):",
          {f"beta={b:g},L={L}": round(v, 5) for (b, L), v in lam0.items()})
    results, report = {}, {}
    for beta in EXPONENTS:
        spec = spec_from_dict(base_table(depths[0], beta, args.activation), source=str(TASK))
        folder = work / f"depth_beta{beta:g}"
        result = dmft.sweep(spec, {DEPTH: list(depths), RATE: rates, "training.steps": [steps]},
                            folder, widths=widths, seeds=seeds, point_figures=False)
        dmft.figures.plot_sweep_figure(folder, "depth_transfer")
        s = result.summary
        table = {}
        for depth in depths:
            rows = np.flatnonzero((s["step"] == steps) & (s[DEPTH] == depth))
            rows = rows[np.argsort(s[RATE][rows])]
            limit = np.where(s["diverged"][rows], np.nan, s["loss_train"][rows]).astype(float)
            finite = {}
            for w in widths:
                m = np.asarray(s.get(f"N{w}_loss_train", np.full(len(s["step"]), np.nan))[rows],
                               dtype=float)
                e = np.asarray(s.get(f"N{w}_loss_train_stderr", np.full(len(s["step"]), np.nan))
                               [rows], dtype=float)
                m[~np.isfinite(m) | (m > 1e6)] = np.nan
                finite[w] = (m, e)
            table[depth] = (s[RATE][rows].astype(float), limit, finite)
        results[beta] = table
        print(f"\nbeta = {beta:g}: loss after {steps} steps (nan = diverged)")
        print(f"{'L':>2} {'eta0':>8} {'limit':>10}" + "".join(f" {'N' + str(w):>10}" for w in widths))
        entry = {}
        for depth, (eta, limit, finite) in table.items():
            for i, e in enumerate(eta):
                print(f"{depth:2d} {e:8.4f} {limit[i]:10.5f}"
                      + "".join(f" {finite[w][0][i]:10.5f}" for w in widths))
            best = None if not np.any(np.isfinite(limit)) else int(np.nanargmin(limit))
            entry[str(depth)] = {"limit_argmin_eta0": None if best is None else float(eta[best]),
                                 "limit_min_loss": None if best is None else float(limit[best]),
                                 "largest_stable_eta0": float(eta[np.isfinite(limit)].max())
                                 if np.any(np.isfinite(limit)) else None}
        report[f"beta={beta:g}"] = entry
    print(json.dumps(report, indent=1))
    paths = figure(results, widths, steps, args.out / "depth_transfer", args.activation)
    print("wrote", *paths)
    return 0


def figure(results, widths, steps, stem, activation):
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from dmft.figures import figure_size, ordered_colors, paper_style, save_figure

    titles = {0.5: r"depth-$\mu$P branches $1/\sqrt{L}$ ($\beta = 1/2$)",
              0.0: r"no depth scaling ($\beta = 0$)"}
    widest = max(widths) if widths else None
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=figure_size(True, 2.9), sharey=True)
        fig.subplots_adjust(left=0.08, right=0.77, bottom=0.16, top=0.86, wspace=0.08)
        for ax, (beta, table) in zip(axes, results.items()):
            marks = blended_transform_factory(ax.transData, ax.transAxes)
            colors = ordered_colors(len(table))
            for j, ((depth, (eta, limit, finite)), color) in enumerate(zip(table.items(), colors)):
                good = np.isfinite(limit)
                ax.plot(eta[good], limit[good], "o-", color=color, linewidth=1.6, markersize=3,
                        label=f"$L = {depth}$ limit", zorder=10)
                if np.any(good):
                    best = np.flatnonzero(good)[np.nanargmin(limit[good])]
                    ax.plot(eta[best], limit[best], "*", color=color, markersize=10,
                            markeredgecolor="black", markeredgewidth=0.5, zorder=11)
                ax.plot(eta[~good], np.full((~good).sum(), 0.97 - 0.03 * j), "x", color=color,
                        markersize=4, transform=marks, clip_on=False)
                if widest is not None:
                    m, e = finite[widest]
                    ok = np.isfinite(m)
                    ax.errorbar(eta[ok], m[ok], yerr=2 * np.nan_to_num(e[ok]), fmt="s--",
                                color=color, markersize=2.5, linewidth=0.8, capsize=1.5,
                                label=f"$L = {depth}$, $N = {widest}$")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(r"learning rate $\eta_0$ (time units)")
            ax.set_ylim(0.06, 2.0)
            ax.set_title(titles[beta], fontsize=8)
        axes[0].set_ylabel(rf"train loss $\mathcal{{L}}$ after $k = {steps}$ GD steps")
        axes[1].plot([], [], "*", color="0.6", markeredgecolor="black", markersize=8,
                     label="optimum of the limit")
        axes[1].plot([], [], "x", color="0.4", markersize=4, label="limit diverged")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5, frameon=False)
        fig.suptitle(rf"residual {activation} $\mu$P networks, $\gamma_0 = 1$, $\alpha = 1$, "
                     r"$P = 8$; error bars $\pm 2$ s.e.", fontsize=8)
        return save_figure(fig, stem)


if __name__ == "__main__":
    raise SystemExit(main())
