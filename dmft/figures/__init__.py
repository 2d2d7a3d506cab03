"""Publication-quality figures (one paper column, vector PDF plus PNG)."""

from ._learning_curve import plot_learning_curve
from ._ntk_evolution import kernel_alignment, plot_ntk_evolution
from ._style import paper_style, save_figure

__all__ = ["kernel_alignment", "paper_style", "plot_learning_curve", "plot_ntk_evolution", "save_figure"]
