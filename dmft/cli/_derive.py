"""``dmft derive [SPEC] [--latex] [--out FILE]``: print the derived equations of a spec, for its
training rule (gradient flow, or the discrete steps of "gd" / "sgd")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._errors import InputError
from ..io import atomic_file
from ..spec import Architecture, Training, default_spec
from ..spec import architecture_from_table, check_table_keys, read_spec_table
from ._common import output_file

RULE_KEYS = ("optimizer", "learning_rate", "batch_size", "seed", "loss", "num_classes")
"""The [training] keys the equations depend on (the save times do not enter them)."""


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
    parser.add_argument("--loss", default=None, metavar="{mse,cross_entropy}",
                        help="loss, in place of the spec's training.loss (checked as the spec's "
                             "value is); sets the error signal Δ = y − f or y − softmax(f)")


def read_training(path: str | None, overrides: dict | None = None) -> Training:
    """The training rule of a spec file: its [training] optimizer, learning_rate, batch_size,
    seed, loss and num_classes, with ``overrides`` (non-None command-line values) in their place,
    validated by
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


def read_outputs(path: str | None, training: Training) -> int | None:
    """The number C of outputs of the spec's targets where it is cheap and safe to know: the shape
    of ``data.y_train`` given inline or as an existing .npy file (memory-mapped), and for
    cross-entropy labels (P,) their largest value + 1. None otherwise (no spec, a named data set,
    a text file, a missing or unreadable file, ``training.num_classes`` given, which `derive`
    reads itself): `derive` then prints one MSE output, or C classes. Never an error: the
    equations do not depend on the data."""
    if path is None or training.num_classes is not None:
        return None
    table = read_spec_table(path).get("data")
    if not isinstance(table, dict) or "dataset" in table or "y_train" not in table:
        return None
    try:
        y = _targets(table["y_train"], Path(path).parent)
    except (OSError, ValueError, TypeError):
        return None
    if y is None or y.ndim not in (1, 2) or y.shape[0] == 0:
        return None
    cross_entropy = training.loss == "cross_entropy"
    if y.ndim == 2:
        count = int(y.shape[1])
    elif not cross_entropy:
        count = 1
    else:
        largest = np.max(y) if np.issubdtype(y.dtype, np.number) else np.nan
        count = int(largest) + 1 if np.isfinite(largest) and largest == int(largest) else 0
    return count if count >= (2 if cross_entropy else 1) else None


def _targets(value, base: Path) -> np.ndarray | None:
    """y_train given inline (a TOML list) or as an existing .npy file (memory-mapped); None for
    any other file."""
    if not isinstance(value, str):
        return np.asarray(value)
    file = base / value
    if file.suffix != ".npy" or not file.is_file():
        return None
    return np.load(file, mmap_mode="r", allow_pickle=False)


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
                        help="spec file (TOML; [architecture], the training rule and loss of "
                             "[training], and the number of outputs of data.y_train where it "
                             "is cheap to read); omitted: the embedded default problem")
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
                                         "batch_size": args.batch_size,
                                         "loss": args.loss})
    derivation = derive(architecture, residual_scale=args.residual_scale, training=training,
                        outputs=read_outputs(args.spec, training))
    text = derivation.latex() if args.latex else str(derivation)
    if out is None:
        print(text, end="")
        return 0
    with atomic_file(out) as staging:
        staging.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0
