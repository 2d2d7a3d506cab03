"""The late-time bias of the Monte Carlo DMFT: its final train loss against S, the Stein cutoff
`rcond` and the read-out control variate, on the setting of examples/digits_depth.

scikit-learn's digits (3 against 8, P = 32, ±1 targets, standardized), μP with L = 3 hidden
layers, γ0 = 1, 60 GD steps at η0 = 0.05 · 2P/λ_max(K0) (tanh kernels). Each row is one solve;
it prints the train loss at steps 16, 32, 48 and 60 and the reported standard error at step 60.
With ``--activation linear`` the exact deep-linear closure is printed first, as the reference.
Needs the [data] extra (the digits ship inside scikit-learn).

    python benchmarks/monte_carlo_late_time.py --samples 4096,16384 --rconds 1e-6,1e-3
    python benchmarks/monte_carlo_late_time.py --test-size 64 --rconds 1e-6,1e-4,1e-3,1e-2
    python benchmarks/monte_carlo_late_time.py --activation linear --samples 4096,16384 \\
        --readout-cv on,off
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# benchmarks/dmft.py would shadow the dmft package when this folder is first on sys.path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples", "digits_depth"))

STEPS = (16, 32, 48, 60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default="4096", help="comma-separated S")
    parser.add_argument("--rconds", default="1e-3", help="comma-separated solver.rcond")
    parser.add_argument("--readout-cv", default="on,off", help="read-out control variate: on, off")
    parser.add_argument("--test-size", type=int, default=0, help="test points in the solve")
    parser.add_argument("--activation", default="tanh")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import dmft
    from dmft.spec import spec_from_dict
    from run import learning_rate, table  # examples/digits_depth/run.py

    eta = round(learning_rate(2048), 6)

    def spec_for(solver):
        tab = table(1.0, 4096, eta, [eta * k for k in range(0, 61, 4)])
        tab["architecture"]["activation"] = args.activation
        tab["data"]["test_size"] = args.test_size
        tab["solver"] = solver
        return spec_from_dict(tab)

    def row(name, solver):
        start = time.perf_counter()
        spec = spec_for(solver)
        arrays = dmft.solve(spec).arrays(spec.data.y_train, spec.data.y_test)
        loss = arrays["loss_train"]
        stderr = arrays.get("loss_train_stderr", np.zeros_like(loss))
        print(f"{name:>34} " + " ".join(f"{loss[k // 4]:9.6f}" for k in STEPS)
              + f"   {stderr[-1]:7.1e} {time.perf_counter() - start:7.1f}", flush=True)

    print(f"digits 3 vs 8, {args.activation} L = 3 muP, gamma0 = 1, GD eta0 = {eta:g}, "
          f"{args.test_size} test points")
    print(f"{'solve':>34} " + " ".join(f"{'step ' + str(k):>9}" for k in STEPS)
          + f"   {'s.e. 60':>7} {'wall s':>7}")
    if args.activation == "linear":
        row("deep-linear closure (exact)", {"method": "deep_linear"})
    for samples in (int(s) for s in args.samples.split(",")):
        for rcond in (float(r) for r in args.rconds.split(",")):
            for cv in args.readout_cv.split(","):
                row(f"S = {samples}, rcond = {rcond:g}, F {cv}",
                    {"method": "monte_carlo", "num_samples": samples, "rcond": rcond,
                     "readout_control_variate": cv == "on"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
