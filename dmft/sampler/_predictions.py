"""Predicted 1/N corrections side by side with the measured ensembles."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._errors import DmftError, InputError
from ..spec import Spec
from ._propagator import TangentPropagator, TrainingFluctuations, predict_training_fluctuations
from ._compare import without_diverged
from ._sample import Samples
from ._vertex import vertex_prediction


#: fewest ensemble members a variance and its standard error need
MIN_VARIANCE_SEEDS = 2
#: fewest members for the distribution-free (fourth-moment) standard error; its unbiased form
#: divides by (S − 2)(S − 3). Below it the error assumes Gaussian members.
KURTOSIS_SEEDS = 4


def variance_of_variance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased variance s² over axis 0 and a strictly positive estimate of Var(s²).

    For S i.i.d. values with central moments μ2 = σ², μ4, Var(s²) = μ4/S − σ⁴(S−3)/(S(S−1)).
    Its unbiased estimate from the sample central moments m2, m4 (divisor S) is

        V_u = S/((S−2)(S−3)) · [m4 − (S²−3)/(S−1)² · m2²],

    which is negative for a sizeable fraction of small ensembles (19 % of Gaussian samples at
    S = 4). Every distribution has μ4 ≥ σ⁴, so Var(s²) ≥ 2σ⁴/(S(S−1)); with the unbiased,
    nonnegative U-statistic U = s⁴ − V_u of σ⁴ the estimate returned for S ≥ 4 is

        V = max(V_u, 2U/(S(S−1))),

    which is > 0 whenever s² > 0 (if V_u ≤ 0 then U ≥ s⁴ > 0) and never below the unbiased
    estimate: conservative where the floor acts (Gaussian data: +23 % at S = 4, +7 % at S = 5,
    under 0.1 % from S = 8 on) and unbiased otherwise. With S = 2 or 3 no unbiased estimate of
    μ4 exists (for S = 3, m4 = 3m2²/2 identically); V = 2s⁴/(S+1) is then the unbiased estimate
    for Gaussian values (E s⁴ = σ⁴(S+1)/(S−1)), which `predict_corrections` notes. S < 2 is an
    InputError naming --seeds.
    """
    values = np.asarray(values, dtype=np.float64)
    seeds = values.shape[0] if values.ndim else 0
    if seeds < MIN_VARIANCE_SEEDS:
        raise InputError(f"--seeds must be at least {MIN_VARIANCE_SEEDS} to estimate an ensemble "
                         f"variance and its error, got {seeds}")
    S = float(seeds)
    centred = values - values.mean(axis=0)
    m2 = (centred**2).mean(axis=0)
    var = m2 * S / (S - 1)
    if seeds < KURTOSIS_SEEDS:
        return var, 2 * var**2 / (S + 1)
    m4 = (centred**4).mean(axis=0)
    unbiased = S / ((S - 2) * (S - 3)) * (m4 - (S * S - 3) / (S - 1) ** 2 * m2**2)
    u_sigma4 = var**2 - unbiased
    return var, np.maximum(unbiased, 2 * u_sigma4 / (S * (S - 1)))


