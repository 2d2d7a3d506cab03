"""Result files with full provenance, written atomically.

Every command writes into a fresh staging folder beside the destination and moves the files into
place only once all of them exist, so a failed or interrupted run never leaves a partial result.
Re-running into a folder that holds an earlier dmft result replaces that result as a whole: the
earlier run's own files (listed in its ``metadata.json``) that the new run does not write are
removed, so no stale figure of another run stays beside the new files. Files the user put there
are left alone. Files get the user's normal permissions (``0666 & ~umask``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError

_PACKAGES = ("dmft", "jax", "jaxlib", "diffrax", "equinox", "sympy", "numpy", "scipy", "matplotlib")

#: The files a dmft command writes into an output folder (used to recognise an earlier result
#: whose metadata.json predates the "files" list).
KNOWN_RESULT_FILES = frozenset({
    "result.npz", "samples.npz", "metadata.json",
    "learning_curve.pdf", "learning_curve.png", "ntk_evolution.pdf", "ntk_evolution.png",
    "sample_comparison.pdf", "sample_comparison.png",
})
STAGING_PREFIX = ".dmft-staging-"


class OutputError(InputError):
    """An output path that cannot be written (a bad ``--out``); the message names the path."""


# ---------------------------------------------------------------------------------------------
# Staging folders in flight: removed by `discard_staging` when the process is interrupted.

_lock = threading.RLock()
_in_flight: dict[Path, list[Path]] = {}  # staging folder -> folders this write created


def discard_staging() -> None:
    """Remove every staging folder in flight (and the output folders created for them, when
    empty). Called on an interrupt, possibly from another thread than the writer's."""
    with _lock:
        for staging, created in list(_in_flight.items()):
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)
        _in_flight.clear()


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (outermost first)."""
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created = []
    try:
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            created.append(path)
    except OSError as error:
        _remove_empty(created)
        raise OutputError(f"cannot create folder {folder}: {error.strerror or error}") from None
    return created


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold off SIGINT while a handful of renames commit a result: an interrupt then lands after
    the result is complete instead of between two of its files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN or SIG_DFL: nothing to defer
        yield
        return
    pending = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _staging_folder(parent: Path) -> Iterator[tuple[Path, list[Path]]]:
    created = _make_folders(parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
    except OSError as error:
        _remove_empty(created)
        raise OutputError(f"cannot write in {parent}: {error.strerror or error}") from None
    with _lock:
        _in_flight[staging] = created
    try:
        yield staging, created
    except (KeyboardInterrupt, SystemExit):
        with _lock:
            _in_flight.pop(staging, None)
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    finally:
        with _lock:
            _in_flight.pop(staging, None)
        shutil.rmtree(staging, ignore_errors=True)


def previous_result_files(out_dir: Path) -> set[str]:
    """The files of an earlier dmft result in `out_dir` (empty when it holds none).

    An earlier result is recognised by its ``metadata.json`` (a JSON object with a
    ``provenance`` block); its ``files`` list names what it wrote, and for results written before
    that list existed the known result file names stand in.
    """
    try:
        content = json.loads((out_dir / "metadata.json").read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(content, dict) or "provenance" not in content:
        return set()
    files = content.get("files")
    if isinstance(files, list) and all(isinstance(name, str) for name in files):
        names = {name for name in files if name and Path(name).name == name}
    else:
        names = set(KNOWN_RESULT_FILES)
    return {name for name in names if (out_dir / name).is_file()} | {"metadata.json"}


@contextlib.contextmanager
def atomic_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success its files replace `out_dir`'s earlier result, on error
    they are dropped.

    The folder is created if needed. On success every staged file is moved in with `os.replace`
    (atomic per file on POSIX, all of them with SIGINT held off), and the earlier result's files
    that were not rewritten are removed (`previous_result_files`); other files stay.
    """
    out_dir = Path(out_dir)
    with _staging_folder(out_dir) as (staging, _):
        yield staging
        previous = previous_result_files(out_dir)
        staged = sorted(staging.iterdir())
        for path in staged:
            if (out_dir / path.name).is_dir():
                raise OutputError(f"cannot write {out_dir / path.name}: a folder is in the way")
        try:
            with _lock, _deferred_interrupt():
                for path in staged:
                    os.replace(path, out_dir / path.name)
                for name in sorted(previous - {path.name for path in staged}):
                    (out_dir / name).unlink(missing_ok=True)
        except OSError as error:
            raise OutputError(f"cannot write in {out_dir}: {error.strerror or error}") from None


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a staging path for one file; on success it replaces `path` atomically."""
    path = Path(path)
    with _staging_folder(path.parent) as (staging, _):
        target = staging / path.name
        yield target
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder")
        try:
            with _lock, _deferred_interrupt():
                os.replace(target, path)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None


# ---------------------------------------------------------------------------------------------
# Provenance


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _commit_of(folder: Path) -> str | None:
    """HEAD of the git work tree holding `folder` (``+dirty`` with uncommitted tracked edits)."""
    if not folder.is_dir():
        return None
    head = _git(folder, "rev-parse", "HEAD")
    if not head:
        return None
    dirty = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return head + ("+dirty" if dirty else "")


def _package_tree_commit() -> str | None:
    """The commit of the imported dmft source, when it sits in a git checkout of dmft."""
    package = Path(__file__).resolve().parents[1]
    top = _git(package, "rev-parse", "--show-toplevel")
    if not top or not (Path(top) / "pyproject.toml").is_file():
        return None
    tracked = _git(package, "ls-files", "--error-unmatch", "__init__.py")
    return _commit_of(package) if tracked else None


def _install_source() -> dict[str, Any]:
    """What pip recorded about where dmft was installed from (PEP 610 ``direct_url.json``)."""
    try:
        text = importlib_metadata.distribution("dmft").read_text("direct_url.json")
    except importlib_metadata.PackageNotFoundError:
        return {}
    try:
        content = json.loads(text) if text else {}
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def git_info(spec_file: str | Path | None = None) -> dict[str, Any]:
    """The dmft version and, when it can be known, the commit it was built from.

    The commit comes from the imported package's own git checkout (an editable or in-place
    install), else from pip's record of a VCS install (``pip install git+...@commit``), else from
    the local folder pip installed from (a clone: its HEAD now, which may have moved since). The
    commit of the spec file's folder, when that is a git work tree, is recorded separately.
    """
    commit, source = _package_tree_commit(), "package source tree"
    if commit is None:
        origin = _install_source()
        vcs = origin.get("vcs_info") if isinstance(origin.get("vcs_info"), dict) else {}
        url = str(origin.get("url", ""))
        if vcs.get("commit_id"):
            commit, source = str(vcs["commit_id"]), f"pip install from {url}"
        elif url.startswith("file://"):
            commit = _commit_of(Path(url[len("file://"):]))
            source = f"current HEAD of the install source {url[len('file://'):]}"
    info: dict[str, Any] = {"dmft_version": _version("dmft"), "git_commit": commit,
                            "git_commit_source": source if commit else None}
    if spec_file is not None:
        info["spec_git_commit"] = _commit_of(Path(spec_file).resolve().parent)
    return info


def version_string() -> str:
    """``dmft X.Y.Z`` plus the commit when known (``dmft --version``)."""
    info = git_info()
    version = info["dmft_version"] or "unknown version"
    return f"dmft {version}" + (f" (git {info['git_commit']})" if info["git_commit"] else "")


def provenance(spec_file: str | Path | None = None) -> dict[str, Any]:
    """Versions, git commit, float64 flag, devices and host: what reproduces a result."""
    import jax

    devices = jax.devices()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {name: _version(name) for name in _PACKAGES},
        "python": platform.python_version(),
        **git_info(spec_file),
        "float64": bool(jax.config.jax_enable_x64),
        "backend": jax.default_backend(),
        "devices": [str(device) for device in devices],
        "device_kind": devices[0].device_kind if devices else None,
        "host": platform.node(),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """`np.savez` of float/int arrays (None entries are skipped), to exactly `path` (no ``.npz``
    appended)."""
    with open(path, "wb") as stream:
        np.savez(stream, **{key: np.asarray(value) for key, value in arrays.items()
                            if value is not None})


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=_json_default) + "\n")


def training_rule(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The training rule of a spec dictionary (``Spec.to_dict()``): ``optimizer`` ("flow" when
    absent) and ``learning_rate`` (None for gradient flow), plus ``batch_size`` and ``seed`` for
    "sgd" (docs/conventions.md §2a)."""
    training = spec.get("training", {})
    optimizer = training.get("optimizer", "flow")
    out = {"optimizer": optimizer, "learning_rate": training.get("learning_rate")}
    if optimizer == "sgd":
        out.update(batch_size=training.get("batch_size"), seed=training.get("seed"))
    return out


