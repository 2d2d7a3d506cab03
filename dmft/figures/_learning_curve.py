"""The learning-curve figure of ``dmft run``: the loss against time, for the discrete rules
("gd", "sgd") a panel with the sharpness λ_max(K)/P and the edge-of-stability line 2/η0
(docs/conventions.md §2a, §5), and where the data have class labels a panel with the train (and
test) accuracy."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ._style import COLUMN_WIDTH, paper_style, save_figure
from ._titles import run_title, time_label


def time_axis(ax, t: np.ndarray, label: str | None = None) -> None:
    positive = t[t > 0]
    if positive.size >= 2 and positive.max() / positive.min() > 50:
        # Times span decades: a log axis, with t = 0 drawn at the linear threshold. Ticks at 0 and
        # at the decades above the threshold only (a decade inside the linear part would sit on
        # top of the 0 tick).
        threshold = float(positive.min())
        ax.set_xscale("symlog", linthresh=threshold, linscale=0.3)
        low, high = int(np.ceil(np.log10(threshold))), int(np.floor(np.log10(positive.max())))
        ax.set_xticks([0.0] + [10.0**k for k in range(low, high + 1)])
    ax.set_xlabel(label or time_label())


def dense_times(t: np.ndarray, count: int = 400) -> np.ndarray:
    """A dense grid over [0, max t] for closed-form curves: uniform, plus log-spaced points when
    the saved times span decades; always contains the saved times themselves."""
    t = np.asarray(t, dtype=np.float64)
    top = float(t.max()) if t.size else 0.0
    if top <= 0:
        return t
    grid = [np.linspace(0.0, top, count), t]
    positive = t[t > 0]
    if positive.size >= 2 and positive.max() / positive.min() > 50:
        grid.append(np.geomspace(positive.min() / 10, top, count))
    return np.unique(np.concatenate(grid))


def lazy_dense_losses(arrays: dict[str, np.ndarray], spec) -> dict[str, np.ndarray] | None:
    """The lazy closed form 𝓛(t) on `dense_times`, from the frozen NTK already in `arrays` (the
    solver's own closed form, no kernels recomputed); None when the curve is not the lazy gradient
    flow (μP, another optimizer, no NTK)."""
    if spec is None or spec.architecture.parameterization != "ntk" or "ntk" not in arrays:
        return None
    if getattr(spec.training, "optimizer", "flow") != "flow":
        return None  # discrete steps: the saved points are the curve
    if getattr(spec.training, "loss", "mse") != "mse":
        return None  # cross-entropy has no closed form: the saved points are the curve
    import jax.numpy as jnp

    from ..network import MSE
    from ..solvers import lazy_closed_form

    data = spec.data
    y = np.asarray(data.y_train, dtype=np.float64)
    if y.ndim != 1:
        return None
    t = dense_times(np.asarray(arrays["t"]))
    ntk = np.asarray(arrays["ntk"])[0]
    cross = np.asarray(arrays.get("ntk_test_train", np.zeros((1, 0, y.size))))[0]
    f_train, f_test = lazy_closed_form(jnp.asarray(ntk), jnp.asarray(cross), jnp.asarray(y), jnp.asarray(t))
    out = {"t": t, "loss_train": MSE().value(np.asarray(f_train), y)}
    if data.y_test is not None and cross.shape[0] and "loss_test" in arrays:
        out["loss_test"] = MSE().value(np.asarray(f_test), np.asarray(data.y_test))
    return out


def discrete_rule(spec) -> tuple[str, float] | None:
    """(optimizer, η0) of a "gd" / "sgd" spec, None for gradient flow or no spec."""
    training = getattr(spec, "training", None)
    if training is None or getattr(training, "optimizer", "flow") == "flow":
        return None
    return training.optimizer, float(training.learning_rate)


def _rule_text(spec) -> str:
    optimizer, eta = discrete_rule(spec)
    text = rf"{optimizer.upper()}, $\eta_0 = {eta:.3g}$"
    if optimizer == "sgd":
        text += f", $B = {spec.training.batch_size}$"
    return text


def plot_learning_curve(
    arrays: dict[str, np.ndarray], stem: str | Path, title: str | None = None, spec=None
) -> list[Path]:
    """Train (and test) loss 𝓛(t), with Monte Carlo bands (±2 s.e.) when present: the MSE
    (1/2P)Σ‖f − y‖² or, for a cross-entropy spec, (1/P)Σ[logsumexp(f) − y·f].

    With `spec` the title names the run (`run_title`), the time axis its units, and the lazy
    closed form (MSE, one output) is drawn on a dense time grid, the saved times as markers. For a
    "gd" / "sgd" spec a second panel (``figure.axes[1]``) draws the sharpness λ_max(K)/P
    (``arrays["sharpness"]``, with its ±2 s.e. band when ``sharpness_stderr`` is given) against
    the line 2/η0 above which GD on the linearised model is unstable. When `arrays` hold
    ``accuracy_train`` (data with class labels) the last panel draws the train and test accuracy.
    """
    t = np.asarray(arrays["t"])
    dense = lazy_dense_losses(arrays, spec)
    rule = discrete_rule(spec)
    cross_entropy = getattr(getattr(spec, "training", None), "loss", "mse") == "cross_entropy"
    if title is None and spec is not None:
        regime = "lazy limit (closed form)" if spec.architecture.parameterization == "ntk" \
            else "DMFT limit"
        if cross_entropy and spec.architecture.parameterization == "ntk":
            regime = "lazy limit (kernel ODE)" if rule is None else "lazy limit"
        if rule is not None:
            regime = regime.replace(" (closed form)", "") + "; " + _rule_text(spec)
        title = run_title(spec, regime)
    with paper_style():
        sharp = rule is not None and "sharpness" in arrays
        accuracy = "accuracy_train" in arrays
        extra = int(sharp) + int(accuracy)
        if extra:
            figure, axes = plt.subplots(
                1 + extra, 1, sharex=True,
                figsize=(COLUMN_WIDTH, (1.0 + 0.45 * extra) * 0.74 * COLUMN_WIDTH),
                gridspec_kw={"height_ratios": (3,) + (2,) * extra})
            ax, others = axes[0], list(axes[1:])
        else:
            figure, ax = plt.subplots()
            others = []
        sharp_ax = others.pop(0) if sharp else None
        accuracy_ax = others.pop(0) if accuracy else None
        banded = False
        for key, label in (("loss_train", "train"), ("loss_test", "test")):
            if key not in arrays:
                continue
            loss = np.asarray(arrays[key])
            if dense is not None and key in dense:
                (line,) = ax.plot(dense["t"], dense[key], label=label)
                ax.plot(t, loss, "o", color=line.get_color(), markersize=2.5)
            else:
                (line,) = ax.plot(t, loss, "o-", markersize=2.5, label=label)
            stderr = arrays.get(f"{key}_stderr")
            if stderr is not None:
                banded = True
                ax.fill_between(t, loss - 2 * stderr, loss + 2 * stderr, color=line.get_color(),
                                alpha=0.25, linewidth=0)
        if dense is not None:
            ax.plot([], [], "o", color="0.4", markersize=2.5, label="saved times")
        if banded:
            ax.fill_between([], [], [], color="0.4", alpha=0.25, linewidth=0,
                            label=r"$\pm 2$ Monte Carlo s.e.")
        label = time_label(spec)
        if rule is not None:
            label += r", step $k = t/\eta_0$"
        bottom = accuracy_ax if accuracy_ax is not None else sharp_ax
        time_axis(ax, t, None if bottom is not None else label)
        if bottom is not None:
            ax.set_xlabel("")
        if sharp_ax is not None:
            _sharpness_panel(sharp_ax, t, arrays, rule[1])
            time_axis(sharp_ax, t, label if bottom is sharp_ax else None)
            if bottom is not sharp_ax:
                sharp_ax.set_xlabel("")
        if accuracy_ax is not None:
            _accuracy_panel(accuracy_ax, t, arrays)
            time_axis(accuracy_ax, t, label)
        ax.set_yscale("log")
        initial = np.nanmax(np.asarray(arrays["loss_train"]))
        if np.isfinite(initial) and initial > 0:
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-10 * initial))  # show ten decades at most
        ax.set_ylabel(r"loss $\mathcal{L}(t)$ (cross-entropy)" if cross_entropy
                      else r"loss $\mathcal{L}(t) = \Vert f - y\Vert^2 / 2P$")
        if title:
            ax.set_title(title)
        ax.legend()
        return save_figure(figure, stem)


def _accuracy_panel(ax, t, arrays) -> None:
    """Train (and test) accuracy at the saved times, on [0, 1]."""
    for key, label in (("accuracy_train", "train"), ("accuracy_test", "test")):
        if key in arrays:
            ax.plot(t, np.asarray(arrays[key]), "o-", markersize=2.5, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("accuracy")
    ax.legend()


def _sharpness_panel(ax, t, arrays, learning_rate: float) -> None:
    """λ_max(K)/P at the saved times (±2 s.e. when given) and the edge 2/η0."""
    sharpness = np.asarray(arrays["sharpness"])
    (line,) = ax.plot(t, sharpness, "o-", markersize=2.5, label=r"$\lambda_{\max}(K)/P$")
    stderr = arrays.get("sharpness_stderr")
    if stderr is not None:
        ax.fill_between(t, sharpness - 2 * stderr, sharpness + 2 * stderr,
                        color=line.get_color(), alpha=0.25, linewidth=0)
    ax.axhline(2.0 / learning_rate, color="0.3", linestyle="--", linewidth=1.0,
               label=r"$2/\eta_0$")
    top = max(float(np.nanmax(sharpness)), 2.0 / learning_rate)
    ax.set_ylim(0.0, 1.15 * top)
    ax.set_ylabel("sharpness")
    ax.legend()
