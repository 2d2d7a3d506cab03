"""The NTK-evolution figure of ``dmft run`` for a "mup" spec: how feature learning moves K(t).

Two stacked panels over the training time:
  - kernel-target alignment A(t) = yᵀK(t)y / (‖K(t)‖_F ‖y‖²) (1 for K ∝ y yᵀ; flat when lazy);
  - the largest eigenvalues of K(t).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ._learning_curve import time_axis
from ._style import paper_style, save_figure
from ._titles import run_title, time_label


def kernel_alignment(ntk: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A(t) = yᵀ K(t) y / (‖K(t)‖_F ‖y‖²) for K of shape (T, P, P)."""
    ntk = np.asarray(ntk, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    quadratic = np.einsum("i,tij,j->t", y, ntk, y)
    norm = np.linalg.norm(ntk, axis=(1, 2)) * (y @ y)
    return np.divide(quadratic, norm, out=np.full_like(quadratic, np.nan), where=norm > 0)


def eigenvalue_errors(ntk: np.ndarray, stderr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of K(t) (descending) and their first-order standard errors.

    δλ_k = v_kᵀ δK v_k for a symmetric perturbation; with independent errors σ_ij on the entries
    i ≤ j (δK_ji = δK_ij), Var λ_k = Σ_i v_ki⁴ σ_ii² + Σ_{i≠j} 2 v_ki² v_kj² σ_ij²."""
    ntk = np.asarray(ntk, dtype=np.float64)
    symmetric = 0.5 * (ntk + np.swapaxes(ntk, -1, -2))
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    eigenvalues, eigenvectors = eigenvalues[:, ::-1], eigenvectors[:, :, ::-1]
    sigma2 = np.asarray(stderr, dtype=np.float64) ** 2
    sigma2 = 0.5 * (sigma2 + np.swapaxes(sigma2, -1, -2))
    weights = 2 * sigma2 - np.einsum("tii->ti", sigma2)[:, :, None] * np.eye(ntk.shape[-1])
    squares = eigenvectors**2  # (T, P, k)
    variance = np.einsum("tik,tij,tjk->tk", squares, weights, squares)
    return eigenvalues, np.sqrt(np.maximum(variance, 0.0))


def plot_ntk_evolution(solution, y_train: np.ndarray, path_stem: str | Path,
                       num_eigenvalues: int = 4, spec=None) -> list[Path]:
    """Write ``path_stem.pdf`` and ``.png``: alignment A(t) and the top eigenvalues of K(t).

    With Monte Carlo standard errors on the NTK (``solution.stderr["ntk"]``) the alignment and the
    eigenvalues get ±2σ bands from first-order error propagation (entries treated as
    independent). With `spec` the title names the run and the time axis its units. Lines join the
    saved times (markers); the solver does not give values in between.
    """
    t = np.asarray(solution.t)
    ntk = np.asarray(solution.ntk)
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    alignment = kernel_alignment(ntk, y)
    stderr = solution.stderr.get("ntk") if getattr(solution, "stderr", None) else None
    if stderr is not None:
        eigenvalues, eigen_err = eigenvalue_errors(ntk, stderr)
    else:
        eigenvalues = np.linalg.eigvalsh(0.5 * (ntk + np.swapaxes(ntk, 1, 2)))[:, ::-1]
        eigen_err = None
    count = min(num_eigenvalues, eigenvalues.shape[1])
    with paper_style():
        figure, (ax_align, ax_eig) = plt.subplots(2, 1, sharex=True,
                                                  figsize=(3.4, 3.6), constrained_layout=True)
        (line,) = ax_align.plot(t, alignment, "o-", markersize=2.5)
        if stderr is not None:
            norm_k = np.linalg.norm(ntk, axis=(1, 2))
            # ∂A/∂K_ij = y_i y_j /(‖K‖‖y‖²) − A K_ij/‖K‖²
            grad = (np.einsum("i,j->ij", y, y)[None] / (norm_k * (y @ y))[:, None, None]
                    - alignment[:, None, None] * ntk / (norm_k**2)[:, None, None])
            sigma = np.sqrt(np.sum((grad * np.asarray(stderr)) ** 2, axis=(1, 2)))
            ax_align.fill_between(t, alignment - 2 * sigma, alignment + 2 * sigma,
                                  color=line.get_color(), alpha=0.25, linewidth=0,
                                  label=r"$\pm 2$ Monte Carlo s.e.")
            ax_align.legend(loc="lower right")
        ax_align.set_ylabel(r"alignment $A(t)$")
        ax_align.text(0.02, 0.96, r"$A = \frac{y^\top K y}{\|K\|_F\,\|y\|^2}$",
                      transform=ax_align.transAxes, va="top", ha="left", fontsize=8)
        for index in range(count):
            (line,) = ax_eig.plot(t, eigenvalues[:, index], "o-", markersize=2.5,
                                  label=rf"$\lambda_{index + 1}$")
            if eigen_err is not None:
                low = eigenvalues[:, index] - 2 * eigen_err[:, index]
                high = eigenvalues[:, index] + 2 * eigen_err[:, index]
                ax_eig.fill_between(t, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        ax_eig.set_ylabel(r"top eigenvalues of $K(t)$")
        if eigenvalues[:, :count].min() > 0 and eigenvalues[:, 0].max() / eigenvalues[:, :count].min() > 100:
            ax_eig.set_yscale("log")
        if count > 1:
            ax_eig.legend(ncol=count, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                          columnspacing=1.0, handlelength=1.5)
        time_axis(ax_eig, t, time_label(spec))
        if spec is not None:
            ax_align.set_title(run_title(spec, "DMFT limit"))
        return save_figure(figure, path_stem)


__all__ = ["eigenvalue_errors", "kernel_alignment", "plot_ntk_evolution"]
