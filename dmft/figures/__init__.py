"""Publication-quality figures (one paper column, vector PDF plus PNG)."""

from ._learning_curve import plot_learning_curve
from ._style import paper_style, save_figure

__all__ = ["paper_style", "plot_learning_curve", "save_figure"]
