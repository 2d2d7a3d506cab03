"""``dmft kernels SPEC --out FILE.npz``: the initialization NNGP/NTK of every layer."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .._errors import InputError
from ..io import write_npz
from ..kernels import kernels
from ._common import activation_summary, add_spec_argument, read_spec


def configure(parser) -> None:
    add_spec_argument(parser)
    parser.add_argument("--out", required=True, help="output file (.npz)")


def execute(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise InputError(f"--out must name a .npz file, got {args.out!r}")
    spec = read_spec(args.spec)
    start = time.perf_counter()
    arrays = kernels(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".dmft-", suffix=".npz", dir=out.parent)
    os.close(handle)
    try:
        write_npz(Path(staging), arrays)
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    activation = activation_summary(spec)
    print(f"activation {activation['name']}: {activation['tier']} dual kernels "
          f"({activation['method']}; error <= {activation['dual_error']:.0e})")
    print(f"wrote {out}: {', '.join(sorted(arrays))} ({time.perf_counter() - start:.2f} s)")
    return 0