def variance_with_error(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased variance over axis 0 and its standard error √V (`variance_of_variance`), > 0
    for non-degenerate data; InputError naming --seeds for fewer than 2 members."""
    var, var_of_var = variance_of_variance(values)
    return var, np.sqrt(var_of_var)


@dataclasses.dataclass(frozen=True, eq=False)
class Predictions:
    """Predicted and measured fluctuations.

    ``vertex``: predicted N·Var Φ̂^ℓ at t = 0 (L, P, P); ``vertex_measured[N]`` = (N·Var, error)
    from the ensemble at t = 0. ``training``: `TrainingFluctuations`; ``training_measured[N]``
    maps ``f_train``/``loss_train`` to (value, error) on the same scale (N·Var or Var).
    """

    widths: tuple[int, ...]
    t: np.ndarray
    vertex: np.ndarray | None
    vertex_measured: dict[int, tuple[np.ndarray, np.ndarray]]
    training: TrainingFluctuations | None
    training_measured: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]
    notes: dict[str, str]

    def arrays(self) -> dict[str, np.ndarray]:
        """``pred_vertex_nvar_phi`` (L, P, P), ``N{N}_vertex_nvar_phi(_err)``,
        ``pred_{scale}_f_train(_err)``, ``pred_{scale}_loss_train(_err)``, ``N{N}_meas_...``."""
        out: dict[str, Any] = {}
        if self.vertex is not None:
            out["pred_vertex_nvar_phi"] = self.vertex
            for width, (value, err) in self.vertex_measured.items():
                out[f"N{width}_vertex_nvar_phi"] = value
                out[f"N{width}_vertex_nvar_phi_err"] = err
        if self.training is not None:
            tag = "nvar" if self.training.scale == "N*Var" else "var"
            tr = self.training
            for key in ("f_train", "loss_train", "f_test"):
                value = getattr(tr, key)
                if value is not None:
                    out[f"pred_{tag}_{key}"] = value
                    out[f"pred_{tag}_{key}_err"] = getattr(tr, f"{key}_err")
            if tr.f_limit is not None:
                out["pred_meanfield_f_train"] = tr.f_limit
            for width, measured in self.training_measured.items():
                for key, (value, err) in measured.items():
                    out[f"N{width}_meas_{tag}_{key}"] = value
                    out[f"N{width}_meas_{tag}_{key}_err"] = err
        return {key: np.asarray(value) for key, value in out.items()}

    def table(self) -> str:
        lines = ["", "predicted 1/N corrections vs measurement (mean over entries, ± 1 s.e.)"]
        if "variance_errors" in self.notes:
            lines.append(f"note: {self.notes['variance_errors']}")
        if "divergence" in self.notes:
            lines.append(f"note: {self.notes['divergence']}")
        if self.vertex is not None:
            lines.append(f"initialization, four-point vertex: N·Var Φ^l(0)  [{self.notes['vertex']}]")
            P = self.vertex.shape[-1]
            off = ~np.eye(P, dtype=bool)
            for layer in range(self.vertex.shape[0]):
                parts = [("diag", np.eye(P, dtype=bool))] + ([("off", off)] if P > 1 else [])
                for label, mask in parts:
                    pred = self.vertex[layer][mask].mean()
                    row = f"  l={layer + 1} {label:<5} predicted {pred:10.4g} | measured"
                    for width, (value, err) in self.vertex_measured.items():
                        e = np.sqrt(np.mean(err[layer][mask] ** 2) / mask.sum())
                        row += f"  N={width}: {value[layer][mask].mean():.4g}±{e:.2g}"
                    lines.append(row)
        else:
            lines.append(f"initialization: {self.notes.get('vertex', 'no prediction')}")
        if self.training is not None:
            scale = self.training.scale
            lines.append(f"training: {scale} f_train and {scale} loss  [{self.training.note}]")
            index = np.unique(np.linspace(0, len(self.t) - 1, min(6, len(self.t))).astype(int))
            for key in ("f_train", "loss_train"):
                pred, pred_err = getattr(self.training, key), getattr(self.training, f"{key}_err")
                for i in index:
                    p = np.mean(pred[i])
                    pe = np.sqrt(np.mean(np.asarray(pred_err[i]) ** 2) / max(np.size(pred[i]), 1))
                    row = f"  {key:<10} t={self.t[i]:<8.3g} predicted {p:10.4g}±{pe:<8.2g}| measured"
                    for width, measured in self.training_measured.items():
                        value, err = measured[key]
                        e = np.sqrt(np.mean(np.asarray(err[i]) ** 2) / max(np.size(value[i]), 1))
                        row += f"  N={width}: {np.mean(value[i]):.4g}±{e:.2g}"
                    lines.append(row)
        else:
            lines.append(f"training: {self.notes.get('training', 'no prediction')}")
        return "\n".join(lines)


def predict_corrections(spec: Spec, samples: Samples,
                        propagator: TangentPropagator = TangentPropagator()) -> Predictions:
    """Vertex prediction at initialization and training-fluctuation prediction, each compared
    with the ensembles in `samples` (N·Var over seeds; Var for the NTK parameterization's
    O(1) training fluctuations). A prediction that is not available is noted, never raised.
    Members that diverged (GD/SGD) are left out of the measurements, and a width with fewer than
    two members left is not measured (both noted)."""
    if len(samples.seeds) < MIN_VARIANCE_SEEDS:  # before any prediction work
        raise InputError(f"--seeds must be at least {MIN_VARIANCE_SEEDS} for the measured "
                         f"variances of the 1/N predictions, got {len(samples.seeds)} "
                         f"(or pass --no-predictions)")
    notes: dict[str, str] = {}
    if len(samples.seeds) < KURTOSIS_SEEDS:
        notes["variance_errors"] = (f"{len(samples.seeds)} seeds: the measured variances' errors "
                                    f"assume Gaussian members (use --seeds {KURTOSIS_SEEDS} or more "
                                    f"for distribution-free errors)")
    samples, divergence_note = without_diverged(samples)
    if divergence_note:
        notes["divergence"] = divergence_note
    measured_widths = [w for w in samples.widths
                       if samples[w]["f_train"].shape[0] >= MIN_VARIANCE_SEEDS]
    if len(measured_widths) < len(samples.widths):
        notes["divergence"] = notes.get("divergence", "") + (f"; widths {[w for w in samples.widths if w not in measured_widths]}"
                                f" keep fewer than {MIN_VARIANCE_SEEDS} members: not measured")
    vertex, vertex_measured = None, {}
    try:
        vertex = vertex_prediction(spec.architecture, spec.data.x_train)
        notes["vertex"] = "Roberts-Yaida-Hanin recursion, pairwise blocks, polar Gauss-Legendre"
    except DmftError as error:
        notes["vertex"] = f"no prediction: {error}"
    has_init = samples.t.size > 0 and samples.t[0] == 0.0
    if vertex is not None:
        if has_init:
            for width in measured_widths:
                var, err = variance_with_error(samples[width]["phi"][:, 0])
                vertex_measured[width] = (width * var, width * err)
        else:
            notes["vertex"] += "; not measured (t = 0 is not a saved time)"
    training, training_measured = None, {}
    try:
        training = predict_training_fluctuations(spec, propagator)
        notes["training"] = training.note
    except DmftError as error:
        notes["training"] = f"no prediction: {' '.join(str(error).split())}"
    if training is not None:
        for width in measured_widths:
            factor = width if training.scale == "N*Var" else 1.0
            measured = {}
            for key in ("f_train", "loss_train", "f_test"):
                if key in samples[width] and getattr(training, key) is not None:
                    var, err = variance_with_error(samples[width][key])
                    measured[key] = (factor * var, factor * err)
            training_measured[width] = measured
    return Predictions(widths=tuple(measured_widths), t=samples.t, vertex=vertex,
                       vertex_measured=vertex_measured, training=training,
                       training_measured=training_measured, notes=notes)
