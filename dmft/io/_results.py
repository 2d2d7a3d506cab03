"""Result files with full provenance, written atomically.

Every command writes into a fresh temporary folder beside the destination and moves the files
into place only once all of them exist, so a failed run never leaves a partial result.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

_PACKAGES = ("dmft", "jax", "jaxlib", "diffrax", "equinox", "sympy", "numpy", "scipy", "matplotlib")


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the dmft source tree, when it is a git checkout."""
    source = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """Versions, git commit, float64 flag, devices and host: what reproduces a result."""
    import jax

    devices = jax.devices()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {name: _version(name) for name in _PACKAGES},
        "python": platform.python_version(),
        "git_commit": _git_commit(),
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


@contextlib.contextmanager
def atomic_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success move its files into `out_dir`, on error drop them.

    Files are moved one by one with `os.replace` (atomic per file on POSIX); they appear only
    after every file of the run has been written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dmft-staging-", dir=out_dir))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """`np.savez` of float/int arrays (None entries are skipped)."""
    np.savez(path, **{key: np.asarray(value) for key, value in arrays.items() if value is not None})


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=_json_default) + "\n")


def write_results(
    out_dir: str | Path,
    npz_name: str,
    arrays: Mapping[str, Any],
    metadata: Mapping[str, Any],
    figures: Callable[[Path], None] | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/npz_name``, ``out_dir/metadata.json`` and any figures, atomically.

    ``metadata`` gets the `provenance()` block added under ``"provenance"``. ``figures`` is called
    with the staging folder and writes its files there. Returns the final paths by file name.
    """
    with atomic_output(out_dir) as staging:
        write_npz(staging / npz_name, arrays)
        write_json(staging / "metadata.json", {**metadata, "provenance": provenance()})
        if figures is not None:
            figures(staging)
        names = sorted(path.name for path in staging.iterdir())
    return {name: Path(out_dir) / name for name in names}
