"""``dmft sample SPEC --widths 256,1024 --seeds 8 --out DIR``: train finite-width ensembles of the
spec, compare them with the infinite-width limit and with the predicted 1/N corrections."""

from __future__ import annotations

import math
import sys
import time

from .._errors import InputError
from ..io import write_results
from ._common import add_spec_argument, output_folder, positive_ints, read_spec, report_written


def configure(parser) -> None:
    add_spec_argument(parser)
    parser.add_argument("--widths", default=None,
                        help="comma-separated hidden widths, e.g. 256,1024 (default: [sampler] "
                             "widths of the spec, else 64,256,1024)")
    parser.add_argument("--seeds", default=None,
                        help="ensemble members per width (default: [sampler] seeds, else 8)")
    parser.add_argument("--out", default="dmft-sample",
                        help="output folder (default: dmft-sample); an earlier result there is "
                             "replaced as a whole")
    parser.add_argument("--method", default=None, choices=None,
                        help="numerical method of gradient flow (training.optimizer = \"flow\"): "
                             "'flow' (adaptive Diffrax, default) or 'euler' (alias 'gd': fixed "
                             "Euler steps --dt of the flow). Specs with training.optimizer = "
                             "\"gd\"/\"sgd\" are trained by that rule itself (step "
                             "training.learning_rate) and take no --method")
    parser.add_argument("--dt", default=None,
                        help="Euler step of the flow (with --method euler; a numerical step, "
                             "not a learning rate)")
    parser.add_argument("--rtol", default=None, help="gradient-flow relative tolerance (1e-8)")
    parser.add_argument("--atol", default=None, help="gradient-flow absolute tolerance (1e-8)")
    parser.add_argument("--hessian-steps", default=None,
                        help="Lanczos steps of the Hessian sharpness per member and saved time "
                             "(default: [sampler] hessian_steps, else 40; 0 skips it)")
    parser.add_argument("--batch-size", default=None, help="most members trained at once")
    parser.add_argument("--max-memory", default=None, help="memory budget in GiB over all devices")
    parser.add_argument("--centered", action="store_true",
                        help="train f(θ) − f(θ0) with a frozen initial copy, so f(0) = 0")
    parser.add_argument("--particles", default="4096",
                        help="particles S of the two-layer μP fluctuation prediction (4096)")
    parser.add_argument("--directions", default="128",
                        help="random fluctuation directions K of that prediction (128; error ≈ √(2/K))")
    parser.add_argument("--no-predictions", action="store_true",
                        help="skip the predicted 1/N corrections (vertex, propagator)")


def _number(flag: str, text, positive: bool = True) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise InputError(f"{flag} must be a finite number > 0, got {text!r}")
    return value


def _method(args, spec):
    from ..sampler import method_for_spec, method_from_table

    training = spec.training
    if training.optimizer != "flow":
        for flag in ("method", "dt", "rtol", "atol"):
            if getattr(args, flag) is not None:
                raise InputError(
                    f"--{flag} sets a numerical integration of gradient flow, but "
                    f"training.optimizer = {training.optimizer!r} trains the networks by the rule "
                    f"itself (step training.learning_rate = {training.learning_rate:g}); drop "
                    f"--{flag}")
        return method_for_spec(spec)
    table = dict(spec.sampler)
    if args.method is not None:
        if args.method not in ("flow", "euler", "gd"):
            raise InputError(f"--method must be 'flow' or 'euler' (alias 'gd'), got "
                             f"{args.method!r}")
        if args.method != table.get("method", "flow"):
            table = {k: v for k, v in table.items() if k in ("widths", "seeds", "max_memory_gib")}
        table["method"] = args.method
    if args.dt is not None:
        if table.get("method", "flow") not in ("euler", "gd"):
            raise InputError("--dt applies to --method euler (alias gd) only")
        table["dt"] = _number("--dt", args.dt)
    for flag, key in (("--rtol", "rtol"), ("--atol", "atol")):
        value = getattr(args, key)
        if value is not None:
            if table.get("method", "flow") != "flow":
                raise InputError(f"{flag} applies to --method flow only")
            table[key] = _number(flag, value)
    return method_from_table(table)


