"""The package's matplotlib style and figure saving: one shared style for every figure.

- widths: one journal column (`COLUMN_WIDTH` = 3.4 in) or a full page (`FULL_WIDTH` = 7 in),
  `figure_size(wide, height)`;
- vector PDF with TrueType fonts (``pdf.fonttype = 42``) plus a 300 dpi PNG (`save_figure`);
- colour-blind-safe colours: the Okabe–Ito palette for categories (`PALETTE`) and a truncated
  viridis ramp for ordered families such as γ0 or N (`ordered_colors`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files: never open a window, work on headless machines

import matplotlib.pyplot as plt
import numpy as np

STYLE = Path(__file__).with_name("dmft.mplstyle")
COLUMN_WIDTH = 3.4  # inches, one journal column
FULL_WIDTH = 7.0  # inches, a full page
#: Okabe & Ito's colour-blind-safe palette (black last), as in the style file's colour cycle.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42}  # TrueType fonts in vector output


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply the dmft style inside a ``with`` block."""
    with plt.style.context(str(STYLE)), plt.rc_context(_FONTS):
        yield


def figure_size(wide: bool = False, height: float | None = None) -> tuple[float, float]:
    """(width, height) in inches: one column or the full page; height defaults to 0.74 of a
    column's width (the style's aspect)."""
    width = FULL_WIDTH if wide else COLUMN_WIDTH
    return width, 0.74 * COLUMN_WIDTH if height is None else height


def ordered_colors(count: int) -> list:
    """`count` colours along viridis from dark blue to green-yellow (the light yellow end is
    cut: it vanishes on white); distinguishable in the common colour-vision deficiencies and in
    greyscale, for families with an order (γ0, N, L)."""
    if count <= 1:
        return [PALETTE[0]]
    return [plt.get_cmap("viridis")(value) for value in np.linspace(0.0, 0.85, count)]


def save_figure(figure, stem: str | Path) -> list[Path]:
    """Save `figure` as ``stem.pdf`` and ``stem.png`` and close it; returns both paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    for path in paths:
        figure.savefig(path)
    plt.close(figure)
    return paths
