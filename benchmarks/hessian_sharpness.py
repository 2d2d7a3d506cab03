"""Hessian sharpness against Gauss–Newton sharpness of μP networks at initialisation (issue 11).

With 𝓛 = (1/2P) Σ (f − y)², η∇²𝓛 = η JᵀJ/P + R with R = (η/P) Σ_μ (f_μ − y_μ) ∇²f_μ (the
functional, non-Gauss–Newton part); the top eigenvalue of η JᵀJ/P is λ_max(K)/P
(`dmft.sampler.ntk_sharpness`). For each γ0 and width N this script draws `--seeds` networks of
the sampler (`dmft.sampler.member_key`, the same members `dmft sample` trains) and measures at
t = 0, by Lanczos on matrix-free products (`dmft.sampler._sharpness`):

    S_GN = λ_max(K)/P,   S_H = λ_max(η∇²𝓛),   r+ = λ_max(R),   r- = −λ_min(R),

as means ± standard errors over seeds, plus S_H at `--steps` and at 3×`--steps` Lanczos steps (the
largest change over seeds shows whether `--steps` has converged). η0 S_H > 2 is where one GD
step is unstable along the top Hessian direction; η0 S_GN > 2 where the linearised model is.

    python benchmarks/hessian_sharpness.py                     # the full table (minutes on CPU)
    python benchmarks/hessian_sharpness.py --widths 64,256 --gammas 0.5,1 --seeds 4   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dmft import Architecture  # noqa: E402
from dmft.sampler import FiniteNetwork, member_key, ntk_sharpness  # noqa: E402
from dmft.sampler._sharpness import (  # noqa: E402
    gauss_newton_matvec,
    hessian_matvec,
    lanczos_top_eigenvalue,
    start_vector,
)
from dmft.spec import teacher_data  # noqa: E402


def member_measurements(net: FiniteNetwork, x, y, steps: int):
    """(S_GN, S_H, S_H with 3× steps, r+, r-) of every member, vmapped over member keys."""

    def one(key):
        params = net.init(key)
        hvp, flat = hessian_matvec(net, params, x, y)
        gn, _ = gauss_newton_matvec(net, params, x)
        start = start_vector(jax.random.fold_in(key, 7), flat.size, flat.dtype)
        rest = lambda v: hvp(v) - gn(v)  # noqa: E731
        return (ntk_sharpness(net.kernels(params, x)["ntk"]),
                lanczos_top_eigenvalue(hvp, start, steps),
                lanczos_top_eigenvalue(hvp, start, 3 * steps),
                lanczos_top_eigenvalue(rest, start, steps),
                lanczos_top_eigenvalue(lambda v: -rest(v), start, steps))

    return jax.jit(jax.vmap(one))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,256,1024,4096")
    parser.add_argument("--gammas", default="0.25,0.5,1,2")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--input-dim", type=int, default=8)
    parser.add_argument("--hidden-layers", type=int, default=1)
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--steps", type=int, default=40, help="Lanczos steps (the sampler's default)")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    gammas = [float(g) for g in args.gammas.split(",")]
    data = teacher_data(num_train=args.points, num_test=0, input_dim=args.input_dim, seed=0)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    print(f"mu-P {args.activation}, L = {args.hidden_layers}, P = {args.points}, "
          f"D = {args.input_dim}, {args.seeds} seeds, {args.steps} Lanczos steps, t = 0")
    header = (f"{'gamma0':>7}{'N':>6}{'S_GN = lmax(K)/P':>20}{'S_H = lmax(eta H)':>20}"
              f"{'S_H - S_GN':>18}{'lmax(R)':>16}{'-lmin(R)':>16}{'dS_H(3x steps)':>16}{'s':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for gamma in gammas:
        arch = Architecture(args.hidden_layers, args.activation, "mup", gamma0=gamma)
        for width in widths:
            net = FiniteNetwork(arch, width, args.input_dim)
            keys = jax.vmap(lambda s: member_key(s, width))(jnp.arange(args.seeds, dtype=jnp.uint32))
            start = time.perf_counter()
            gn, hess, hess_more, r_top, r_bottom = (
                np.asarray(a) for a in member_measurements(net, x, y, args.steps)(keys))
            wall = time.perf_counter() - start

            def stat(values):
                return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))

            row = {"gamma0": gamma, "width": width, "S_GN": stat(gn), "S_H": stat(hess),
                   "S_H_minus_S_GN": stat(hess - gn), "R_top": stat(r_top),
                   "R_bottom": stat(r_bottom),
                   "lanczos_change": float(np.abs(hess_more - hess).max()), "wall_s": wall}
            rows.append(row)

            def show(pair):
                return f"{pair[0]:.4f}±{pair[1]:.4f}"

            print(f"{gamma:>7g}{width:>6}{show(row['S_GN']):>20}{show(row['S_H']):>20}"
                  f"{show(row['S_H_minus_S_GN']):>18}{show(row['R_top']):>16}"
                  f"{show(row['R_bottom']):>16}{row['lanczos_change']:>16.2e}{wall:>6.1f}")
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
