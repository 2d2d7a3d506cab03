"""Vectorised lazy limits: one kernel and one eigendecomposition serve every point that shares
its network and data.

The lazy limit depends on the point only through the frozen NTK K (architecture and data) and
the training rule: under gradient flow f(t) = (I − e^{−Kt/P}) y, under gradient descent
f_k = (I − (I − η0K/P)^k) y (docs/conventions.md §2, §2a). A μP network's lazy limit does not
depend on γ0 at all, and no lazy limit depends on η0 except through the scalar factor above, so a
sweep over γ0, η0 or the saved times computes K and its eigendecomposition once.

For gradient flow the predictions come from `dmft.solvers.lazy_closed_form` with the kernels of
`dmft.layer_kernels`, the same calls as the lazy solver's, so the arrays equal ``dmft.solve``'s.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._divergence import check_not_diverged, first_divergent_index
from .._errors import SolveError
from ..kernels import layer_kernels
from ..network import MSE
from ..solvers import Solution, lazy_closed_form
from ..spec import Spec

_LOSS = MSE()


def lazy_group_key(spec: Spec, lazy_reference: bool = False) -> tuple | None:
    """Points with equal keys share one kernel; None when the point's limit is not a lazy closed
    form this module evaluates (``lazy_reference``: the γ0 → 0 reference of a μP point)."""
    arch, training = spec.architecture, spec.training
    if training.optimizer not in ("flow", "gd") or training.loss != "mse":
        return None
    if spec.data.num_outputs != 1:
        return None
    if not lazy_reference:
        if arch.parameterization != "ntk":
            return None
        method = dict(spec.solver).get("method", "closed_form")
        if method != "closed_form" or set(spec.solver) - {"method"}:
            return None
    fields = dataclasses.asdict(arch)
    if arch.parameterization == "mup":
        fields["gamma0"] = None  # the lazy limit of μP does not depend on γ0
    data = spec.data
    arrays = tuple(None if a is None else (a.shape, a.tobytes())
                   for a in (data.x_train, data.y_train, data.x_test))
    return (tuple(sorted(fields.items())), arrays)


@dataclasses.dataclass
class SharedKernel:
    """The frozen NTK of a group of points and its eigendecomposition."""

    ntk: np.ndarray
    ntk_test_train: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    seconds: float


def shared_kernel(spec: Spec) -> SharedKernel:
    """K and K_{*X} of `spec` computed as the lazy solver computes them, and eigh(K)."""
    start = time.perf_counter()
    arch, data = spec.architecture, spec.data
    output_layer = arch.hidden_layers + 1
    ntk = np.asarray(layer_kernels(arch, data.x_train, layers=(output_layer,),
                                   with_derivative=False).ntk[-1])
    if data.num_test:
        cross = np.asarray(layer_kernels(arch, data.x_test, data.x_train, layers=(output_layer,),
                                         with_derivative=False).ntk[-1])
    else:
        cross = np.zeros((0, data.num_train))
    eigenvalues, eigenvectors = np.linalg.eigh(ntk)
    return SharedKernel(ntk, cross, np.clip(eigenvalues, 0.0, None), eigenvectors,
                        time.perf_counter() - start)


def gd_closed_form(kernel: SharedKernel, y: np.ndarray, rate: float, steps: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact lazy gradient descent: f_k = V (1 − (1 − η0λ/P)^k) Vᵀ y and
    f_{*,k} = K_{*X} V diag(Σ_{j<k} (η0/P)(1 − η0λ/P)^j) Vᵀ y (the λ → 0 limit kη0/P is exact)."""
    num_train = y.shape[0]
    lam, vectors = kernel.eigenvalues, kernel.eigenvectors
    steps = np.asarray(steps, dtype=np.float64)
    factor = 1.0 - rate * lam / num_train  # (P,)
    with np.errstate(over="ignore", invalid="ignore"):
        powers = np.power(factor[None, :], steps[:, None])  # (T, P)
    decayed = 1.0 - powers
    y_eigen = vectors.T @ y
    f_train = (decayed * y_eigen) @ vectors.T
    safe = np.where(lam > 0, lam, 1.0)
    integral = np.where(lam > 0, decayed / safe, steps[:, None] * rate / num_train)
    f_test = (integral * y_eigen) @ (kernel.ntk_test_train @ vectors).T
    return f_train, f_test


