"""The one adaptive ODE integration every gradient-flow solve uses (Diffrax Tsit5 + PID)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax


def integrate_flow(
    vector_field: Callable[[Any, Any, Any], Any],
    y0: Any,
    times,
    rtol: float,
    atol: float,
    max_steps: int,
    save: Callable[[Any, Any, Any], Any] | None = None,
    progress: bool = False,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> diffrax.Solution:
    """Solve dy/dt = vector_field(t, y, args) from t = 0, saving ``save(t, y, args)`` (default y)
    at ``times``, with Tsit5 (order 5) and a PID step-size controller.

    Failures are not raised here (``throw=False``): callers check ``solution.result`` and turn it
    into a `SolveError` that names the solve.
    """
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5(),
        t0=0.0,
        t1=times[-1],
        dt0=None,
        y0=y0,
        saveat=diffrax.SaveAt(ts=times) if save is None else diffrax.SaveAt(ts=times, fn=save),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
        progress_meter=diffrax.TqdmProgressMeter(refresh_steps=50) if progress
        else diffrax.NoProgressMeter(),
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
    )
