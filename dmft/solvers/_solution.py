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
        loss: the loss of the solve (`dmft.network.MSE` when None), used by `losses`,
            `sharpness` and `arrays`.
        data: the `dmft.Data` of the solve, when the solver records it: its class labels give the
            ``accuracy_train`` / ``accuracy_test`` arrays.

    Several outputs (docs/conventions.md §2b, C > 1): ``f_train`` is (T, P, C) and ``f_test``
    (T, P_test, C); ``ntk`` stays the (T, P, P) scalar kernel K. The NTK over (point, output)
    pairs is K ⊗ I_C in the lazy limit (the outputs are independent at initialization and share
    one kernel), so K is all of it there; the two-layer DMFT reports the output average
    (1/C) Σ_c K_{cc} of its diagonal blocks (K ⊗ I_C at t = 0).
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
    loss: Any = None
    data: Any = None

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

    def _loss(self, loss=None):
        from ..network import MSE

        return loss if loss is not None else (self.loss if self.loss is not None else MSE())

    def losses(self, y_train: np.ndarray, y_test: np.ndarray | None = None,
               loss=None) -> dict[str, np.ndarray]:
        """𝓛(t) on train, and on test when targets are given: the solve's loss (`loss` overrides
        it; MSE (1/2P) Σ_μ ‖f_μ(t) − y_μ‖² by default). Targets (P, C) are rows of C outputs."""
        loss = self._loss(loss)
        y_train = np.asarray(y_train)
        rows = y_train.ndim == 2
        out = {"loss_train": np.asarray(loss.value(np.asarray(self.f_train), y_train, rows=rows))}
        if y_test is not None and self.f_test is not None:
            out["loss_test"] = np.asarray(loss.value(np.asarray(self.f_test), np.asarray(y_test),
                                                     rows=rows))
        return out

    def accuracies(self, data=None) -> dict[str, np.ndarray]:
        """``accuracy_train`` / ``accuracy_test`` (T,) from the class labels of `data` (default
        the solve's own `data`) through `dmft.Data.accuracy`; empty where there are no labels."""
        data = data if data is not None else self.data
        out: dict[str, np.ndarray] = {}
        if data is None:
            return out
        if data.labels is not None:
            out["accuracy_train"] = data.accuracy(self.f_train)
        if data.labels_test is not None and self.f_test is not None:
            out["accuracy_test"] = data.accuracy(self.f_test, test=True)
        return out

    @functools.cached_property
    def sharpness(self) -> Float[np.ndarray, " T"]:
        """The Gauss–Newton sharpness in time units (docs/conventions.md §5), computed once (cost
        O(T (PC)³)), read-only; plain GD on the linearised model is unstable above 2/η0.

        MSE: λ_max(K(t))/P, which is also λ_max(K ⊗ I_C)/P for C outputs. Cross-entropy: the
        Gauss–Newton matrix carries the softmax Hessian H_μ = diag(p_μ) − p_μ p_μᵀ, p = softmax(f),
        and the value is λ_max(H^{1/2} (K ⊗ I_C) H^{1/2})/P with H = blockdiag(H_μ) at f(t)
        (`gauss_newton_sharpness`). A Monte Carlo solve gives its standard error as
        ``stderr["sharpness"]`` (the result file's ``sharpness_stderr``)."""
        value = gauss_newton_sharpness(np.asarray(self.ntk), np.asarray(self.f_train),
                                       self._loss())
        value.setflags(write=False)
        return value

    def arrays(self, y_train: np.ndarray, y_test: np.ndarray | None = None, *, loss=None,
               data=None) -> dict[str, np.ndarray]:
        """The result-file arrays of docs/conventions.md §5 (plus ``phi_L{l}``, ``g_L{l}``,
        ``*_stderr``): losses by the solve's loss (or `loss`), and ``accuracy_train`` /
        ``accuracy_test`` where `data` (default the solve's own) has class labels."""
        out: dict[str, Any] = {
            "t": self.t,
            "f_train": self.f_train,
            "ntk": self.ntk,
            "f_test": self.f_test,
            "ntk_test_train": self.ntk_test_train,
            "sharpness": self.sharpness,
            **self.losses(y_train, y_test, loss),
            **self.accuracies(data),
        }
        for layer, (phi, g) in enumerate(zip(self.phi, self.g), start=1):
            out[f"phi_L{layer}"] = phi
            out[f"g_L{layer}"] = g
        for key, value in self.stderr.items():
            out[f"{key}_stderr"] = value
        return {key: np.asarray(value) for key, value in out.items() if value is not None}


def gauss_newton_sharpness(ntk: Float[np.ndarray, "... P P"], f: np.ndarray, loss
                           ) -> Float[np.ndarray, "..."]:
    """The Gauss–Newton sharpness in time units of the kernel `ntk` (..., P, P) at outputs `f`
    (..., P) or (..., P, C) (`Solution.sharpness`): the loss's own `sharpness` (λ_max(K)/P for
    MSE, with the softmax Hessians for cross-entropy), as a numpy array."""
    from ..network import MSE

    return np.array((loss if loss is not None else MSE()).sharpness(ntk, f))


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
