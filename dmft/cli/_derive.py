"""``dmft derive [SPEC] [--latex] [--out FILE]``: print the derived equations of a spec."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .._errors import InputError
from ..spec import Architecture, default_spec, load_spec
from ..spec._toml import architecture_from_table, check_table_keys, read_spec_table


def add_architecture_arguments(parser) -> None:
    parser.add_argument(
        "--residual-scale", type=float, default=None, metavar="ALPHA",
        help="residual MLP h^(l+1) = h^l + (ALPHA/√L)·branch for the hidden-to-hidden layers "
             "(depth-μP branch scaling)",
    )


def read_architecture(path: str | None) -> Architecture:
    """The [architecture] of a spec file; a file without [data] is accepted (derive needs none)."""
    if path is None:
        return default_spec().architecture
    table = read_spec_table(path)
    if "data" in table:
        return load_spec(path).architecture
    architecture = table.get("architecture")
    if not isinstance(architecture, dict):
        raise InputError(f"{path}: spec is missing the [architecture] table")
    try:
        check_table_keys(table)
        return architecture_from_table(architecture)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def configure(parser) -> None:
    parser.add_argument("spec", nargs="?", default=None,
                        help="spec file (TOML; only [architecture] is read); omitted: the "
                             "embedded default problem")
    parser.add_argument("--latex", action="store_true",
                        help="a standalone LaTeX document instead of terminal text")
    parser.add_argument("--out", default=None, help="write to this file instead of stdout")
    add_architecture_arguments(parser)


def execute(args) -> int:
    from ..symbolic import derive

    derivation = derive(read_architecture(args.spec), residual_scale=args.residual_scale)
    text = derivation.latex() if args.latex else str(derivation)
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".dmft-", suffix=out.suffix, dir=out.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    print(f"wrote {out}")
    return 0
