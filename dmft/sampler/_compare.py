"""Finite width against the limit: ensemble statistics, 1/N fits and deviations.

For every observable O (loss, f, NTK entries, Φ^ℓ, G^ℓ) and width N:

    mean_N = ⟨O⟩_seeds,  stderr_N = sd_seeds(O)/√S,  N·Var_N = N · var_seeds(O)
    mean_N = a + b/N     (weighted least squares over widths, weights 1/stderr_N²)

and, when the infinite-width prediction is available, mean_N − O_∞ (the finite-width bias, O(1/N))
and the single-network RMS deviation sqrt⟨(O − O_∞)²⟩ (O(1/√N) for μP, where f(0) → 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jaxtyping import Float

from .._errors import DmftError
from ..spec import Spec
from ._sample import Samples

#: observables compared with the limit, in report order
OBSERVABLES = ("loss_train", "loss_test", "f_train", "f_test", "ntk", "ntk_test_train")


@dataclasses.dataclass(frozen=True, eq=False)
class InverseWidthFit:
    """mean(N) = limit + slope/N, elementwise, with 1σ uncertainties from the standard errors.

    ``chi2`` and ``dof`` (= #widths − 2) measure how well 1/N describes the data.
    """

    limit: np.ndarray
    limit_err: np.ndarray
    slope: np.ndarray
    slope_err: np.ndarray
    chi2: np.ndarray
    dof: int


def fit_inverse_width(
    widths, means: Float[np.ndarray, "W ..."], stderrs: Float[np.ndarray, "W ..."] | None = None
) -> InverseWidthFit:
    """Weighted least squares of mean(N) = a + b/N over the widths (axis 0), per element.

    With zero or missing standard errors the fit is unweighted and the uncertainties are those
    of unit errors. Needs at least two distinct widths.
    """
    widths = np.asarray(widths, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    if len(np.unique(widths)) < 2:
        raise ValueError("a 1/N fit needs at least two distinct widths")
    if stderrs is None:
        stderrs = np.ones_like(means)
    stderrs = np.asarray(stderrs, dtype=np.float64)
    shape = (-1,) + (1,) * (means.ndim - 1)
    x = (1.0 / widths).reshape(shape)
    positive = np.all(stderrs > 0, axis=0)
    weights = np.where(positive, 1.0 / np.where(stderrs > 0, stderrs, 1.0) ** 2, 1.0)
    s0 = weights.sum(0)
    s1 = (weights * x).sum(0)
    s2 = (weights * x * x).sum(0)
    sy = (weights * means).sum(0)
    sxy = (weights * x * means).sum(0)
    det = s0 * s2 - s1 * s1
    limit = (s2 * sy - s1 * sxy) / det
    slope = (s0 * sxy - s1 * sy) / det
    residual = means - limit - slope * x
    return InverseWidthFit(
        limit=limit,
        limit_err=np.sqrt(s2 / det),
        slope=slope,
        slope_err=np.sqrt(s0 / det),
        chi2=(weights * residual**2).sum(0),
        dof=len(widths) - 2,
    )


def ensemble_statistics(values: Float[np.ndarray, "S ..."], width: int) -> dict[str, np.ndarray]:
    """Mean, standard error of the mean and N·variance over the seed axis 0."""
    values = np.asarray(values)
    seeds = values.shape[0]
    var = values.var(axis=0, ddof=1) if seeds > 1 else np.zeros(values.shape[1:])
    return {"mean": values.mean(axis=0), "stderr": np.sqrt(var / seeds), "nvar": width * var}


def _lazy_layer_kernels(spec: Spec, num_times: int) -> dict[str, np.ndarray]:
    """Frozen Φ^ℓ and G^ℓ (ℓ = 1..L) of the lazy limit, with the sampler's normalisation:
    Φ^ℓ = (Σ^{ℓ+1} − σ_b²)/σ_w², G^ℓ = Σ̇^{ℓ+1} ⊙ G^{ℓ+1}, G^{L+1} = 1 (g^ℓ = √N ∂f/∂h^ℓ)."""
    from ..kernels import layer_kernels

    arch = spec.architecture
    gain, bias = (arch.sigma_w**2, arch.sigma_b**2) if arch.parameterization == "ntk" else (1.0, 0.0)
    kernels = layer_kernels(arch, spec.data.x_train)
    L = arch.hidden_layers
    out = {}
    g = np.ones_like(kernels.nngp[0])
    for layer in range(L, 0, -1):
        g = np.asarray(kernels.nngp_derivative[layer]) * g
        out[f"g_L{layer}"] = np.broadcast_to(g, (num_times, *g.shape))
        phi = (np.asarray(kernels.nngp[layer]) - bias) / gain
        out[f"phi_L{layer}"] = np.broadcast_to(phi, (num_times, *phi.shape))
    return out


def infinite_width_limit(spec: Spec, centered: bool = False
                         ) -> tuple[dict[str, np.ndarray] | None, str]:
    """The limit's arrays (``f_train``, ``ntk``, ``loss_train``, ``phi_L{l}``, ...) from
    `dmft.solve`, and a note; ``(None, reason)`` when no limit is available for this spec.

    For uncentred NTK-parameterized networks f(0) ~ N(0, Σ^{L+1}) stays O(1) at every width, so
    the limit of the *mean* loss is 𝓛_lazy(t) + (1/2P) tr Cov f(t) (eq:lazy-variance); that is
    what ``loss_train`` / ``loss_test`` hold then. The mean of f converges to the lazy f.
    """
    try:
        from ..solvers import solve

        solution = solve(spec)
        arrays = solution.arrays(spec.data.y_train, spec.data.y_test)
    except (DmftError, ImportError, NotImplementedError) as error:
        return None, f"no limit: {type(error).__name__}: {' '.join(str(error).split())}"
    arrays = {k: v for k, v in arrays.items() if k != "t"}  # "{obs}_stderr": the limit's MC error
    if spec.architecture.parameterization == "ntk" and not any(k.startswith("phi_L") for k in arrays):
        arrays.update(_lazy_layer_kernels(spec, len(spec.training.times)))
    if spec.architecture.parameterization == "ntk" and not centered:
        from ._propagator import predict_training_fluctuations

        spread = predict_training_fluctuations(spec)
        arrays["loss_train"] = arrays["loss_train"] + spread.f_train.mean(axis=-1) / 2
        if "loss_test" in arrays and spread.f_test is not None:
            arrays["loss_test"] = arrays["loss_test"] + spread.f_test.mean(axis=-1) / 2
    method = solution.diagnostics.get("method", "lazy" if spec.architecture.parameterization == "ntk"
                                      else "dmft")
    return arrays, f"limit: dmft.solve ({method})"


def _observables(samples: Samples, width: int) -> dict[str, np.ndarray]:
    member = samples[width]
    out = {key: member[key] for key in OBSERVABLES if key in member}
    for kind in ("phi", "g"):
        for layer in range(member[kind].shape[2]):
            out[f"{kind}_L{layer + 1}"] = member[kind][:, :, layer]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """Per observable: statistics per width, the 1/N fit and deviations from the limit."""

    widths: tuple[int, ...]
    stats: dict[str, dict[int, dict[str, np.ndarray]]]
    fits: dict[str, InverseWidthFit]
    limit: dict[str, np.ndarray] | None
    limit_note: str
    summary: dict[str, dict[str, np.ndarray]]

    def arrays(self) -> dict[str, np.ndarray]:
        """``N{N}_{obs}_mean/_stderr/_nvar``, ``N{N}_{obs}_deviation``, ``limit_{obs}``,
        ``fit_{obs}_limit/_limit_err/_slope/_slope_err/_chi2``, ``summary_{obs}_{stat}``."""
        out: dict[str, Any] = {}
        for name, per_width in self.stats.items():
            for width, stats in per_width.items():
                for stat, value in stats.items():
                    out[f"N{width}_{name}_{stat}"] = value
            if self.limit is not None and name in self.limit:
                out[f"limit_{name}"] = self.limit[name]
                if f"{name}_stderr" in self.limit:
                    out[f"limit_{name}_stderr"] = self.limit[f"{name}_stderr"]
            fit = self.fits.get(name)
            if fit is not None:
                for field in ("limit", "limit_err", "slope", "slope_err", "chi2"):
                    out[f"fit_{name}_{field}"] = getattr(fit, field)
            for stat, value in self.summary.get(name, {}).items():
                out[f"summary_{name}_{stat}"] = value
        return {key: np.asarray(value) for key, value in out.items()}


def compare(samples: Samples, spec: Spec, limit: dict[str, np.ndarray] | None = None,
            limit_note: str | None = None) -> Comparison:
    """Ensemble statistics per width, 1/N fits and deviations from the limit (computed with
    `infinite_width_limit` unless given)."""
    if limit is None and limit_note is None:
        limit, limit_note = infinite_width_limit(spec, samples.diagnostics.get("centered", False))
    widths = samples.widths
    observables = {width: _observables(samples, width) for width in widths}
    stats: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    fits: dict[str, InverseWidthFit] = {}
    summary: dict[str, dict[str, np.ndarray]] = {}
    for name in observables[widths[0]]:
        per_width = {}
        for width in widths:
            values = observables[width][name]
            per_width[width] = ensemble_statistics(values, width)
            if limit is not None and name in limit:
                per_width[width]["deviation"] = per_width[width]["mean"] - limit[name]
        stats[name] = per_width
        if len(set(widths)) >= 2:
            fits[name] = fit_inverse_width(
                widths,
                np.stack([per_width[w]["mean"] for w in widths]),
                np.stack([per_width[w]["stderr"] for w in widths]),
            )
        rows: dict[str, list[float]] = {"nvar": [], "noise": []}
        if limit is not None and name in limit:
            rows.update(bias=[], member_rms=[])
        for width in widths:
            s = per_width[width]
            rows["nvar"].append(float(np.mean(s["nvar"])))
            rows["noise"].append(float(np.sqrt(np.mean(s["stderr"] ** 2))))
            if "bias" in rows:
                rows["bias"].append(float(np.sqrt(np.mean(s["deviation"] ** 2))))
                member = observables[width][name] - limit[name]
                rows["member_rms"].append(float(np.sqrt(np.mean(member**2))))
        summary[name] = {key: np.asarray(value) for key, value in rows.items()}
    return Comparison(widths=widths, stats=stats, fits=fits, limit=limit,
                      limit_note=limit_note or "", summary=summary)
