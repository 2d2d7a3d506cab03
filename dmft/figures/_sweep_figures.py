"""Paper figures from a sweep's saved data (``summary.npz``, ``metadata.json`` and the points'
metadata), with nothing rerun:

- `plot_gamma0_family`: loss curves per γ0, ±2 s.e. bands where the solver gave errors, and the
  lazy (γ0 → 0) curve as reference;
- `plot_alignment_family`: kernel–target alignment A(t) and the NTK's top eigenvalues per γ0;
- `plot_width_deviation`: ⟨‖f_N − f_∞‖²⟩/P against N on log–log axes with a 1/N guide;
- `plot_lr_transfer`: the loss after k steps against η0, per width, the limit on top, its optimum
  marked and divergent points marked (one panel per value of any other swept key, e.g. the
  parameterization);
- `plot_depth_transfer`: the same per depth L.

`plot_sweep_figure(folder, kind, stem)` draws one of them by name (``dmft figure``) and writes
``stem.pdf`` and ``stem.png`` atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from .._errors import InputError
from ._style import PALETTE, figure_size, ordered_colors, paper_style

GAMMA0 = "architecture.gamma0"
RATE = "training.learning_rate"
DEPTH = "architecture.hidden_layers"
KINDS = ("gamma0", "alignment", "width", "lr_transfer", "depth_transfer")
_SHORT = {GAMMA0: r"\gamma_0", RATE: r"\eta_0", DEPTH: "L", "data.train_size": "P",
          "architecture.sigma_w": r"\sigma_w", "architecture.sigma_b": r"\sigma_b",
          "architecture.activation": "", "architecture.parameterization": ""}


class SweepData:
    """The saved data of a sweep folder: its summary columns, metadata and point metadata."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder
        path = folder / "summary.npz"
        meta_path = folder / "metadata.json"
        if not path.is_file() or not meta_path.is_file():
            raise InputError(f"{folder}: no summary.npz / metadata.json (is it the --out folder "
                             "of dmft sweep?)")
        try:
            with np.load(path, allow_pickle=False) as content:
                self.summary = {key: content[key] for key in content.files}
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{folder}: cannot read the sweep summary ({error})") from None
        if not isinstance(self.meta, dict) or self.meta.get("command") != "sweep":
            raise InputError(f"{meta_path}: not the metadata of dmft sweep")
        grid = self.meta.get("grid", {})
        # keys swept over one value are constants of the sweep: no panels, no labels
        self.keys: list[str] = [key for key in self.meta.get("keys", [])
                                if not isinstance(grid.get(key), list) or len(grid[key]) > 1]
        self.widths: list[int] = [int(w) for w in self.meta.get("widths", [])]
        self.point_ids = list(dict.fromkeys(self.summary["point"].tolist()))
        self._specs: dict[int, dict] = {}

    def rows(self, point: int) -> np.ndarray:
        return np.flatnonzero(self.summary["point"] == point)

    def column(self, point: int, name: str) -> np.ndarray | None:
        if name not in self.summary:
            return None
        return self.summary[name][self.rows(point)]

    def value(self, point: int, key: str) -> Any:
        return self.summary[key][self.rows(point)[0]].item()

    def point_spec(self, point: int) -> dict:
        """The ``spec`` block of a point's metadata.json (empty when unreadable)."""
        if point not in self._specs:
            spec: dict = {}
            for record in self.meta.get("points", []):
                if record.get("index") == point:
                    try:
                        content = json.loads((self.folder / record["folder"] / "metadata.json")
                                             .read_text())
                        spec = content.get("spec", {}) if isinstance(content, dict) else {}
                    except (OSError, ValueError, KeyError):
                        spec = {}
            self._specs[point] = spec
        return self._specs[point]

    def parameterization(self, point: int) -> str | None:
        if "architecture.parameterization" in self.summary:
            return str(self.value(point, "architecture.parameterization"))
        return self.point_spec(point).get("architecture", {}).get("parameterization")

    def optimizer(self, point: int) -> str:
        if "training.optimizer" in self.summary:
            return str(self.value(point, "training.optimizer"))
        return self.point_spec(point).get("training", {}).get("optimizer", "flow")

    def require(self, key: str, kind: str) -> None:
        if key not in self.meta.get("keys", []):
            swept = ", ".join(self.keys) or "none"
            raise InputError(f"--kind {kind} needs a sweep over {key} (this one sweeps {swept})")

    def groups(self, exclude: tuple[str, ...]) -> dict[tuple, list[int]]:
        """Points grouped by the values of the swept keys other than `exclude`."""
        others = [key for key in self.keys if key not in exclude]
        out: dict[tuple, list[int]] = {}
        for point in self.point_ids:
            out.setdefault(tuple((k, self.value(point, k)) for k in others), []).append(point)
        return out


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _plain_log_ticks(axis, values=None) -> None:
    """Log-axis tick labels as plain numbers (0.5, 1, 2 instead of 5×10⁻¹), no minor labels;
    at `values` when given (the widths of a sweep)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if values is not None:
        axis.set_major_locator(FixedLocator(sorted(values)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _label(items) -> str:
    parts = []
    for key, value in items:
        short = _SHORT.get(key, key.rsplit(".", 1)[-1].replace("_", r"\_"))
        text = _format(value)
        if short == "":
            parts.append(text)
        elif short.startswith("\\") or len(short) == 1:
            parts.append(rf"${short} = {text}$")
        else:
            parts.append(f"{short} = {text}")
    return ", ".join(parts)


def time_axis_label(data: SweepData, point: int) -> str:
    """The time axis of docs/conventions.md §2: gradient-flow time t, with the flow's η; for
    discrete rules t = k·η0."""
    parameterization = data.parameterization(point)
    eta = {"ntk": r"$\eta = 1$", "mup": r"$\eta = \gamma_0^2 N$"}.get(parameterization)
    unit = "gradient-flow time" + (f", {eta}" if eta else "")
    if data.optimizer(point) in ("gd", "sgd"):
        return rf"$t = k\eta_0$ ({unit})"
    return f"$t$ ({unit})"


def _band(ax, t, value, stderr, color) -> bool:
    if stderr is None or not np.any(np.isfinite(stderr)):
        return False
    ax.fill_between(t, value - 2 * stderr, value + 2 * stderr, color=color, alpha=0.25,
                    linewidth=0)
    return True


def _sorted_by(data: SweepData, points: list[int], key: str) -> list[int]:
    return sorted(points, key=lambda p: data.value(p, key))


def _single_group(data: SweepData, exclude: tuple[str, ...], kind: str) -> list[int]:
    groups = data.groups(exclude)
    if len(groups) > 1:
        others = [key for key in data.keys if key not in exclude]
        raise InputError(f"--kind {kind} draws one family; this sweep also varies "
                         f"{', '.join(others)} (sweep them one value at a time)")
    return next(iter(groups.values()))


# ---------------------------------------------------------------------------------------------
# γ0 family


def plot_gamma0_family(data: SweepData, wide: bool = False):
    """Train (and test) loss against time for each γ0, the lazy curve dashed."""
    data.require(GAMMA0, "gamma0")
    points = _sorted_by(data, _single_group(data, (GAMMA0,), "gamma0"), GAMMA0)
    panels = [key for key in ("loss_train", "loss_test") if key in data.summary]
    colors = ordered_colors(len(points))
    figure, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                                figsize=figure_size(wide, 1.9 * len(panels) + 0.5),
                                constrained_layout=True)
    axes = axes[:, 0]
    banded = False
    for ax, key in zip(axes, panels):
        lazy = None
        for point, color in zip(points, colors):
            t = data.column(point, "t")
            loss = data.column(point, key)
            if bool(data.column(point, "diverged")[0]):
                continue
            ax.plot(t, loss, "o-", color=color, markersize=2,
                    label=_label([(GAMMA0, data.value(point, GAMMA0))]))
            banded |= _band(ax, t, loss, data.column(point, f"{key}_stderr"), color)
            reference = data.column(point, f"lazy_{key}")
            if lazy is None and reference is not None and np.all(np.isfinite(reference)):
                lazy = (t, reference)
        if lazy is not None:  # the same curve for every γ0: drawn once, on top
            ax.plot(*lazy, "--", color="black", linewidth=1.0, zorder=5,
                    label=r"lazy ($\gamma_0 \to 0$)")
        ax.set_yscale("log")
        ax.set_ylabel(("train" if key == "loss_train" else "test") + r" loss $\mathcal{L}$")
    handles, labels = axes[0].get_legend_handles_labels()
    if banded:
        handles.append(Patch(color="0.5", alpha=0.25, linewidth=0))
        labels.append(r"$\pm 2$ s.e.")
    axes[-1].set_xlabel(time_axis_label(data, points[0]))
    # curves fall from the upper left: the lower left corner is free
    axes[0].legend(handles, labels, loc="lower left", ncol=1 if len(points) < 5 else 2)
    return figure


def plot_alignment_family(data: SweepData, wide: bool = False, num_eigenvalues: int = 2):
    """A(t) = yᵀKy/(‖K‖_F‖y‖²) and the top NTK eigenvalues (λ1 solid, λ2 dashed, ...) per γ0."""
    data.require(GAMMA0, "alignment")
    if "alignment" not in data.summary:
        raise InputError("--kind alignment: the summary has no alignment column (multi-output "
                         "targets or no NTK in the results)")
    points = _sorted_by(data, _single_group(data, (GAMMA0,), "alignment"), GAMMA0)
    colors = ordered_colors(len(points))
    figure, (ax_align, ax_eig) = plt.subplots(2, 1, sharex=True, figsize=figure_size(wide, 4.0),
                                              constrained_layout=True)
    styles = ("-", "--", ":", "-.")
    count = min(num_eigenvalues, sum(f"ntk_eig{k}" in data.summary for k in range(1, 5)))
    start = None
    for point, color in zip(points, colors):
        if bool(data.column(point, "diverged")[0]):
            continue
        t = data.column(point, "t")
        label = _label([(GAMMA0, data.value(point, GAMMA0))])
        alignment = data.column(point, "alignment")
        ax_align.plot(t, alignment, "o-", color=color, markersize=2, label=label)
        start = alignment[0] if start is None else start
        for k in range(count):
            ax_eig.plot(t, data.column(point, f"ntk_eig{k + 1}"), styles[k % 4], color=color)
    if start is not None and data.parameterization(points[0]) == "mup":
        ax_align.axhline(start, color="black", linestyle=":", linewidth=0.9,
                         label=r"lazy ($\gamma_0 \to 0$)")
    for k in range(count):
        ax_eig.plot([], [], styles[k % 4], color="0.3", label=rf"$\lambda_{k + 1}(K)$")
    ax_align.set_ylabel(r"kernel-target alignment $A(t)$")
    ax_align.set_title(r"$A = y^\top K y \,/\, (\Vert K\Vert_F \Vert y\Vert^2)$", fontsize=7)
    ax_eig.set_ylabel(r"top eigenvalues of $K(t)$")
    ax_align.legend(loc="best", ncol=1 if len(points) < 5 else 2)
    if count:
        ax_eig.legend(loc="best")
    ax_eig.set_xlabel(time_axis_label(data, points[0]))
    return figure


# ---------------------------------------------------------------------------------------------
# Width


def _row_at(data: SweepData, point: int, time: float | None) -> int | None:
    """The summary row of `point` at saved time `time` (the last saved time when None)."""
    rows = data.rows(point)
    if time is None:
        return int(rows[-1])
    t = data.summary["t"][rows]
    index = int(np.argmin(np.abs(t - time)))
    return int(rows[index]) if abs(t[index] - time) <= 1e-9 * max(1.0, time) else None


def plot_width_deviation(data: SweepData, time: float | None = None, wide: bool = False):
    """⟨‖f_N(t) − f_∞(t)‖²⟩/P against N (±2 s.e.), one line per point, with a 1/N guide."""
    if not data.widths or not any(f"N{w}_f_dev" in data.summary for w in data.widths):
        raise InputError("--kind width needs a sweep with --widths (sampled finite widths) "
                         "whose limit converged")
    widths = np.asarray(data.widths, dtype=np.float64)
    figure, ax = plt.subplots(figsize=figure_size(wide), constrained_layout=True)
    points = data.point_ids
    colors = ordered_colors(len(points)) if len(points) > len(PALETTE) - 1 else PALETTE
    guide_level = None
    shown_t = set()
    for point, color in zip(points, colors):
        row = _row_at(data, point, time)
        if row is None:
            continue
        shown_t.add(float(data.summary["t"][row]))
        values = np.array([data.summary.get(f"N{w}_f_dev", np.full(1, np.nan))[row]
                           if f"N{w}_f_dev" in data.summary else np.nan for w in data.widths])
        errors = np.array([data.summary[f"N{w}_f_dev_stderr"][row]
                           if f"N{w}_f_dev_stderr" in data.summary else np.nan
                           for w in data.widths])
        good = np.isfinite(values) & (values > 0)
        if not np.any(good):
            continue
        label = _label([(key, data.value(point, key)) for key in data.keys]) or None
        ax.errorbar(widths[good], values[good], yerr=_log_errors(values[good], errors[good]),
                    fmt="o-",
                    color=color, markersize=3, capsize=2, label=label)
        if guide_level is None:
            guide_level = float(np.exp(np.mean(np.log(values[good] * widths[good]))))
    if guide_level is None:
        raise InputError("--kind width: no finite deviations at the chosen time")
    grid = np.geomspace(widths.min(), widths.max(), 50)
    ax.plot(grid, guide_level / grid, ":", color="black", linewidth=1.0, label=r"$\propto 1/N$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis, data.widths)
    ax.set_xlabel(r"width $N$")
    when = f"$t = {_format(shown_t.pop())}$" if len(shown_t) == 1 else "the last saved time"
    ax.set_ylabel(r"$\langle\Vert f_N - f_\infty\Vert^2\rangle / P$" + f" at {when}")
    ax.set_title("mean over seeds, bars $\\pm 2$ s.e.", fontsize=7)
    ax.legend(loc="best")
    return figure


# ---------------------------------------------------------------------------------------------
# Learning-rate and depth transfer


def _transfer_curve(data: SweepData, points: list[int], column: str, time: float | None):
    """(η0, loss, stderr, diverged) over `points`, at the chosen row of each point."""
    rates, losses, errors, diverged = [], [], [], []
    for point in _sorted_by(data, points, RATE):
        row = _row_at(data, point, time)
        rates.append(float(data.value(point, RATE)))
        if row is None or column not in data.summary:
            losses.append(np.nan)
            errors.append(np.nan)
            diverged.append(False)
            continue
        width_div = column.startswith("N") and f"{column.split('_', 1)[0]}_diverged" in data.summary
        flag = (data.summary[f"{column.split('_', 1)[0]}_diverged"][row] if width_div
                else data.summary["diverged"][row])
        diverged.append(bool(flag))
        losses.append(float(data.summary[column][row]) if not flag else np.nan)
        stderr = data.summary.get(f"{column}_stderr")
        errors.append(float(stderr[row]) if stderr is not None and not flag else np.nan)
    return (np.asarray(rates), np.asarray(losses), np.asarray(errors), np.asarray(diverged))


def _log_errors(values: np.ndarray, stderr: np.ndarray) -> np.ndarray:
    """±2 s.e. bars for a log axis: the lower bar stops at a tenth of the value (an interval
    reaching 0 or below has no place on it), (2, n) as errorbar takes them."""
    spread = 2 * np.nan_to_num(stderr)
    return np.vstack([np.minimum(spread, 0.9 * values), spread])


def _mark_divergent(ax, rates, diverged, color, offset: float) -> bool:
    if not np.any(diverged):
        return False
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(rates[diverged], np.full(diverged.sum(), 0.96 - offset), "x", color=color,
            markersize=4, transform=transform, clip_on=False)
    return True


def _steps_label(data: SweepData, points: list[int], time: float | None) -> str:
    steps = set()
    for point in points:
        row = _row_at(data, point, time)
        if row is not None and "step" in data.summary:
            steps.add(int(data.summary["step"][row]))
    if len(steps) == 1:
        return f"after $k = {steps.pop()}$ steps"
    if time is not None:
        return f"at $t = {_format(time)}$"
    return "at the last saved time"


def _transfer_panel(ax, data: SweepData, points: list[int], time: float | None,
                    curves: list[tuple[str, list[int], Any, str]]) -> bool:
    """Draw finite-width/limit curves; returns whether any divergent point was marked."""
    marked = False
    for index, (column, subset, color, label) in enumerate(curves):
        rates, losses, errors, diverged = _transfer_curve(data, subset, column, time)
        limit = not column.startswith("N")
        good = np.isfinite(losses)
        if limit:
            ax.plot(rates[good], losses[good], "o-", color=color, linewidth=1.8, markersize=3,
                    zorder=10, label=label)
            if np.any(good):
                best = np.flatnonzero(good)[np.argmin(losses[good])]
                ax.plot(rates[best], losses[best], "*", color=color, markersize=9,
                        markeredgecolor="white", markeredgewidth=0.5, zorder=11)
        else:
            ax.errorbar(rates[good], losses[good], yerr=_log_errors(losses[good], errors[good]),
                        fmt="s--", color=color, markersize=2.5, linewidth=0.9, capsize=1.5,
                        label=label)
        marked |= _mark_divergent(ax, rates, diverged, color, 0.03 * index)
    ax.set_xscale("log")
    ax.set_yscale("log")
    rates = sorted({float(data.value(p, RATE)) for p in points})
    span = rates[-1] / rates[0] if rates and rates[0] > 0 else 1.0
    # a grid within two decades gets its own η0 as ticks (a log axis would show one or none)
    _plain_log_ticks(ax.xaxis, rates if len(rates) <= 6 and span < 100 else None)
    return marked


def _transfer_legend(ax, marked: bool, star_color, title: str | None = None) -> None:
    ax.plot([], [], "*", color=star_color, markersize=8, label="predicted optimum")
    if marked:
        ax.plot([], [], "x", color="0.3", markersize=4, label="diverged")
    # above the panel: the curves of a transfer figure fill the axes
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=6.5,
              columnspacing=1.0, handlelength=1.8, title=title, title_fontsize=6.5)


def _loss_label(data: SweepData, points: list[int], time: float | None) -> str:
    return rf"train loss $\mathcal{{L}}$ {_steps_label(data, points, time)}"


def plot_lr_transfer(data: SweepData, time: float | None = None, wide: bool = False):
    """Loss after k steps against η0: the limit (thick, on top, its optimum starred) and each
    sampled width (mean ± 2 s.e.); divergent points as crosses at the top. One panel per value
    of the other swept keys."""
    data.require(RATE, "lr_transfer")
    groups = data.groups((RATE,))
    if len(groups) > 4:
        raise InputError(f"--kind lr_transfer: {len(groups)} panels (other swept keys "
                         f"{[k for k in data.keys if k != RATE]}); at most 4")
    wide = wide or len(groups) > 1
    figure, axes = plt.subplots(1, len(groups), squeeze=False, sharey=True,
                                figsize=figure_size(wide, 2.6), constrained_layout=True)
    colors = ordered_colors(len(data.widths))
    for ax, (items, points) in zip(axes[0], groups.items()):
        curves = [(f"N{w}_loss_train", points, color, f"$N = {w}$")
                  for w, color in zip(data.widths, colors)]
        curves.append(("loss_train", points, "black", r"limit ($N \to \infty$)"))
        marked = _transfer_panel(ax, data, points, time, curves)
        ax.set_xlabel(r"learning rate $\eta_0$")
        if items:
            ax.text(0.98, 0.02, _label(items), transform=ax.transAxes, ha="right", va="bottom")
        _transfer_legend(ax, marked, "black",
                         r"finite $N$: mean over seeds $\pm 2$ s.e." if data.widths else None)
    axes[0][0].set_ylabel(_loss_label(data, data.point_ids, time))
    return figure


def plot_depth_transfer(data: SweepData, time: float | None = None, wide: bool = False):
    """Loss after k steps against η0 for each depth L: the limit per L (solid, optimum starred)
    and, when sampled, the largest width per L (dashed)."""
    data.require(RATE, "depth_transfer")
    data.require(DEPTH, "depth_transfer")
    points = _single_group(data, (RATE, DEPTH), "depth_transfer")
    depths = sorted({data.value(p, DEPTH) for p in points})
    colors = ordered_colors(len(depths))
    figure, ax = plt.subplots(figsize=figure_size(wide, 2.6), constrained_layout=True)
    curves = []
    for depth, color in zip(depths, colors):
        subset = [p for p in points if data.value(p, DEPTH) == depth]
        curves.append(("loss_train", subset, color, f"$L = {depth}$"))
        if data.widths:
            curves.append((f"N{max(data.widths)}_loss_train", subset, color,
                           f"$L = {depth}$, $N = {max(data.widths)}$"))
    marked = _transfer_panel(ax, data, points, time, curves)
    ax.set_xlabel(r"learning rate $\eta_0$")
    ax.set_ylabel(_loss_label(data, points, time))
    _transfer_legend(ax, marked, "0.3")
    return figure


# ---------------------------------------------------------------------------------------------


def plot_sweep_figure(folder: str | Path, kind: str, stem: str | Path | None = None,
                      time: float | None = None, wide: bool = False) -> list[Path]:
    """Draw figure `kind` (one of `KINDS`) from the saved data of the sweep in `folder` and write
    ``stem.pdf`` and ``stem.png`` (default stem ``folder/figures/kind``), each atomically."""
    from ..io import atomic_file

    if kind not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if time is not None and (not math.isfinite(time) or time < 0):
        raise InputError(f"--time must be a finite number >= 0, got {time!r}")
    data = SweepData(folder)
    stem = Path(folder) / "figures" / kind if stem is None else Path(stem)
    draw: Mapping[str, Any] = {
        "gamma0": lambda: plot_gamma0_family(data, wide),
        "alignment": lambda: plot_alignment_family(data, wide),
        "width": lambda: plot_width_deviation(data, time, wide),
        "lr_transfer": lambda: plot_lr_transfer(data, time, wide),
        "depth_transfer": lambda: plot_depth_transfer(data, time, wide),
    }
    with paper_style():
        figure = draw[kind]()
        paths = []
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            plt.close(figure)
            raise InputError(f"cannot create {stem.parent}: {error.strerror or error}") from None
        try:
            for suffix in (".pdf", ".png"):
                path = Path(f"{stem}{suffix}")
                with atomic_file(path) as staging:
                    figure.savefig(staging, format=suffix[1:])
                paths.append(path)
        finally:
            plt.close(figure)
    return paths
