"""Helpers shared by the subcommands."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .._errors import InputError
from ..io import OutputError
from ..spec import Spec, default_spec, load_spec


def add_spec_argument(parser, optional: bool = False) -> None:
    if optional:
        parser.add_argument("spec", nargs="?", default=None,
                            help="spec file (TOML); omitted: the embedded default problem")
    else:
        parser.add_argument("spec", help="spec file (TOML)")


def read_spec(path: str | None) -> Spec:
    return default_spec() if path is None else load_spec(path)


def activation_summary(spec: Spec) -> dict:
    """How the activation's dual kernels are computed (the tier the user may ask about)."""
    from ..activations import get_activation

    activation = get_activation(spec.architecture.activation)
    return {"name": activation.name, "tier": activation.tier, "method": activation.method,
            "dual_error": activation.dual_error}


def report_written(paths: dict[str, Path]) -> None:
    for name, path in paths.items():
        print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# Output paths: checked before any work, in one place for every subcommand.


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def _check_writable_folder(flag: str, text: str, folder: Path) -> None:
    """Create and remove a probe folder in `folder`: the only test that root, read-only mounts,
    /proc and full quotas all answer truthfully."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dmft-probe-", dir=folder))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(f"{flag} {text!r}: cannot write in {folder} ({reason})") from None


def _creatable(flag: str, text: str, path: Path) -> None:
    """`path` does not exist: its nearest existing ancestor must be a writable folder."""
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {text!r}: {ancestor} is a file, not a folder")
    _check_writable_folder(flag, text, ancestor)


def output_folder(text: str | None, flag: str = "--out",
                  names: tuple[str, ...] = ()) -> Path:
    """Check an output folder before any work: not empty, not an existing file, not under a file,
    and writable (its nearest existing ancestor, when it does not exist yet). `names` are files
    the command will write there: none of them may be a folder."""
    if text is None or str(text) == "":
        raise OutputError(f"{flag} must name an output folder, got an empty path")
    text = str(text)
    path = Path(text)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{flag} {text!r} is an existing file, not a folder")
    if not path.exists():
        _creatable(flag, text, path)
        return path
    _check_writable_folder(flag, text, path)
    for name in names:
        if (path / name).is_dir():
            raise OutputError(f"{flag} {text!r}: {path / name} is a folder, where the result "
                              "file goes")
    return path


def output_file(text: str | None, flag: str = "--out", suffixes: tuple[str, ...] = (),
                replaceable: Callable[[Path], bool] | None = None,
                kind: str = "output") -> Path:
    """Check an output file before any work: not empty, not a folder, not under a file, one of
    `suffixes` (when given), writable; an existing file is replaced only when `replaceable`
    says it is an earlier output of the same kind."""
    if text is None or str(text) == "":
        raise OutputError(f"{flag} must name an output file, got an empty path")
    text = str(text)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise OutputError(f"{flag} {text!r} is a folder; give a file name")
    if suffixes and path.suffix not in suffixes:
        wanted = " or ".join(repr(s) if s else "no extension" for s in suffixes)
        raise OutputError(f"{flag} {text!r}: the file name must end in {wanted}")
    if os.path.lexists(path):
        if not path.is_file():
            raise OutputError(f"{flag} {text!r} exists and is not a regular file")
        if replaceable is not None and not replaceable(path):
            raise OutputError(f"{flag} {text!r} exists and is not an earlier {kind}; "
                              "not replacing it (remove it or choose another name)")
        _check_writable_folder(flag, text, path.parent)
        return path
    _creatable(flag, text, path)
    return path


def positive_ints(flag: str, text) -> list[int]:
    """Comma-separated positive integers (or a list of them) from flag `flag`; one-line error."""
    values = text if isinstance(text, list) else str(text).replace(" ", "").split(",")
    try:
        numbers = [int(v) for v in values if v != ""]
    except (TypeError, ValueError):
        raise InputError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not numbers or min(numbers) <= 0:
        raise InputError(f"{flag} must be positive integers, got {text!r}")
    return numbers
