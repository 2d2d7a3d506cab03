"""μP learning-rate transfer: the training loss after k GD steps against the learning rate η0,
per width N = 256–4096, with the infinite-width limit on top and its optimum marked; for μP
(two-layer tanh, γ0 = 1: the exact DMFT) and for the NTK parameterization (its lazy limit), on
the same P = 8 task. Both grids are `dmft.sweep` over ``training.learning_rate`` at fixed
``training.steps = k``.

    python examples/mup_transfer/run.py            # full (several minutes)
    python examples/mup_transfer/run.py --quick    # tiny version (tests)

Writes mup_transfer.pdf/.png next to this file (or in --out), the two sweep folders under
--work (default OUT/sweeps, with `dmft figure DIR --kind lr_transfer` figures) and prints the
loss table and, per width, the grid argmin against the limit's.
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

TASK = REPO / "examples" / "mup_two_layer_tanh.toml"
RATE = "training.learning_rate"
RATIOS = (0.25, 0.35, 0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0)  # η0·λ_max(K0)/P, steps of √2
QUICK_RATIOS = (0.5, 1.0, 2.0, 4.0)


def base_table(parameterization: str, particles: int) -> dict:
    task = load_spec(TASK)
    spec = task.to_dict()
    table = {"architecture": dict(spec["architecture"]), "data": {
        "x_train": task.data.x_train.tolist(), "y_train": task.data.y_train.tolist()},
        "training": {"optimizer": "gd", "learning_rate": 1.0, "times": [0.0]},
        "sampler": {"hessian_steps": 0}}
    table["architecture"] = {k: v for k, v in table["architecture"].items()
                             if k in ("hidden_layers", "activation", "gamma0")}
    table["architecture"]["parameterization"] = parameterization
    if parameterization == "ntk":
        table["architecture"].pop("gamma0")
    else:
        table["solver"] = {"method": "two_layer", "particles": particles}
    return table


def curves(summary: dict, widths, steps: int):
    """η0 grid, limit loss, and per width (mean, stderr) at step `steps`; NaN where diverged."""
    rows = np.flatnonzero(summary["step"] == steps)
    order = rows[np.argsort(summary[RATE][rows])]
    rates = summary[RATE][order].astype(float)
    limit = np.where(summary["diverged"][order], np.nan, summary["loss_train"][order])
    per_width = {}
    for w in widths:
        mean = summary.get(f"N{w}_loss_train")
        err = summary.get(f"N{w}_loss_train_stderr")
        if mean is None:
            per_width[w] = (np.full(len(order), np.nan), np.full(len(order), np.nan))
            continue
        m = np.asarray(mean[order], dtype=float)
        m[~np.isfinite(m) | (m > 1e6)] = np.nan
        per_width[w] = (m, np.asarray(err[order], dtype=float))
    return rates, limit, per_width


def argmin_or_none(values: np.ndarray):
    return None if not np.any(np.isfinite(values)) else int(np.nanargmin(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny version: 4 rates, 2 widths")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--work", type=Path, default=None, help="sweep folders (default OUT/sweeps)")
    parser.add_argument("--steps", type=int, default=None, help="k: the loss after k steps")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.quick else 10)
    seeds = args.seeds or (2 if args.quick else 3)
    widths = (256, 512) if args.quick else (256, 512, 1024, 2048, 4096)
    ratios = QUICK_RATIOS if args.quick else RATIOS
    particles = 1024 if args.quick else 8192
    work = args.work or args.out / "sweeps"

    base = load_spec(TASK)
    ntk = dmft.kernels(base)["ntk_L2"]
    lam = float(np.linalg.eigvalsh(ntk)[-1] / base.data.num_train)
    rates = [round(r / lam, 6) for r in ratios]
    print(f"lambda_max(K0)/P = {lam:.6f}; eta0 grid {rates} (eta0*lambda_max(K0)/P = "
          f"{list(ratios)}); loss after k = {steps} steps; widths {list(widths)}, seeds {seeds}")
    results, report = {}, {}
    for param in ("mup", "ntk"):
        spec = spec_from_dict(base_table(param, particles), source=str(TASK))
        folder = work / f"lr_{param}"
        result = dmft.sweep(spec, {RATE: rates, "training.steps": [steps]}, folder,
                            widths=widths, seeds=seeds, point_figures=False)
        dmft.figures.plot_sweep_figure(folder, "lr_transfer")
        eta, limit, per_width = curves(result.summary, widths, steps)
        results[param] = (eta, limit, per_width)
        best = argmin_or_none(limit)
        print(f"\n{param}: loss after {steps} steps (nan = diverged)")
        print(f"{'eta0':>9} {'eta0*lam0/P':>11} {'limit':>10}" + "".join(f" {'N' + str(w):>10}"
                                                                       for w in widths))
        for i, e in enumerate(eta):
            print(f"{e:9.4f} {e * lam:11.3f} {limit[i]:10.5f}"
                  + "".join(f" {per_width[w][0][i]:10.5f}" for w in widths))
        entry = {"limit_argmin_eta0": None if best is None else float(eta[best]), "widths": {}}
        for w in widths:
            arg = argmin_or_none(per_width[w][0])
            entry["widths"][str(w)] = {
                "argmin_eta0": None if arg is None else float(eta[arg]),
                "grid_steps_from_limit": None if arg is None or best is None else abs(arg - best)}
        entry["within_one_step_all_N_ge_512"] = all(
            v["grid_steps_from_limit"] is not None and v["grid_steps_from_limit"] <= 1
            for w, v in entry["widths"].items() if int(w) >= 512)
        report[param] = entry
    print(json.dumps(report, indent=1))
    paths = figure(results, widths, steps, lam, args.out / "mup_transfer")
    print("wrote", *paths)
    return 0


def figure(results, widths, steps, lam, stem):
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    from dmft.figures import figure_size, ordered_colors, paper_style, save_figure

    titles = {"mup": r"$\mu$P ($\gamma_0 = 1$): DMFT limit",
              "ntk": "NTK parameterization: lazy limit"}
    with paper_style():
        fig, axes = plt.subplots(1, 2, figsize=figure_size(True, 2.9), sharey=True)
        fig.subplots_adjust(left=0.08, right=0.77, bottom=0.16, top=0.86, wspace=0.08)
        colors = ordered_colors(len(widths))
        for ax, (param, (eta, limit, per_width)) in zip(axes, results.items()):
            marks = blended_transform_factory(ax.transData, ax.transAxes)
            for j, (w, color) in enumerate(zip(widths, colors)):
                mean, err = per_width[w]
                good = np.isfinite(mean)
                ax.errorbar(eta[good], mean[good], yerr=2 * np.nan_to_num(err[good]), fmt="s--",
                            color=color, markersize=2.5, linewidth=0.9, capsize=1.5,
                            label=f"$N = {w}$")
                if np.any(good):
                    best = np.flatnonzero(good)[np.nanargmin(mean[good])]
                    ax.plot(eta[best], 0.04 + 0.03 * j, "v", color=color, markersize=4,
                            transform=marks, clip_on=False)
                bad = ~good
                ax.plot(eta[bad], np.full(bad.sum(), 0.97 - 0.025 * j), "x", color=color,
                        markersize=4, transform=marks, clip_on=False)
            good = np.isfinite(limit)
            ax.plot(eta[good], limit[good], "o-", color="black", linewidth=1.8, markersize=3,
                    zorder=10, label=r"limit $N \to \infty$")
            if np.any(good):
                best = np.flatnonzero(good)[np.nanargmin(limit[good])]
                ax.plot(eta[best], limit[best], "*", color="#D55E00", markersize=11,
                        markeredgecolor="black", markeredgewidth=0.5, zorder=11)
            ax.plot(eta[~good], np.full((~good).sum(), 0.97 + 0.025), "x", color="black",
                    markersize=5, transform=marks, clip_on=False)
            ax.axvline(2 / lam, color="0.5", linestyle=":", linewidth=0.9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(r"learning rate $\eta_0$ (time units)")
            ax.set_ylim(5e-3, 10.0)
            ax.set_title(titles[param], fontsize=8)
        axes[0].set_ylabel(rf"train loss $\mathcal{{L}}$ after $k = {steps}$ GD steps")
        axes[1].plot([], [], "*", color="#D55E00", markeredgecolor="black", markersize=8,
                     label="predicted optimum")
        axes[1].plot([], [], ":", color="0.5", label=r"$\eta_0 = 2P/\lambda_{\max}(K_0)$")
        axes[1].plot([], [], "v", color="0.4", markersize=4, label="width's grid argmin")
        axes[1].plot([], [], "x", color="0.4", markersize=4, label="diverged")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5, frameon=False)
        return save_figure(fig, stem)


if __name__ == "__main__":
    raise SystemExit(main())
