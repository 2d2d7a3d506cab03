"""Shared pieces of the finite-step examples (edge of stability, catapult): the task, the
learning rate chosen from the initial kernel, the limit and the finite-width ensembles, and the
two-panel figure (loss and η0·λ_max(K)/P against the step)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run from a checkout: use this tree's dmft
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft  # noqa: E402
from dmft.spec import Training, load_spec  # noqa: E402

TASK = REPO / "examples" / "mup_two_layer_tanh.toml"  # two-layer tanh μP, γ0 = 1, P = 8, D = 4
WIDTHS = (256, 512, 1024, 2048, 4096)
QUICK_WIDTHS = (256, 512)


def parse_args(doc: str, ratio: float, quick_steps: int, full_steps: int, argv=None,
               add_arguments=None) -> argparse.Namespace:
    """The examples' shared command line: --quick, --out, --ratio, --steps, --seeds, plus the
    resolved ``steps``, ``seeds``, ``widths`` and ``particles``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny version: {quick_steps} steps, 2 widths")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--ratio", type=float, default=ratio, help="η0·λ_max(K0)/P")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    args.steps = args.steps or (quick_steps if args.quick else full_steps)
    args.seeds = args.seeds or (2 if args.quick else 4)
    args.widths = QUICK_WIDTHS if args.quick else WIDTHS
    args.particles = 1024 if args.quick else 8192
    return args


def limit_and_widths(args):
    """The μP spec at ``args.ratio``, its η0, the limit's arrays and the width ensembles, with a
    table printed; None (after saying why) when the limit diverges."""
    spec, eta = gd_spec(args.ratio, args.steps, args.particles)
    print(f"lambda_max(K0)/P = {args.ratio / eta:.6f}; eta0 = {eta:.6f} "
          f"(eta0*lambda_max(K0)/P = {args.ratio:g}); steps {args.steps}, widths "
          f"{list(args.widths)}, seeds {args.seeds}, particles {args.particles}")
    lim = limit(spec)
    if isinstance(lim, str):
        print("the limit diverged:", lim)
        return None
    ens = ensembles(spec, args.widths, args.seeds)
    print_table(eta, lim, ens)
    return spec, eta, lim, ens


