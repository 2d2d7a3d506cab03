"""``dmft figure DIR --kind gamma0|alignment|width|lr_transfer|depth_transfer``: a paper figure
rebuilt from the saved data of a sweep (its summary.npz and metadata.json), nothing rerun."""

from __future__ import annotations

from .._errors import InputError

KINDS = ("gamma0", "alignment", "width", "lr_transfer", "depth_transfer")


def configure(parser) -> None:
    parser.add_argument("folder", metavar="DIR", help="the --out folder of dmft sweep")
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="gamma0: loss curves per γ0 with the lazy curve; alignment: "
                             "kernel-target alignment and top NTK eigenvalues per γ0; width: "
                             "deviation from the limit against N (log-log, 1/N guide); "
                             "lr_transfer: loss after k steps against η0 per width; "
                             "depth_transfer: the same per depth L")
    parser.add_argument("--out", default=None,
                        help="file stem of the figure (default: DIR/figures/KIND); .pdf and .png "
                             "are written")
    parser.add_argument("--time", default=None,
                        help="the saved time the width and transfer figures read (default: the "
                             "last saved time of each point)")
    parser.add_argument("--wide", action="store_true",
                        help="full-page width (7 in) instead of one column (3.4 in)")


def execute(args) -> int:
    import math
    from pathlib import Path

    from ..figures import plot_sweep_figure

    time = None
    if args.time is not None:
        try:
            time = float(args.time)
        except ValueError:
            raise InputError(f"--time must be a number, got {args.time!r}") from None
        if not math.isfinite(time) or time < 0:
            raise InputError(f"--time must be a finite number >= 0, got {args.time!r}")
    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"{args.folder}: not a folder (give the --out folder of dmft sweep)")
    stem = Path(args.out) if args.out is not None else folder / "figures" / args.kind
    paths = plot_sweep_figure(folder, args.kind, stem, time=time, wide=args.wide)
    for path in paths:
        print(f"wrote {path}")
    return 0
