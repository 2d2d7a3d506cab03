"""``dmft derive [SPEC] [--latex] [--out FILE]``: print the derived equations of a spec."""

from __future__ import annotations

from pathlib import Path

from .._errors import InputError
from ..io import atomic_file
from ..spec import Architecture, default_spec
from ..spec import architecture_from_table, check_table_keys, read_spec_table
from ._common import output_file


def add_architecture_arguments(parser) -> None:
    parser.add_argument(
        "--residual-scale", type=float, default=None, metavar="ALPHA",
        help="residual MLP h^(l+1) = h^l + (ALPHA/√L)·branch for the hidden-to-hidden layers "
             "(depth-μP branch scaling)",
    )


def read_architecture(path: str | None) -> Architecture:
    """The [architecture] of a spec file. Only that table is read: [data] (whose files may be
    missing or hold NaN) and the other tables play no part in the equations."""
    if path is None:
        return default_spec().architecture
    table = read_spec_table(path)
    architecture = table.get("architecture")
    if not isinstance(architecture, dict):
        raise InputError(f"{path}: spec is missing the [architecture] table")
    try:
        check_table_keys({"architecture": architecture})
        return architecture_from_table(architecture)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except TypeError as error:  # a wrong argument type caught by the dataclass
        raise InputError(f"{path}: {error}") from None


def configure(parser) -> None:
    parser.add_argument("spec", nargs="?", default=None,
                        help="spec file (TOML; only [architecture] is read); omitted: the "
                             "embedded default problem")
    parser.add_argument("--latex", action="store_true",
                        help="a standalone LaTeX document instead of terminal text")
    parser.add_argument("--out", default=None,
                        help="write to this file instead of stdout (.tex with --latex, else .txt, "
                             ".md or no extension); an existing file is replaced only when it is "
                             "an earlier dmft derive output of the same format")
    add_architecture_arguments(parser)


TEXT_SUFFIXES = (".txt", ".md", "")
LATEX_SUFFIXES = (".tex",)
_TEXT_HEAD = "# dmft derivation"
_LATEX_HEAD = "\\documentclass"
_LATEX_MARK = "\\section*{Derived equations}"


def is_derive_output(path: Path, latex: bool) -> bool:
    """Whether `path` holds an earlier ``dmft derive`` output of the requested format."""
    try:
        with open(path, encoding="utf-8") as stream:
            head = stream.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    if latex:
        return head.startswith(_LATEX_HEAD) and _LATEX_MARK in head
    return head.startswith(_TEXT_HEAD + "\n")


def execute(args) -> int:
    from ..symbolic import derive

    out = None
    if args.out is not None:  # checked before any work
        out = output_file(args.out, suffixes=LATEX_SUFFIXES if args.latex else TEXT_SUFFIXES,
                          replaceable=lambda path: is_derive_output(path, args.latex),
                          kind="dmft derive output" + (" (LaTeX)" if args.latex else " (text)"))
    derivation = derive(read_architecture(args.spec), residual_scale=args.residual_scale)
    text = derivation.latex() if args.latex else str(derivation)
    if out is None:
        print(text, end="")
        return 0
    with atomic_file(out) as staging:
        staging.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0
