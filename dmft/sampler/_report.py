"""The printed comparison table and the comparison figure of ``dmft sample``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._compare import Comparison

_LABELS = {
    "loss_train": r"$\mathcal{L}_\mathrm{train}$",
    "loss_test": r"$\mathcal{L}_\mathrm{test}$",
    "f_train": r"$f_\mathrm{train}$",
    "f_test": r"$f_\mathrm{test}$",
    "ntk": r"NTK $K$",
    "ntk_test_train": r"$K_{*X}$",
    "sharpness": r"$\lambda_\max(K)/P$",
    "hessian_sharpness": r"$\lambda_\max(\eta\nabla^2\mathcal{L})$",
}


def _label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    kind, layer = name.split("_L")
    symbol = r"\Phi" if kind == "phi" else "G"
    return rf"${symbol}^{{{layer}}}$"


def report_table(comparison: Comparison) -> str:
    """One row per observable and width: RMS bias |⟨O⟩_N − O_∞| (with its noise floor, the RMS
    standard error), single-network RMS deviation, mean N·Var, and the 1/N fit's slope; above it,
    one line per observable saying which quantity it is (`Comparison.quantities`)."""
    lines = [comparison.limit_note]
    if comparison.divergence_note:
        lines.append(comparison.divergence_note)
    if not comparison.widths:
        lines.append("no width has a member that did not diverge: nothing to compare")
        return "\n".join(lines)
    if comparison.cv_note:
        lines.append(comparison.cv_note)
    if comparison.quantities:
        lines.append("what each observable's mean, 1/N fit and deviation are about:")
        lines += [f"  {name:<15} {text}" for name, text in comparison.quantities.items()]
    lines.append("columns: RMS over entries and saved times of |ensemble mean - limit| and of the "
                 "standard error (noise); member rms: RMS of one network - limit over seeds, entries "
                 "and times; N*Var: mean over entries and times; fit mean(N) = a + b/N: RMS of b "
                 "(± its error) and of a - limit")
    header = (f"{'observable':<16}{'N':>7}{'|mean-limit|':>14}{'noise':>11}{'member rms':>12}"
              f"{'N*Var':>11}{'fit b (1/N)':>14}{'fit a-limit':>14}")
    lines += [header, "-" * len(header)]
    for name, rows in comparison.summary.items():
        fit = comparison.fits.get(name)
        for i, width in enumerate(comparison.widths):
            bias = f"{rows['bias'][i]:.3e}" if "bias" in rows else "no limit"
            member = f"{rows['member_rms'][i]:.3e}" if "member_rms" in rows else "-"
            extra = ""
            if fit is not None and i == 0:
                slope = float(np.sqrt(np.mean(fit.slope**2)))
                slope_err = float(np.sqrt(np.mean(fit.slope_err**2)))
                extra = f"{slope:>8.3g}±{slope_err:<5.2g}"
                if comparison.limit is not None and name in comparison.limit:
                    offset = float(np.sqrt(np.mean((fit.limit - comparison.limit[name]) ** 2)))
                    extra += f"{offset:>14.3e}"
            lines.append(f"{name if i == 0 else '':<16}{width:>7}{bias:>14}{rows['noise'][i]:>11.3e}"
                         f"{member:>12}{rows['nvar'][i]:>11.3e}{extra:>14}")
    return "\n".join(lines)


def _learning_rate(spec) -> float | None:
    training = getattr(spec, "training", None)
    return None if training is None else training.learning_rate


def plot_comparison(comparison: Comparison, t: np.ndarray, stem: str | Path,
                    title: str | None = None, spec=None) -> list[Path]:
    """Two panels, one paper column, and a third when the ensembles record their sharpness.

    (a) Deviation from the limit against width on log-log axes with 1/N and 1/√N guides. Solid:
    RMS over entries and saved times of the ensemble mean's deviation ⟨O⟩_N − O_∞; dotted: the
    same RMS for one network, over seeds too. For uncentred NTK networks f and 𝓛 are their f(0)
    control-variate versions (``*_cv``, see `dmft.sampler._compare`), whose deviations converge.
    (b) Ensemble-mean train loss against time, bands ±2 standard errors over seeds (of log 𝓛),
    over the limit. Width ticks are the widths themselves. With `spec` the title names the run.
    (c) Ensemble-mean sharpness against time: λ_max(K)/P (solid, over the limit's, dashed) and
    λ_max(η∇²𝓛) (dotted), with the GD stability line 2/η0 for "gd" / "sgd" specs. Diverged
    members are not in any panel (`Comparison.divergence_note`, printed under the title).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    from ..figures import paper_style, save_figure
    from ..figures import run_title, time_axis, time_label

    if title is None and spec is not None:
        title = run_title(spec, "finite width vs limit")
    widths = np.asarray(comparison.widths, dtype=float)
    uses_cv = "loss_train_cv" in comparison.summary
    sharp = "sharpness" in comparison.stats
    with paper_style():
        if not comparison.widths:
            figure, ax = plt.subplots(figsize=(3.4, 1.6), layout="constrained")
            ax.axis("off")
            ax.text(0.5, 0.5, "every member diverged:\nnothing to compare", ha="center",
                    va="center", fontsize=7)
            if title:
                figure.suptitle(title, fontsize=7)
            return save_figure(figure, stem)
        figure, axes = plt.subplots(3 if sharp else 2, 1, figsize=(3.4, 8.0 if sharp else 5.4),
                                    layout="constrained")
        ax_dev, ax_curve = axes[0], axes[1]
        anchor = None
        for name in ("loss_train", "f_train", "ntk", "phi_L1"):
            if f"{name}_cv" in comparison.summary:
                name = f"{name}_cv"
            rows = comparison.summary.get(name)
            if rows is None:
                continue
            key = "bias" if "bias" in rows else "noise"
            label = _label(name[:-3]) + " (cv)" if name.endswith("_cv") else _label(name)
            (line,) = ax_dev.plot(widths, rows[key], "o-", label=label, markersize=3)
            if "member_rms" in rows:
                ax_dev.plot(widths, rows["member_rms"], "s:", color=line.get_color(), markersize=2.5,
                            linewidth=0.8)
            if anchor is None:
                anchor = float(rows[key][0])
        if comparison.limit is not None:
            ax_dev.plot([], [], "o-", color="0.4", markersize=3, label="ensemble mean")
            ax_dev.plot([], [], "s:", color="0.4", markersize=2.5, linewidth=0.8,
                        label="one network")
        if anchor is not None and anchor > 0:
            ax_dev.plot(widths, anchor * widths[0] / widths, "k--", linewidth=0.8, label=r"$1/N$")
            ax_dev.plot(widths, anchor * np.sqrt(widths[0] / widths), "k-.", linewidth=0.8,
                        label=r"$1/\sqrt{N}$")
        ax_dev.set_xscale("log")
        ax_dev.set_yscale("log")
        # the widths as plain integers (64, 256), not 6×10¹
        ax_dev.xaxis.set_major_locator(FixedLocator(widths))
        ax_dev.xaxis.set_minor_locator(NullLocator())
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        ax_dev.xaxis.set_major_formatter(formatter)
        ax_dev.set_xlabel("width $N$")
        ax_dev.set_ylabel(r"RMS $|O_N - O_\infty|$" if comparison.limit is not None
                          else "RMS standard error")
        what = ("RMS over entries and saved times (one network: and seeds)"
                if comparison.limit is not None else "RMS standard error over entries and times")
        if uses_cv:
            what += "\ncv: f(0) control variate removed (uncentred NTK)"
        ax_dev.set_title(what, fontsize=6, loc="left")
        # legend outside the data: a row block under the panel
        ax_dev.legend(fontsize=5.5, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                      frameon=False, handlelength=2.0, columnspacing=1.0)
        if title or comparison.divergence_note:
            note = comparison.divergence_note
            if note:
                note = "diverged members left out: " + note.split("; ", 1)[-1]
            figure.suptitle("\n".join(x for x in (title, note) if x), fontsize=6 if note else 7)

        name = "loss_train_cv" if uses_cv else "loss_train"
        stats = comparison.stats[name]
        for width in comparison.widths:
            mean, err = stats[width]["mean"], stats[width]["stderr"]
            (line,) = ax_curve.plot(t, mean, "o-", markersize=2, label=f"$N = {width}$")
            # ±2 s.e. of log 𝓛 (delta method), so the band stays positive on the log axis
            spread = np.exp(2 * err / np.maximum(mean, np.finfo(float).tiny))
            ax_curve.fill_between(t, mean / spread, mean * spread, color=line.get_color(),
                                  alpha=0.25, linewidth=0)
        if comparison.limit is not None and name in comparison.limit:
            ax_curve.plot(t, comparison.limit[name], "k--", label=r"limit $N\to\infty$")
        ax_curve.fill_between([], [], [], color="0.4", alpha=0.25, linewidth=0,
                              label=r"$\pm 2$ s.e. over seeds")
        time_axis(ax_curve, np.asarray(t), time_label(spec))
        ax_curve.set_yscale("log")
        ax_curve.set_ylabel("ensemble-mean train loss" + (" (cv)" if uses_cv else ""))
        ax_curve.legend(fontsize=5.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25),
                        frameon=False)
        if sharp:
            _sharpness_panel(axes[2], comparison, t, spec)
        return save_figure(figure, stem)


