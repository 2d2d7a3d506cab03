"""Saxe's stages: a two-layer linear μP network with C = 3 outputs on whitened inputs learns the
singular modes of its input–output correlation one after another. The infinite-width DMFT
(two-layer particle solver), real networks at several widths (`dmft.sample`), the exact mode
law m_α(t) of derivations/saxe_stages.md, and the sigmoid of Saxe, McClelland & Ganguli (2014,
Eq. 12) with τ = 1/γ0 and u0 = 1/(2γ0), which the exact law approaches as γ0 s_α grows.

    python examples/saxe_stages/run.py            # full: widths 256, 1024, 4096, 8 seeds
    python examples/saxe_stages/run.py --quick    # tiny version (tests)

Writes saxe_stages.pdf/.png and saxe_stages.npz next to this file (or in --out), and prints the
stage-time table and a JSON summary.
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
from dmft import Architecture, Data, Spec, Training  # noqa: E402

SINGULAR_VALUES = (2.0, 0.6, 0.2)
NUM_TRAIN, INPUT_DIM = 16, 4


def whitened_task(seed: int = 0):
    """Inputs with (1/PD) XᵀX = I_D and targets y = A x/√D, so that Σ_yx = A = U diag(s) Vᵀ
    (derivations/saxe_stages.md): returns x, y, U (C × C) and V (D × C)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((NUM_TRAIN, INPUT_DIM)))
    x = np.sqrt(NUM_TRAIN * INPUT_DIM) * q
    C = len(SINGULAR_VALUES)
    u, _ = np.linalg.qr(rng.standard_normal((C, C)))
    v, _ = np.linalg.qr(rng.standard_normal((INPUT_DIM, C)))
    a = u @ np.diag(SINGULAR_VALUES) @ v.T
    return x, x @ a.T / np.sqrt(INPUT_DIM), u, v


def mode_law(t, s, gamma0):
    """The exact infinite-width mode strength, dm/dt = 2(s − m)√(1 + γ0²m²), m(0) = 0 (closed
    form of derivations/saxe_stages.md)."""
    a = gamma0 * s
    b = np.sqrt(a * a + 1.0)
    w_plus, w_minus = a + b, a - b
    decay = np.exp(-2.0 * b * np.asarray(t))
    w = (w_plus * (1 - w_minus) + decay * w_minus * (w_plus - 1)) / (
        decay * (w_plus - 1) + (1 - w_minus))
    return (w - 1.0 / w) / (2.0 * gamma0)


def saxe_sigmoid(t, s, gamma0):
    """Saxe et al.'s u(t) = s e^{2st/τ}/(e^{2st/τ} − 1 + s/u0) with τ = 1/γ0, u0 = 1/(2γ0)."""
    growth = np.exp(2.0 * s * gamma0 * np.asarray(t))
    return s * growth / (growth - 1.0 + 2.0 * gamma0 * s)


def mode_strengths(f, x, u, v):
    """m_α = u_αᵀ M v_α of the end-to-end map M = (1/(P√D)) Σ_μ f_μ x_μᵀ (exact on whitened
    inputs, where f = M x/√D); f (..., P, C) → (..., C)."""
    end_to_end = np.einsum("...pc,pd->...cd", f, x) / (x.shape[0] * np.sqrt(x.shape[1]))
    return np.einsum("ca,...cd,da->...a", u, end_to_end, v)


