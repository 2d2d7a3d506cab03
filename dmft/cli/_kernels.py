"""``dmft kernels SPEC --out FILE.npz``: the initialization NNGP/NTK of every layer."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

from ..io import atomic_file, write_npz
from ..kernels import kernels
from ._common import activation_summary, add_spec_argument, output_file, read_spec


def configure(parser) -> None:
    add_spec_argument(parser)
    parser.add_argument("--out", required=True,
                        help="output file (.npz); an existing file is replaced only when it is an "
                             "earlier output of dmft kernels")


def is_kernels_file(path: Path) -> bool:
    """Whether `path` is an earlier ``dmft kernels`` output (an .npz holding ``ntk_L1``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"nngp_L1.npy", "ntk_L1.npy"} <= names


def execute(args) -> int:
    out = output_file(args.out, suffixes=(".npz",), replaceable=is_kernels_file,
                      kind="dmft kernels output")  # before any work
    spec = read_spec(args.spec)
    start = time.perf_counter()
    arrays = kernels(spec)
    with atomic_file(out) as staging:
        write_npz(staging, arrays)
    activation = activation_summary(spec)
    print(f"activation {activation['name']}: {activation['tier']} dual kernels "
          f"({activation['method']}; error <= {activation['dual_error']:.0e})")
    print(f"wrote {out}: {', '.join(sorted(arrays))} ({time.perf_counter() - start:.2f} s)")
    return 0