def _check_gd(kernel: SharedKernel, y: np.ndarray, rate: float, steps: np.ndarray,
              f_train: np.ndarray) -> None:
    """SolveError (the package's one divergence criterion, `dmft._divergence`) naming the first
    step whose loss passed the threshold: with 𝓛_k = Σ_i w_i (1 − η0λ_i/P)^{2k}, w_i = (v_iᵀy)²/2P,
    every step between the last good save and the first bad one is checked."""
    reference = float(_LOSS.value(np.zeros_like(y), y))
    with np.errstate(over="ignore", invalid="ignore"):
        losses = _LOSS.value(f_train, y)
    index = first_divergent_index(losses, reference)
    if index is None:
        return
    num_train = y.shape[0]
    weight = (kernel.eigenvectors.T @ y) ** 2 / (2 * num_train)
    base = (1.0 - rate * kernel.eigenvalues / num_train) ** 2
    first = int(steps[index - 1]) + 1 if index > 0 else 0
    last = int(steps[index])
    step, loss = last, float(losses[index])
    for start in range(first, last + 1, 4096):
        k = np.arange(start, min(start + 4096, last + 1), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            per_step = (np.power(base[None, :], k[:, None]) * weight[None, :]).sum(axis=1)
        hit = first_divergent_index(per_step, reference)
        if hit is not None:
            step, loss = int(k[hit]), float(per_step[hit])
            break
    check_not_diverged([loss], [step * rate], reference, "the lazy GD solve (shared kernel)",
                       steps=[step])
    check_not_diverged(losses, np.asarray(steps) * rate, reference,
                       "the lazy GD solve (shared kernel)", steps=steps)


def lazy_solution(spec: Spec, kernel: SharedKernel) -> Solution:
    """The lazy `Solution` of `spec` from its group's shared kernel (SolveError when gradient
    descent diverges, by the package's one divergence criterion)."""
    start = time.perf_counter()
    data, training = spec.data, spec.training
    times = np.asarray(training.times, dtype=np.float64)
    y = np.asarray(data.y_train, dtype=np.float64)
    extra: dict[str, Any] = {"shared_kernel": True, "kernel_seconds": kernel.seconds}
    if training.optimizer == "flow":
        f_train, f_test = lazy_closed_form(jnp.asarray(kernel.ntk),
                                           jnp.asarray(kernel.ntk_test_train), jnp.asarray(y),
                                           jnp.asarray(times))
        f_train, f_test = np.asarray(f_train), np.asarray(f_test)
        name, settings = "ClosedForm", {}
    else:
        steps = np.asarray(training.steps)
        f_train, f_test = gd_closed_form(kernel, y, training.learning_rate, steps)
        _check_gd(kernel, y, training.learning_rate, steps, f_train)
        name, settings = "ClosedForm", {"learning_rate": training.learning_rate}
        extra["steps"] = int(steps[-1])
    if not (np.all(np.isfinite(f_train)) and np.all(np.isfinite(f_test))):
        raise SolveError("lazy solve produced non-finite predictions (is the NTK finite?)")
    num_times = times.shape[0]
    has_test = data.num_test > 0
    ntk, cross = kernel.ntk, kernel.ntk_test_train
    solution = Solution(
        t=times,
        f_train=f_train,
        ntk=np.broadcast_to(ntk, (num_times, *ntk.shape)),
        f_test=f_test if has_test else None,
        ntk_test_train=np.broadcast_to(cross, (num_times, *cross.shape)) if has_test else None,
        diagnostics={"method": name, "settings": settings, "iterations": 0, "residuals": [],
                     **extra, "wall_time_s": time.perf_counter() - start},
    )
    # Solution.sharpness (a cached property) decomposes K at every saved time; the kernel is
    # frozen, so one call of the same routine gives the same numbers
    sharpness = np.asarray(_LOSS.sharpness(ntk[None]))
    solution.__dict__.setdefault("sharpness", np.repeat(sharpness, num_times))
    return solution