def save_arrays(path: Path, eta: float, lim: dict, ens: dict, **extra: np.ndarray) -> None:
    """eta0, the limit's loss and sharpness, every width's (seeds, T) loss and sharpness."""
    arrays = {"eta0": np.asarray(eta), "limit_loss": lim["loss_train"],
              "limit_sharpness": lim["sharpness"], **extra}
    for w, a in ens.items():
        arrays[f"N{w}_loss"] = a["loss"]
        arrays[f"N{w}_sharpness"] = a["sharpness"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def deviation_summary(lim: dict, ens: dict, eta: float) -> dict[str, dict[str, float]]:
    return {str(w): {"loss_over_L0": d[0], "sharpness_rel": d[1]}
            for w, d in deviations(lim, ens, eta).items()}


def initial_sharpness(spec) -> float:
    """λ_max(K0)/P of the spec's infinite-width NTK at t = 0 (the output layer's NTK)."""
    kernels = dmft.kernels(spec)
    depth = spec.architecture.hidden_layers
    ntk = kernels[f"ntk_L{depth + 1}"]
    return float(np.linalg.eigvalsh(ntk)[-1] / spec.data.num_train)


def gd_spec(ratio: float, steps: int, particles: int, parameterization: str = "mup"):
    """The task trained by GD at η0 = ratio·P/λ_max(K0), saved at every step k = 0..steps."""
    base = load_spec(TASK)
    eta = ratio / initial_sharpness(base)
    training = Training(times=[k * eta for k in range(steps + 1)], optimizer="gd",
                        learning_rate=eta)
    if parameterization == "ntk":
        import dataclasses

        arch = dataclasses.replace(base.architecture, parameterization="ntk", gamma0=1.0)
        return base.replace(architecture=arch, training=training, solver={}), eta
    return base.replace(training=training,
                        solver={"method": "two_layer", "particles": particles}), eta


def limit(spec) -> dict[str, np.ndarray] | str:
    """The infinite-width result arrays, or the divergence message."""
    try:
        solution = dmft.solve(spec)
    except dmft.SolveError as error:
        return str(error)
    return solution.arrays(spec.data.y_train, spec.data.y_test)


def ensembles(spec, widths, seeds: int) -> dict[int, dict[str, np.ndarray]]:
    """Per width: loss and Gauss–Newton sharpness of every seed (seeds, T)."""
    samples = dmft.sample(spec, list(widths), seeds, hessian_steps=0)
    return {w: {"loss": samples[w]["loss_train"], "sharpness": samples[w]["sharpness"]}
            for w in widths}


def mean_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    good = np.all(np.isfinite(values), axis=1)
    values = values[good]
    mean = values.mean(axis=0)
    stderr = (values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1
              else np.zeros_like(mean))
    return mean, stderr


def deviations(lim: dict, ens: dict, eta: float) -> dict[int, tuple[float, float]]:
    """Per width: max over steps of |⟨𝓛_N⟩ − 𝓛_∞|/𝓛(0) and of |⟨λ_N⟩ − λ_∞|/λ_∞."""
    out = {}
    loss0 = float(lim["loss_train"][0])
    for width, arrays in ens.items():
        loss, _ = mean_stderr(arrays["loss"])
        sharp, _ = mean_stderr(arrays["sharpness"])
        out[width] = (float(np.max(np.abs(loss - lim["loss_train"])) / loss0),
                      float(np.max(np.abs(sharp - lim["sharpness"]) / lim["sharpness"])))
    return out


def print_table(eta: float, lim: dict, ens: dict) -> None:
    steps = np.arange(len(lim["loss_train"]))
    header = f"{'k':>3} {'L_inf':>9} {'eta*lam_inf':>11}" + "".join(
        f" {'L_N' + str(w):>9} {'eta*lam_' + str(w):>11}" for w in ens)
    print(header)
    means = {w: (mean_stderr(a["loss"])[0], mean_stderr(a["sharpness"])[0])
             for w, a in ens.items()}
    for k in steps:
        line = f"{k:3d} {lim['loss_train'][k]:9.5f} {eta * lim['sharpness'][k]:11.4f}"
        for w in ens:
            line += f" {means[w][0][k]:9.5f} {eta * means[w][1][k]:11.4f}"
        print(line)


def figure(eta: float, ratio: float, lim: dict, ens: dict, stem: Path, lazy=None,
           title: str = "") -> list[Path]:
    """Two panels against the step k (t = k·η0): the training loss (log scale) and η0·λ_max/P
    with the stability line 2. Limit thick black with ±2 s.e. band; widths mean ± 2 s.e."""
    import matplotlib.pyplot as plt

    from dmft.figures import figure_size, ordered_colors, paper_style, save_figure

    steps = np.arange(len(lim["loss_train"]))
    with paper_style():
        fig, (ax_loss, ax_sharp) = plt.subplots(1, 2, figsize=figure_size(True, 2.6),
                                                constrained_layout=True)
        colors = ordered_colors(len(ens))
        for (width, arrays), color in zip(ens.items(), colors):
            for ax, key, scale in ((ax_loss, "loss", 1.0), (ax_sharp, "sharpness", eta)):
                mean, stderr = mean_stderr(arrays[key])
                ax.plot(steps, scale * mean, "o", color=color, markersize=2.5,
                        label=f"$N = {width}$")
                ax.fill_between(steps, scale * (mean - 2 * stderr), scale * (mean + 2 * stderr),
                                color=color, alpha=0.25, linewidth=0)
        for ax, key, scale in ((ax_loss, "loss_train", 1.0), (ax_sharp, "sharpness", eta)):
            value = scale * lim[key]
            ax.plot(steps, value, "-", color="black", linewidth=1.6, zorder=10,
                    label=r"DMFT limit ($N \to \infty$)")
            err = lim.get(f"{key}_stderr")
            if err is not None:
                ax.fill_between(steps, value - 2 * scale * err, value + 2 * scale * err,
                                color="black", alpha=0.2, linewidth=0, zorder=9)
        if lazy is not None:
            lazy_steps, lazy_loss, lazy_sharp, lazy_label = lazy
            ax_loss.plot(lazy_steps, lazy_loss, "--", color="#D55E00", linewidth=1.2,
                         label=lazy_label)
            ax_sharp.plot(lazy_steps, eta * lazy_sharp, "--", color="#D55E00", linewidth=1.2,
                          label=lazy_label)
        ax_sharp.axhline(2.0, color="0.4", linestyle=":", linewidth=1.0,
                         label=r"stability edge $2$")
        ax_loss.set_yscale("log")
        for ax in (ax_loss, ax_sharp):
            ax.set_xlabel(r"GD step $k$ (time $t = k\eta_0$)")
        ax_loss.set_ylabel(r"train loss $\mathcal{L}$")
        ax_sharp.set_ylabel(r"$\eta_0\,\lambda_{\max}(K)/P$")
        ax_sharp.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5,
                        frameon=False)
        fig.suptitle(title or (rf"two-layer tanh $\mu$P, $\gamma_0 = 1$, $P = 8$: GD at "
                               rf"$\eta_0 \lambda_{{\max}}(K_0)/P = {ratio:g}$ "
                               rf"($\eta_0 = {eta:.3f}$); bands $\pm 2$ s.e."), fontsize=8)
        return save_figure(fig, stem)
