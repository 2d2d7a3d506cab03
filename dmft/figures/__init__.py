"""Publication-quality figures (one paper column, vector PDF plus PNG)."""

from ._learning_curve import plot_learning_curve, time_axis
from ._ntk_evolution import kernel_alignment, plot_ntk_evolution
from ._style import paper_style, save_figure
from ._titles import run_title, time_label

__all__ = [
    "kernel_alignment",
    "paper_style",
    "plot_learning_curve",
    "plot_ntk_evolution",
    "run_title",
    "save_figure",
    "time_axis",
    "time_label",
]
