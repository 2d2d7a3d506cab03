"""The NTK-evolution figure of ``dmft run`` for a "mup" spec: how feature learning moves K(t).

Two stacked panels over the training time:
  - kernel-target alignment A(t) = yᵀK(t)y / (‖K(t)‖_F ‖y‖²) (1 for K ∝ y yᵀ; flat when lazy);
  - the largest eigenvalues of K(t).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ._learning_curve import _time_axis
from ._style import paper_style, save_figure


def kernel_alignment(ntk: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A(t) = yᵀ K(t) y / (‖K(t)‖_F ‖y‖²) for K of shape (T, P, P)."""
    ntk = np.asarray(ntk, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    quadratic = np.einsum("i,tij,j->t", y, ntk, y)
    norm = np.linalg.norm(ntk, axis=(1, 2)) * (y @ y)
    return np.divide(quadratic, norm, out=np.full_like(quadratic, np.nan), where=norm > 0)


def plot_ntk_evolution(solution, y_train: np.ndarray, path_stem: str | Path,
                       num_eigenvalues: int = 4) -> list[Path]:
    """Write ``path_stem.pdf`` and ``.png``: alignment A(t) and the top eigenvalues of K(t).

    With Monte Carlo standard errors on the NTK (``solution.stderr["ntk"]``) the alignment gets a
    ±2σ band from first-order error propagation (entries treated as independent).
    """
    t = np.asarray(solution.t)
    ntk = np.asarray(solution.ntk)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    alignment = kernel_alignment(ntk, y)
    eigenvalues = np.linalg.eigvalsh(0.5 * (ntk + np.swapaxes(ntk, 1, 2)))[:, ::-1]
    count = min(num_eigenvalues, eigenvalues.shape[1])
    with paper_style():
        figure, (ax_align, ax_eig) = plt.subplots(2, 1, sharex=True,
                                                  figsize=(3.4, 3.4), constrained_layout=True)
        (line,) = ax_align.plot(t, alignment)
        stderr = solution.stderr.get("ntk") if getattr(solution, "stderr", None) else None
        if stderr is not None:
            norm_k = np.linalg.norm(ntk, axis=(1, 2))
            # ∂A/∂K_ij = y_i y_j /(‖K‖‖y‖²) − A K_ij/‖K‖²
            grad = (np.einsum("i,j->ij", y, y)[None] / (norm_k * (y @ y))[:, None, None]
                    - alignment[:, None, None] * ntk / (norm_k**2)[:, None, None])
            sigma = np.sqrt(np.sum((grad * np.asarray(stderr)) ** 2, axis=(1, 2)))
            ax_align.fill_between(t, alignment - 2 * sigma, alignment + 2 * sigma,
                                  color=line.get_color(), alpha=0.25, linewidth=0)
        ax_align.set_ylabel(r"alignment $A(t)$")
        for index in range(count):
            ax_eig.plot(t, eigenvalues[:, index], label=rf"$\lambda_{index + 1}$")
        ax_eig.set_ylabel(r"eigenvalues of $K(t)$")
        if eigenvalues[:, :count].min() > 0 and eigenvalues[:, 0].max() / eigenvalues[:, :count].min() > 100:
            ax_eig.set_yscale("log")
        if count > 1:
            ax_eig.legend(ncol=2, loc="best")
        _time_axis(ax_eig, t)
        return save_figure(figure, path_stem)


__all__ = ["kernel_alignment", "plot_ntk_evolution"]
