"""The sampler's ensembles, 1/N-extrapolated, as the benchmarks compare them with a DMFT solve."""

from __future__ import annotations

import numpy as np

from dmft import Spec
from dmft.sampler import ensemble_statistics, fit_inverse_width, sample


def networks_limit(spec: Spec, widths: list[int], seeds: int):
    """The 1/N-extrapolated training loss of the sampler's ensembles, its error, χ²/dof and the
    number of diverged members."""
    samples = sample(spec, widths, seeds, hessian_steps=0)
    means, errors, diverged = [], [], 0
    for width in widths:
        stats = ensemble_statistics(samples[width]["loss_train"], width)  # over (seeds, T)
        diverged += int(np.sum(np.asarray(samples[width]["diverged_step"]) >= 0))
        means.append(stats["mean"])
        errors.append(stats["stderr"])
    fit = fit_inverse_width(widths, np.stack(means), np.stack(errors))
    chi2 = float(np.max(fit.chi2 / fit.dof)) if fit.dof > 0 else float("nan")
    return np.asarray(fit.limit), np.asarray(fit.limit_err), chi2, diverged


def criterion(limit_loss, limit_err, nets, nets_err) -> tuple[float, float]:
    """max |DMFT − networks| in % of 𝓛(0), and max |Δ| / (3σ + 1 % 𝓛(0)) (the issues' pass mark
    is ≤ 1 at every saved step), σ the two errors combined."""
    gap = np.abs(np.asarray(limit_loss) - nets)
    sigma = np.hypot(nets_err, np.asarray(limit_err))
    return (100 * float(np.max(gap)) / limit_loss[0],
            float(np.max(gap / (3 * sigma + 0.01 * limit_loss[0]))))
