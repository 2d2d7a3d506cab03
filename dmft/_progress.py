"""Progress bars for long work (solves, sweeps, sampling), shown on stderr.

Set ``DMFT_PROGRESS=0`` (or call `set_progress(False)`) to silence them, e.g. in benchmarks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_enabled = os.environ.get("DMFT_PROGRESS", "1") not in ("0", "false", "no")


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for this process."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    return _enabled


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (a plain iteration when progress is off)."""
    return iter(tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=not _enabled,
                     leave=False, dynamic_ncols=True))


def progress_bar(total: int, desc: str) -> tqdm:
    """A manual progress bar: ``bar.update(k)``, ``bar.set_postfix(...)``, ``bar.close()``."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not _enabled, leave=False,
                dynamic_ncols=True)
