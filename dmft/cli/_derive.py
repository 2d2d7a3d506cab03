"""``dmft derive [SPEC] [--latex] [--out FILE]``: print the derived equations of a spec, for its
training rule (gradient flow, or the discrete steps of "gd" / "sgd")."""

from __future__ import annotations

from pathlib import Path

from .._errors import InputError
from ..io import atomic_file
from ..spec import Architecture, Training, default_spec
from ..spec import architecture_from_table, check_table_keys, read_spec_table
from ._common import output_file

RULE_KEYS = ("optimizer", "learning_rate", "batch_size", "seed")
"""The [training] keys the equations depend on (the save times and the loss do not enter them)."""


def add_architecture_arguments(parser) -> None:
    parser.add_argument(
        "--residual-scale", type=float, default=None, metavar="ALPHA",
        help="residual MLP h^(l+1) = h^l + (ALPHA/√L)·branch for the hidden-to-hidden layers "
             "(depth-μP branch scaling)",
    )


def add_training_arguments(parser) -> None:
    parser.add_argument("--optimizer", default=None, metavar="{flow,gd,sgd}",
                        help="training rule, in place of the spec's training.optimizer "
                             "(checked as the spec's value is)")
    parser.add_argument("--learning-rate", type=float, default=None, metavar="ETA0",
                        help='learning rate η0 of "gd" / "sgd" (training.learning_rate)')
    parser.add_argument("--batch-size", type=int, default=None, metavar="B",
                        help='minibatch size of "sgd" (training.batch_size)')


def read_training(path: str | None, overrides: dict | None = None) -> Training:
    """The training rule of a spec file: its [training] optimizer, learning_rate, batch_size and
    seed, with ``overrides`` (non-None command-line values) in their place, validated by
    `dmft.spec.Training` itself, so a bad value is the one-line error ``dmft run`` gives."""
    table = {} if path is None else read_spec_table(path).get("training", {})
    if not isinstance(table, dict):
        raise InputError(f"{path}: [training] must be a table")
    check_table_keys({"training": table})
    rule = {key: table[key] for key in RULE_KEYS if key in table}
    rule.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return Training(times=(0.0,), **rule)  # the save times play no part in the equations
    except TypeError as error:  # a wrong argument type caught by the dataclass
        raise InputError(f"{path}: {error}") from None


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
                        help="spec file (TOML; [architecture] and the training rule of "
                             "[training] are read); omitted: the embedded default problem")
    parser.add_argument("--latex", action="store_true",
                        help="a standalone LaTeX document instead of terminal text")
    parser.add_argument("--out", default=None,
                        help="write to this file instead of stdout (.tex with --latex, else .txt, "
                             ".md or no extension); an existing file is replaced only when it is "
                             "an earlier dmft derive output of the same format")
    add_architecture_arguments(parser)
    add_training_arguments(parser)


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
    architecture = read_architecture(args.spec)
    training = read_training(args.spec, {"optimizer": args.optimizer,
                                         "learning_rate": args.learning_rate,
                                         "batch_size": args.batch_size})
    derivation = derive(architecture, residual_scale=args.residual_scale, training=training)
    text = derivation.latex() if args.latex else str(derivation)
    if out is None:
        print(text, end="")
        return 0
    with atomic_file(out) as staging:
        staging.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0
