"""The package's matplotlib style and figure saving (PDF + PNG, one paper column)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files: never open a window, work on headless machines

import matplotlib.pyplot as plt  # noqa: E402

STYLE = Path(__file__).with_name("dmft.mplstyle")


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply the dmft style inside a ``with`` block."""
    with plt.style.context(str(STYLE)):
        yield


def save_figure(figure, stem: str | Path) -> list[Path]:
    """Save `figure` as ``stem.pdf`` and ``stem.png`` and close it; returns both paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        figure.savefig(path)
    plt.close(figure)
    return paths
