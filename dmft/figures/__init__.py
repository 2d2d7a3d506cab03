"""Publication-quality figures (one paper column, vector PDF plus PNG)."""

from ._learning_curve import plot_learning_curve, time_axis
from ._ntk_evolution import kernel_alignment, plot_ntk_evolution
from ._style import (
    COLUMN_WIDTH,
    FULL_WIDTH,
    PALETTE,
    figure_size,
    ordered_colors,
    paper_style,
    save_figure,
)
from ._sweep_figures import (
    SweepData,
    plot_alignment_family,
    plot_depth_transfer,
    plot_gamma0_family,
    plot_lr_transfer,
    plot_sweep_figure,
    plot_width_deviation,
)
from ._titles import run_title, time_label

__all__ = [
    "COLUMN_WIDTH",
    "FULL_WIDTH",
    "PALETTE",
    "SweepData",
    "figure_size",
    "kernel_alignment",
    "ordered_colors",
    "paper_style",
    "plot_alignment_family",
    "plot_depth_transfer",
    "plot_gamma0_family",
    "plot_learning_curve",
    "plot_lr_transfer",
    "plot_ntk_evolution",
    "plot_sweep_figure",
    "plot_width_deviation",
    "run_title",
    "save_figure",
    "time_axis",
    "time_label",
]