def half_time(t, m, s):
    """The first time m reaches s/2 (linear interpolation between saved times); NaN if never."""
    above = np.flatnonzero(m >= s / 2)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    k = above[0]
    return float(t[k - 1] + (s / 2 - m[k - 1]) * (t[k] - t[k - 1]) / (m[k] - m[k - 1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny version: 2 widths, 2 seeds")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--gamma0", type=float, default=20.0)
    parser.add_argument("--widths", default=None, help="comma-separated widths")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args(argv)
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else \
        ((128, 512) if args.quick else (256, 1024, 4096))
    seeds = args.seeds or (2 if args.quick else 8)
    # geometric times: each mode's sigmoid has width ~1/(2γ0 s_α), its stage time ~ln(2γ0 s_α)/(2γ0 s_α)
    times = np.concatenate([[0.0], np.geomspace(2e-3, 1.5, 30 if args.quick else 90)])
    x, y, u, v = whitened_task()
    spec = Spec(Architecture(1, "linear", "mup", gamma0=args.gamma0), Data(x, y),
                Training(tuple(times)), solver={"method": "two_layer"})
    limit = dmft.solve(spec)
    samples = dmft.sample(spec, widths, seeds, hessian_steps=0)
    s = np.asarray(SINGULAR_VALUES)
    exact = np.stack([mode_law(times, sa, args.gamma0) for sa in s], axis=-1)  # (T, C)
    saxe = np.stack([saxe_sigmoid(times, sa, args.gamma0) for sa in s], axis=-1)
    modes = {"limit": mode_strengths(np.asarray(limit.f_train), x, u, v)}
    for width in widths:
        modes[width] = mode_strengths(samples[width]["f_train"], x, u, v)  # (seeds, T, C)
    report = summary(times, s, exact, saxe, modes, widths, args.gamma0)
    print(json.dumps(report, indent=1))
    np.savez(args.out / "saxe_stages.npz", t=times, singular_values=s, exact=exact, saxe=saxe,
             limit=modes["limit"], limit_loss=limit.losses(y)["loss_train"],
             **{f"N{w}_modes": modes[w] for w in widths},
             **{f"N{w}_loss": samples[w]["loss_train"] for w in widths})
    paths = figure(times, s, exact, saxe, modes, widths, args.gamma0, args.out / "saxe_stages")
    print("wrote", *paths)
    return 0


def summary(times, s, exact, saxe, modes, widths, gamma0) -> dict:
    """Stage (half-)times per mode from each source, and the largest gaps to the exact law."""
    print(f"gamma0 = {gamma0:g}; singular values {list(s)}; stage time = first t with m = s/2")
    header = f"{'mode':>4} {'s':>5} {'exact':>7} {'Saxe':>7} {'DMFT':>7}"
    print(header + "".join(f" {'N' + str(w):>7}" for w in widths))
    stages = {}
    for a, sa in enumerate(s):
        row = {"exact": half_time(times, exact[:, a], sa), "saxe": half_time(times, saxe[:, a], sa),
               "limit": half_time(times, modes["limit"][:, a], sa)}
        for w in widths:
            row[f"N{w}"] = half_time(times, modes[w][:, :, a].mean(axis=0), sa)
        stages[f"mode{a + 1}"] = row
        print(f"{a + 1:4d} {sa:5.2f}" + "".join(f" {value:7.4f}" for value in row.values()))
    gaps = {f"N{w}": float(np.abs(modes[w].mean(axis=0) - exact).max()) for w in widths}
    return {"gamma0": gamma0, "stage_times": stages,
            "limit_vs_exact": float(np.abs(modes["limit"] - exact).max()),
            "saxe_vs_exact": float(np.abs(saxe - exact).max()),
            "networks_vs_exact": gaps}


def figure(times, s, exact, saxe, modes, widths, gamma0, stem):
    import matplotlib.pyplot as plt

    from dmft.figures import PALETTE, figure_size, paper_style, save_figure

    with paper_style():
        fig, ax = plt.subplots(figsize=figure_size(False, 2.6))
        colors = PALETTE[: len(s)]  # modes are categories: the qualitative palette
        shades = np.linspace(0.35, 0.85, len(widths))
        for a, (sa, color) in enumerate(zip(s, colors)):
            ax.plot(times[1:], modes["limit"][1:, a] / sa, color=color, linewidth=1.8,
                    label=f"$s_{a + 1} = {sa:g}$ limit")
            ax.plot(times[1:], exact[1:, a] / sa, color="black", linewidth=0.8, linestyle="--",
                    label="exact mode law" if a == 0 else None)
            ax.plot(times[1:], saxe[1:, a] / sa, color="0.45", linewidth=0.8, linestyle=":",
                    label="Saxe et al. sigmoid" if a == 0 else None)
            for w, alpha in zip(widths, shades):
                mean = modes[w][:, :, a].mean(axis=0)
                ax.plot(times[1::3], mean[1::3] / sa, "o", color=color, alpha=alpha, markersize=2.2,
                        label=f"$N = {w}$" if a == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("time $t$")
        ax.set_ylabel(r"mode strength $m_\alpha(t)/s_\alpha$")
        ax.set_title(rf"two-layer linear $\mu$P, $\gamma_0 = {gamma0:g}$, $C = {len(s)}$")
        ax.set_ylim(-0.05, 1.1)
        ax.legend(fontsize=6, loc="upper left", ncol=1)
        return save_figure(fig, stem)


if __name__ == "__main__":
    sys.exit(main())