def _sharpness_panel(ax, comparison: Comparison, t, spec) -> None:
    from ..figures import time_axis, time_label

    for width in comparison.widths:
        stats = comparison.stats["sharpness"][width]
        (line,) = ax.plot(t, stats["mean"], "o-", markersize=2, label=f"$N = {width}$")
        ax.fill_between(t, stats["mean"] - 2 * stats["stderr"], stats["mean"] + 2 * stats["stderr"],
                        color=line.get_color(), alpha=0.25, linewidth=0)
        if "hessian_sharpness" in comparison.stats:
            hessian = comparison.stats["hessian_sharpness"][width]["mean"]
            ax.plot(t, hessian, ":", color=line.get_color(), linewidth=1.0)
    if comparison.limit is not None and "sharpness" in comparison.limit:
        ax.plot(t, np.broadcast_to(comparison.limit["sharpness"], np.shape(t)), "k--",
                label=r"limit $\lambda_\max(K)/P$")
    if "hessian_sharpness" in comparison.stats:
        ax.plot([], [], ":", color="0.4", label=r"$\lambda_\max(\eta\nabla^2\mathcal{L})$")
    eta0 = _learning_rate(spec)
    if eta0:
        ax.axhline(2.0 / eta0, color="0.3", linewidth=0.8, linestyle="-.",
                   label=r"$2/\eta_0$ (GD stability)")
    time_axis(ax, np.asarray(t), time_label(spec))
    ax.set_ylabel("sharpness (ensemble mean)")
    ax.legend(fontsize=5.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25),
              frameon=False)