def execute(args) -> int:
    from ..sampler import compare, plot_comparison, plan_batches, predict_corrections, report_table
    from ..sampler import TangentPropagator, sample

    output_folder(args.out, names=("samples.npz", "metadata.json"))  # before any work
    spec = read_spec(args.spec)
    arch, data = spec.architecture, spec.data
    widths = positive_ints("--widths", args.widths if args.widths is not None
                            else spec.sampler.get("widths", [64, 256, 1024]))
    seeds_flag = args.seeds if args.seeds is not None else spec.sampler.get("seeds", 8)
    seeds = positive_ints("--seeds", [seeds_flag] if isinstance(seeds_flag, int) else seeds_flag)
    if len(seeds) != 1:
        raise InputError(f"--seeds must be one positive count of ensemble members, got {seeds_flag!r}")
    seeds = seeds[0]
    method = _method(args, spec)
    hessian_steps = None
    if args.hessian_steps is not None:
        try:
            hessian_steps = int(str(args.hessian_steps))
        except ValueError:
            raise InputError(f"--hessian-steps must be an integer >= 0, got "
                             f"{args.hessian_steps!r}") from None
        if hessian_steps < 0:
            raise InputError(f"--hessian-steps must be an integer >= 0, got {args.hessian_steps!r}")
    batch_size = None if args.batch_size is None else positive_ints("--batch-size", args.batch_size)[0]
    max_memory = spec.sampler.get("max_memory_gib")
    if args.max_memory is not None:
        max_memory = _number("--max-memory", args.max_memory)
    particles = positive_ints("--particles", args.particles)[0]
    if particles < 2 or particles % 2:
        raise InputError(f"--particles must be an even number >= 2, got {args.particles!r}")
    propagator = TangentPropagator(particles=particles,
                                   directions=positive_ints("--directions", args.directions)[0])
    plan = plan_batches(spec, widths, seeds, method, max_memory, batch_size)  # fail before work

    training = spec.training
    rule = (f"{training.optimizer} (eta0 = {training.learning_rate:g}"
            + (f", batch {training.batch_size}" if training.optimizer == "sgd" else "") + ")"
            if training.optimizer != "flow" else f"flow by {type(method).__name__}")
    residual = (f", residual alpha = {arch.residual_scale:g}" if arch.residual_scale is not None
                else "")
    print(
        f"dmft sample: {spec.source or args.spec}: L = {arch.hidden_layers} {arch.activation} "
        f"({arch.parameterization}{residual}), P = {data.num_train}, P_test = {data.num_test}, "
        f"{len(training.times)} saved times; widths {widths}, {seeds} seeds, "
        f"{rule}, batches {plan}"
    )
    sys.stdout.flush()
    start = time.perf_counter()
    samples = sample(spec, widths, seeds, method, batch_size=batch_size, max_memory_gib=max_memory,
                     centered=args.centered, hessian_steps=hessian_steps)
    sampling_time = time.perf_counter() - start
    comparison = compare(samples, spec)
    predictions = None if args.no_predictions else predict_corrections(spec, samples, propagator)
    arrays = {**samples.arrays(), **comparison.arrays()}
    if predictions is not None:
        arrays.update(predictions.arrays())

    def figures(folder):
        plot_comparison(comparison, samples.t, folder / "sample_comparison", spec=spec)

    metadata = {
        "command": "sample",
        "spec": spec.to_dict(),
        "widths": widths,
        "seeds": list(samples.seeds),
        "centered": bool(args.centered),
        "sampler": samples.diagnostics,
        "limit": comparison.limit_note,
        "divergence": comparison.divergence_note or None,
        "predictions": None if predictions is None else predictions.notes,
        "wall_time_s": time.perf_counter() - start,
        "sampling_time_s": sampling_time,
    }
    paths = write_results(args.out, "samples.npz", arrays, metadata, figures)
    print(report_table(comparison))
    if predictions is not None:
        print(predictions.table())
    report_written(paths)
    return 0
