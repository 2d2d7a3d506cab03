"""``dmft run [SPEC] --out DIR``: solve the infinite-width limit and write results + figures."""

from __future__ import annotations

import sys
import time

import numpy as np

from ..io import write_results
from ..network import loss_from_name
from ..solvers import solve
from ._common import activation_summary, add_spec_argument, output_folder, read_spec, report_written


def configure(parser) -> None:
    add_spec_argument(parser, optional=True)
    parser.add_argument("--out", default="dmft-out",
                        help="output folder (default: dmft-out); an earlier result there is "
                             "replaced as a whole")


def training_summary(spec) -> dict:
    """What ``metadata.json`` adds to the training rule that `dmft.io.write_results` records
    (optimizer, learning rate, batches): for "gd" / "sgd" the step index k = t/η0 of each saved
    time (``steps``)."""
    training = spec.training
    return {} if training.optimizer == "flow" else {"steps": list(training.steps)}


def outputs_summary(spec) -> dict:
    """What ``metadata.json`` says about the outputs: the loss, C, and the structure of the
    saved ``ntk`` (docs/conventions.md §2b, §5)."""
    outputs = spec.data.num_outputs
    out = {"loss": spec.training.loss, "num_outputs": outputs}
    if outputs > 1:
        out["ntk"] = ("the (T, P, P) scalar kernel K: the NTK over (point, output) pairs is "
                      "K ⊗ I_C in the lazy limit; the DMFT saves the output average of its "
                      "diagonal blocks")
    return out


def alignment_target(y: np.ndarray) -> np.ndarray:
    """The target vector of the NTK-evolution figure's kernel alignment: y itself for one output;
    for C outputs (P, C) the leading left singular vector of y times its singular value (the
    rank-one part of y yᵀ with the most weight)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        return y
    left, singular, _ = np.linalg.svd(y, full_matrices=False)
    return left[:, 0] * singular[0]


def execute(args) -> int:
    output_folder(args.out, names=("result.npz", "metadata.json"))  # before any work
    spec = read_spec(args.spec)
    arch, data = spec.architecture, spec.data
    print(
        f"dmft run: {spec.source or args.spec}: L = {arch.hidden_layers} {arch.activation} "
        f"({arch.parameterization}), P = {data.num_train}, P_test = {data.num_test}, "
        f"{len(spec.training.times)} saved times"
        + (f", {spec.training.optimizer} with learning rate {spec.training.learning_rate:g}"
           if spec.training.optimizer != "flow" else "")
    )
    sys.stdout.flush()
    start = time.perf_counter()
    solution = solve(spec)
    arrays = solution.arrays(data.y_train, data.y_test,
                             loss=loss_from_name(spec.training.loss), data=data)
    wall_time = time.perf_counter() - start

    def figures(folder):
        from ..figures import plot_learning_curve, plot_ntk_evolution

        plot_learning_curve(arrays, folder / "learning_curve", spec=spec)
        if arch.parameterization == "mup":
            plot_ntk_evolution(solution, alignment_target(data.y_train),
                               folder / "ntk_evolution", spec=spec)

    metadata = {
        "command": "run",
        "spec": spec.to_dict(),
        "activation": activation_summary(spec),
        "training": training_summary(spec),
        "outputs": outputs_summary(spec),
        "solver": solution.diagnostics,
        "wall_time_s": wall_time,
    }
    paths = write_results(args.out, "result.npz", arrays, metadata, figures)
    report_written(paths)
    final = arrays["loss_train"][-1]
    summary = f"final train loss {final:.4g} at t = {arrays['t'][-1]:g}"
    if "loss_test" in arrays:
        summary += f", test loss {arrays['loss_test'][-1]:.4g}"
    for key, name in (("accuracy_train", "train"), ("accuracy_test", "test")):
        if key in arrays:
            summary += f", {name} accuracy {arrays[key][-1]:.3g}"
    print(f"dmft run: {summary} ({wall_time:.2f} s)")
    return 0
