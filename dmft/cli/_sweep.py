"""``dmft sweep SPEC --set KEY=V1,V2,... [--set ...] [--widths 256,1024 --seeds 8] --out DIR``:
the limit (optionally the sampler) over a grid of spec keys (docs/conventions.md §5)."""

from __future__ import annotations

import sys
import time

from .._errors import InputError
from ._common import add_spec_argument, output_folder, positive_ints


def configure(parser) -> None:
    add_spec_argument(parser)
    parser.add_argument("--set", dest="assignments", action="append", default=None,
                        metavar="KEY=V1,V2,...",
                        help="a swept spec key (table.key) and its values as TOML scalars, e.g. "
                             "architecture.gamma0=0.5,1,2; repeat for a product grid; sweep-only "
                             "keys: data.train_size, training.steps (save times k·η0)")
    parser.add_argument("--widths", default=None,
                        help="also train finite-width networks at every point, e.g. 256,1024")
    parser.add_argument("--seeds", default="8", help="ensemble members per width (8)")
    parser.add_argument("--out", default="dmft-sweep",
                        help="output folder (default: dmft-sweep); finished points of an earlier "
                             "sweep there are kept and skipped")
    parser.add_argument("--no-point-figures", action="store_true",
                        help="skip each point's learning-curve figures (the result files stay)")
    parser.add_argument("--no-vectorize", action="store_true",
                        help="solve every point on its own (no shared lazy kernels)")
    parser.add_argument("--eigenvalues", default="4",
                        help="top NTK eigenvalues in the summary (4)")


def execute(args) -> int:
    from ..sweep import parse_assignment, sweep

    if not args.assignments:
        raise InputError("give at least one --set KEY=V1,V2,... (e.g. --set architecture.gamma0=0.5,1)")
    grid = [parse_assignment(text) for text in args.assignments]
    widths = positive_ints("--widths", args.widths) if args.widths is not None else None
    seeds = positive_ints("--seeds", args.seeds)
    if len(seeds) != 1:
        raise InputError(f"--seeds must be one positive count, got {args.seeds!r}")
    eigenvalues = positive_ints("--eigenvalues", args.eigenvalues)[0]
    output_folder(args.out, names=("summary.npz", "summary.csv", "metadata.json"))
    count = 1
    for _, values in grid:
        count *= len(values)
    print(f"dmft sweep: {args.spec}: {count} points over "
          + ", ".join(f"{key} ({len(values)})" for key, values in grid)
          + (f"; widths {widths}, {seeds[0]} seeds" if widths else ""))
    sys.stdout.flush()
    start = time.perf_counter()
    result = sweep(args.spec, grid, args.out, widths=widths, seeds=seeds[0],
                   point_figures=not args.no_point_figures, vectorize=not args.no_vectorize,
                   num_eigenvalues=eigenvalues)
    diverged = sum(record.status == "diverged" for record in result.points)
    skipped = len(result.points) - result.computed
    print(f"dmft sweep: {result.computed} points solved, {skipped} already done"
          + (f", {diverged} diverged" if diverged else "")
          + f" ({time.perf_counter() - start:.2f} s)")
    print(f"wrote {result.out / 'summary.csv'}")
    print(f"wrote {result.out / 'summary.npz'}")
    print(f"wrote {result.out / 'metadata.json'}")
    return 0
