"""``dmft derive [SPEC] [--latex] [--out FILE]``: print the derived equations of a spec."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from pathlib import Path

from .._errors import InputError
from ..spec import Architecture, default_spec, load_spec


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
    file = Path(path)
    if not file.is_file():
        raise InputError(f"spec file not found: {file}")
    try:
        table = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{file}: not valid TOML: {error}") from None
    if "data" in table:
        return load_spec(file).architecture
    arch = table.get("architecture")
    if not isinstance(arch, dict):
        raise InputError(f"{file}: spec is missing the [architecture] table")
    known = {f.name for f in dataclasses.fields(Architecture)}
    for key in arch:
        if key not in known:
            raise InputError(f"{file}: unknown key architecture.{key} in spec "
                             f"(known: {', '.join(sorted(known))})")
    if "hidden_layers" not in arch:
        raise InputError(f"{file}: spec is missing architecture.hidden_layers")
    return Architecture(**arch)


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
