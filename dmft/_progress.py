"""Progress bars for long work (solves, sweeps, sampling), shown on stderr.

Off by default in the Python API (a notebook would be flooded); switch them on with
``dmft.set_progress(True)`` or the environment variable ``DMFT_PROGRESS=1``. The ``dmft`` command
line turns them on unless ``--quiet`` is given or ``DMFT_PROGRESS=0`` is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def progress_env() -> bool | None:
    """``DMFT_PROGRESS`` read as a switch: True, False, or None when it is unset (or unreadable)."""
    value = os.environ.get("DMFT_PROGRESS")
    if value is None:
        return None
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


_enabled = progress_env() is True


def set_progress(enabled: bool) -> None:
    """Turn progress bars on or off for this process (off by default in the Python API)."""
    global _enabled
    _enabled = bool(enabled)


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


class StepTicker:
    """Advances a progress bar by one from inside a jitted loop (``jax.debug.callback``).

    Passed to the jitted march as a static argument, so each solve carries its own bar and no
    module state is shared; `StepTicker.for_solve` returns None when progress bars are off, so
    that the compiled march then has no host callback at all (and is shared by all solves)."""

    def __init__(self, bar):
        self.bar = bar

    @classmethod
    def for_solve(cls, bar) -> StepTicker | None:
        return cls(bar) if progress_enabled() else None

    def __call__(self, *_) -> None:
        self.bar.update(1)

    def tick(self, k) -> None:
        """Inside jit: one step done."""
        import jax

        jax.debug.callback(self, k)