def write_results(
    out_dir: str | Path,
    npz_name: str,
    arrays: Mapping[str, Any],
    metadata: Mapping[str, Any],
    figures: Callable[[Path], None] | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/npz_name``, ``out_dir/metadata.json`` and any figures, atomically.

    ``metadata`` gets the `provenance()` block added under ``"provenance"`` (with the commit of
    the spec file's folder when ``metadata["spec"]["source"]`` names one), the list of files
    written under ``"files"`` and, when it holds a spec with a ``training`` table, the training
    rule under ``"training"`` (`training_rule`; keys the caller already put there win). ``figures`` is called with the staging folder and writes its files
    there. An earlier result in ``out_dir`` is replaced as a whole (`atomic_output`). Returns the
    final paths by file name.
    """
    spec = metadata.get("spec")
    spec_file = spec.get("source") if isinstance(spec, Mapping) else None
    metadata = {**metadata, "training": {**training_rule(spec), **metadata.get("training", {})}} \
        if isinstance(spec, Mapping) and isinstance(spec.get("training"), Mapping) else metadata
    with atomic_output(out_dir) as staging:
        write_npz(staging / npz_name, arrays)
        if figures is not None:
            figures(staging)
        names = sorted({path.name for path in staging.iterdir()} | {"metadata.json"})
        write_json(staging / "metadata.json",
                   {**metadata, "files": names, "provenance": provenance(spec_file)})
    return {name: Path(out_dir) / name for name in names}
