"""Float64 guard for the numerical entry points.

dmft never switches JAX to float64 at import (that would change the behaviour of the user's
other JAX code); the CLI and the tests do it themselves. The kernels, solvers and sampler need
float64 (tolerances down to 1e-12, eigendecompositions of ill-conditioned NTKs, Monte Carlo
averages over 10^5 samples), so their entry points call `require_float64` and refuse to run
silently in float32.
"""

from __future__ import annotations

from ._errors import InputError

ENABLE_X64_HINT = 'call jax.config.update("jax_enable_x64", True) before using dmft'


def float64_enabled() -> bool:
    """Whether JAX currently creates float64 arrays (``jax_enable_x64``)."""
    import jax

    return bool(jax.config.jax_enable_x64)


def require_float64(what: str) -> None:
    """InputError (one line naming `what`) unless JAX runs in float64.

    `what` names the computation, e.g. ``"dmft.solve"`` or ``"the NTK of architecture"``; the
    message tells the user how to switch float64 on (dmft never does it at import).
    """
    if not float64_enabled():
        name = " ".join(str(what).split()) or "dmft"
        raise InputError(
            f"{name} needs float64 but JAX runs in float32 (jax_enable_x64 is off): "
            f"{ENABLE_X64_HINT} (the dmft command line does this itself)"
        )


__all__ = ["ENABLE_X64_HINT", "float64_enabled", "require_float64"]
