"""One criterion for a training run that diverged, shared by every solver and the sampler.

A run has diverged at the first saved time whose loss is non-finite or exceeds
`DIVERGENCE_FACTOR` times the reference loss (the loss at initialisation, or ½⟨y²⟩ when that is
0 as at f(0) = 0). Catapults rise by O(1)–O(10) factors and converge; a factor of 1e6 separates
them from a geometric blow-up (which passes it within a few dozen steps) with room to spare.
"""

from __future__ import annotations

import numpy as np

from ._errors import SolveError

DIVERGENCE_FACTOR = 1e6


def first_divergent_index(losses, reference: float) -> int | None:
    """The index of the first loss that is non-finite or above `DIVERGENCE_FACTOR`·`reference`,
    or None. `losses` has time as its first axis; any further axes (seeds) count if any diverges."""
    losses = np.asarray(losses, dtype=np.float64)
    bad = ~np.isfinite(losses) | (losses > DIVERGENCE_FACTOR * max(float(reference), 1e-300))
    if losses.ndim > 1:
        bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def check_not_diverged(losses, times, reference: float, what: str, steps=None) -> None:
    """SolveError naming the time (and step, for discrete rules) and the loss where `what`
    diverged; nothing when every loss stays below the threshold."""
    index = first_divergent_index(losses, reference)
    if index is None:
        return
    loss = float(np.max(np.asarray(losses)[index]))
    time = float(np.asarray(times)[index])
    step = None if steps is None else int(np.asarray(steps)[index])
    where = f"t = {time:g}" if step is None else f"step {step} (t = {time:g})"
    raise SolveError(f"{what} diverged at {where}: loss {loss:.3g} against "
                     f"{reference:.3g} at the start (threshold ×{DIVERGENCE_FACTOR:g}); "
                     "lower training.learning_rate", time=time, step=step, loss=loss)
