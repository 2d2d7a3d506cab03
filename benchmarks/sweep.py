"""Speed of vectorised sweeps against the point-by-point loop.

Two lazy sweeps, each at several training-set sizes P (L = 2 tanh, D = 8 teacher data):

- ``lr``: gradient descent over M learning rates η0 (NTK parameterization, the same 50 steps at
  every η0, `training.steps`). The loop calls `dmft.solve` per point: the NTK (and its test
  block) and eigh(K) every time. The vectorised sweep computes K and eigh(K) once and evaluates
  f_k = (I − (I − η0K/P)^k) y per η0 (`dmft.sweep._lazy`).
- ``gamma0``: the lazy (γ0 → 0) reference of a μP γ0 sweep, M values of γ0, gradient flow at 50
  times: the loop solves `dmft.solve_lazy` per γ0, the sweep computes the kernel once.

Columns: the compute of the loop and of the shared-kernel path (warm: one untimed call of each
first, so compilation is not counted), their ratio, and the end-to-end `dmft.sweep` wall time
into a fresh folder (result files, no per-point figures) with ``vectorize=True`` and ``False``.

    python benchmarks/sweep.py                         # P = 16, 64, 256; M = 16
    python benchmarks/sweep.py --sizes 32 --points 8   # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# benchmarks/ holds a script named dmft.py: keep it from shadowing the package
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

import dmft
from dmft.spec import Architecture, Data, Spec, Training
from dmft.sweep import lazy_group_key, lazy_solution, shared_kernel

STEPS = 50


def _data(num_train: int) -> Data:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_train, 8))
    x_test = rng.standard_normal((max(4, num_train // 4), 8))
    teacher = rng.standard_normal(8) / np.sqrt(8)
    return Data(x, np.tanh(2 * x @ teacher), x_test, np.tanh(2 * x_test @ teacher))


def _specs(case: str, num_train: int, count: int) -> list[Spec]:
    data = _data(num_train)
    if case == "lr":
        arch = Architecture(2, "tanh", "ntk", sigma_w=1.2)
        lam = np.linalg.eigvalsh(np.asarray(dmft.layer_kernels(
            arch, data.x_train, layers=(3,), with_derivative=False).ntk[-1]))[-1] / num_train
        rates = np.geomspace(0.05, 1.9, count) / lam  # all stable: every point is solved
        return [Spec(arch, data, Training(tuple(k * float(r) for k in range(STEPS + 1)), "gd",
                                          float(r))) for r in rates]
    times = tuple(np.linspace(0.0, 10.0, STEPS))
    return [Spec(Architecture(2, "tanh", "mup", gamma0=float(g)), data, Training(times))
            for g in np.geomspace(0.1, 4.0, count)]


def _loop(case: str, specs: list[Spec]) -> None:
    for spec in specs:
        (dmft.solve if case == "lr" else dmft.solve_lazy)(spec)


def _shared(case: str, specs: list[Spec]) -> None:
    kernels: dict = {}
    for spec in specs:
        key = lazy_group_key(spec, lazy_reference=case == "gamma0")
        if key not in kernels:
            kernels[key] = shared_kernel(spec)
        lazy_solution(spec, kernels[key])


def _timed(function, repeats: int) -> float:
    function()  # warm: compilation and caches
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _end_to_end(specs: list[Spec], vectorize: bool) -> float:
    """`dmft.sweep` of the lr case into a fresh folder (the γ0 points run the DMFT; only their
    lazy reference shares a kernel, so that case has no end-to-end column)."""
    grid = {"training.learning_rate": [s.training.learning_rate for s in specs],
            "training.steps": [STEPS]}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        dmft.sweep(specs[0], grid, folder, point_figures=False, vectorize=vectorize)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="training-set sizes P")
    parser.add_argument("--points", type=int, default=16, help="grid points M per sweep")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    parser.add_argument("--cases", default="lr,gamma0")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'case':<7} {'P':>5} {'M':>4} {'loop s':>9} {'shared s':>9} {'speed-up':>9} "
          f"{'sweep s':>8} {'no-vec s':>9}")
    for case in args.cases.split(","):
        for size in sizes:
            specs = _specs(case, size, args.points)
            loop = _timed(lambda c=case, s=specs: _loop(c, s), args.repeats)
            shared = _timed(lambda c=case, s=specs: _shared(c, s), args.repeats)
            if case == "lr":
                ends = f"{_end_to_end(specs, True):>8.2f} {_end_to_end(specs, False):>9.2f}"
            else:
                ends = f"{'-':>8} {'-':>9}"
            print(f"{case:<7} {size:>5} {len(specs):>4} {loop:>9.3f} {shared:>9.3f} "
                  f"{loop / shared:>8.1f}x {ends}", flush=True)


if __name__ == "__main__":
    main()
