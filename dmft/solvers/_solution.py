"""What every infinite-width solve returns: one `Solution` type for lazy and DMFT solvers."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np
from jaxtyping import Float


@dataclasses.dataclass(frozen=True, eq=False)
class Solution:
    """Infinite-width training dynamics at the saved times.

    Attributes:
        t: saved gradient-flow times (T,).
        f_train: train predictions f_μ(t) (T, P).
        ntk: the NTK K(t) over the training set (T, P, P).
        f_test: test predictions (T, P_test), when test inputs were given.
        ntk_test_train: K_{*α}(t) (T, P_test, P), when test inputs were given.
        phi: equal-time feature kernels Φ^ℓ(t,t), ℓ = 1..L, each (T, P, P) (DMFT solves).
        g: equal-time gradient kernels G^ℓ(t,t), ℓ = 1..L, each (T, P, P) (DMFT solves).
        stderr: Monte Carlo standard errors, keyed like the result file (``"f_train"``,
            ``"ntk"``, ``"loss_train"``, ``"sharpness"``, ``"phi_L{l}"``, ``"g_L{l}"``, ...), each
            shaped like its value; empty for exact solvers.
        diagnostics: JSON-ready; every method writes the keys of `diagnostics` (``method``,
            ``settings``, ``iterations``, ``residuals``, ``wall_time_s``) plus its own.
    """

    t: Float[np.ndarray, " T"]
    f_train: Float[np.ndarray, "T P"]
    ntk: Float[np.ndarray, "T P P"]
    f_test: Float[np.ndarray, "T Ptest"] | None = None
    ntk_test_train: Float[np.ndarray, "T Ptest P"] | None = None
    phi: tuple[Float[np.ndarray, "T P P"], ...] = ()
    g: tuple[Float[np.ndarray, "T P P"], ...] = ()
    stderr: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_augmented(
        cls,
        t: Float[np.ndarray, " T"],
        f: Float[np.ndarray, "T Q"],
        ntk: Float[np.ndarray, "T Q Q"],
        num_train: int,
        phi: tuple[Float[np.ndarray, "T Q Q"], ...] = (),
        g: tuple[Float[np.ndarray, "T Q Q"] | Float[np.ndarray, " T"], ...] = (),
        diagnostics: dict[str, Any] | None = None,
    ) -> Solution:
        """A solution from arrays over the augmented index set, train points first then test points
        (Q = P + P_test). Kernels that do not depend on the data index (e.g. the gradient kernels
        of deep linear networks) may be given as (T,) and are broadcast to (T, P, P)."""
        has_test = f.shape[1] > num_train
        shape = (t.shape[0], num_train, num_train)

        def train_block(kernel):
            kernel = np.asarray(kernel)
            if kernel.ndim == 1:
                return np.broadcast_to(kernel[:, None, None], shape).copy()
            return kernel[:, :num_train, :num_train]

        return cls(
            t=t,
            f_train=f[:, :num_train],
            ntk=ntk[:, :num_train, :num_train],
            f_test=f[:, num_train:] if has_test else None,
            ntk_test_train=ntk[:, num_train:, :num_train] if has_test else None,
            phi=tuple(map(train_block, phi)),
            g=tuple(map(train_block, g)),
            diagnostics=diagnostics or {},
        )

    def losses(self, y_train: np.ndarray, y_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """𝓛(t) = (1/2P) Σ_μ (f_μ(t) − y_μ)² on train, and on test when targets are given."""
        from ._common import LOSS

        out = {"loss_train": LOSS.value(np.asarray(self.f_train), y_train)}
        if y_test is not None and self.f_test is not None:
            out["loss_test"] = LOSS.value(np.asarray(self.f_test), y_test)
        return out

    @functools.cached_property
    def sharpness(self) -> Float[np.ndarray, " T"]:
        """λ_max(K(t))/P: the Gauss–Newton sharpness in time units (docs/conventions.md §5); plain
        GD on the linearised model is unstable above 2/η0. Computed once (cost O(T P³)), read-only.
        A Monte Carlo solve gives its standard error as ``stderr["sharpness"]`` (the result file's
        ``sharpness_stderr``)."""
        ntk = np.asarray(self.ntk)
        value = np.linalg.eigvalsh(ntk)[:, -1] / ntk.shape[-1]
        value.setflags(write=False)
        return value

    def arrays(self, y_train: np.ndarray, y_test: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The result-file arrays of docs/conventions.md §5 (plus ``phi_L{l}``, ``g_L{l}``, ``*_stderr``)."""
        out: dict[str, Any] = {
            "t": self.t,
            "f_train": self.f_train,
            "ntk": self.ntk,
            "f_test": self.f_test,
            "ntk_test_train": self.ntk_test_train,
            "sharpness": self.sharpness,
            **self.losses(y_train, y_test),
        }
        for layer, (phi, g) in enumerate(zip(self.phi, self.g), start=1):
            out[f"phi_L{layer}"] = phi
            out[f"g_L{layer}"] = g
        for key, value in self.stderr.items():
            out[f"{key}_stderr"] = value
        return {key: np.asarray(value) for key, value in out.items() if value is not None}


def diagnostics(method: str, settings: Any, start: float, iterations: int = 0,
                residuals: list[float] | tuple[float, ...] = (), **extra: Any) -> dict[str, Any]:
    """The diagnostics of a solve, one spelling for every method: ``method`` (its name),
    ``settings`` (the method object's fields), ``iterations`` (outer fixed-point sweeps, 0 for a
    direct solve), ``residuals`` (one per sweep), ``wall_time_s`` (since `start`, a
    `time.perf_counter` reading), then the method's own keys (``dt``, ``steps``, ``ode_steps``, ...)."""
    return {
        "method": method,
        "settings": dataclasses.asdict(settings),
        "iterations": int(iterations),
        "residuals": [float(r) for r in residuals],
        **extra,
        "wall_time_s": time.perf_counter() - start,
    }
