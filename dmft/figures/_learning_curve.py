"""The learning-curve figure of ``dmft run``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ._style import paper_style, save_figure


def _time_axis(ax, t: np.ndarray) -> None:
    positive = t[t > 0]
    if positive.size >= 2 and positive.max() / positive.min() > 50:
        # Times span decades: a log axis, with t = 0 drawn at the linear threshold.
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.3)
    ax.set_xlabel("training time $t$")


def plot_learning_curve(
    arrays: dict[str, np.ndarray], stem: str | Path, title: str | None = None
) -> list[Path]:
    """Train (and test) loss 𝓛(t) = (1/2P)Σ(f − y)², with Monte Carlo bands when present."""
    t = np.asarray(arrays["t"])
    with paper_style():
        figure, ax = plt.subplots()
        for key, label in (("loss_train", "train"), ("loss_test", "test")):
            if key not in arrays:
                continue
            loss = np.asarray(arrays[key])
            (line,) = ax.plot(t, loss, label=label)
            stderr = arrays.get(f"{key}_stderr")
            if stderr is not None:
                ax.fill_between(t, loss - 2 * stderr, loss + 2 * stderr, color=line.get_color(),
                                alpha=0.25, linewidth=0)
        _time_axis(ax, t)
        ax.set_yscale("log")
        initial = np.nanmax(np.asarray(arrays["loss_train"]))
        if np.isfinite(initial) and initial > 0:
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-10 * initial))  # show ten decades at most
        ax.set_ylabel(r"loss $\mathcal{L}(t)$")
        if title:
            ax.set_title(title)
        ax.legend()
        return save_figure(figure, stem)
