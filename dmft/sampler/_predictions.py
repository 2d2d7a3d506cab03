"""Predicted 1/N corrections side by side with the measured ensembles."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._errors import DmftError
from ..spec import Spec
from ._propagator import TangentPropagator, TrainingFluctuations, predict_training_fluctuations
from ._sample import Samples
from ._vertex import vertex_prediction


def variance_with_error(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased variance over axis 0 and its standard error sqrt((m4 − s⁴)/S)."""
    values = np.asarray(values, dtype=np.float64)
    seeds = values.shape[0]
    centred = values - values.mean(axis=0)
    var = (centred**2).sum(axis=0) / max(seeds - 1, 1)
    m4 = (centred**4).mean(axis=0)
    return var, np.sqrt(np.maximum(m4 - var**2, 0.0) / seeds)


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
    O(1) training fluctuations). A prediction that is not available is noted, never raised."""
    notes: dict[str, str] = {}
    vertex, vertex_measured = None, {}
    try:
        vertex = vertex_prediction(spec.architecture, spec.data.x_train)
        notes["vertex"] = "Roberts-Yaida-Hanin recursion, pairwise blocks, polar Gauss-Legendre"
    except DmftError as error:
        notes["vertex"] = f"no prediction: {error}"
    has_init = samples.t.size > 0 and samples.t[0] == 0.0
    if vertex is not None:
        if has_init:
            for width in samples.widths:
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
        for width in samples.widths:
            factor = width if training.scale == "N*Var" else 1.0
            measured = {}
            for key in ("f_train", "loss_train", "f_test"):
                if key in samples[width] and getattr(training, key) is not None:
                    var, err = variance_with_error(samples[width][key])
                    measured[key] = (factor * var, factor * err)
            training_measured[width] = measured
    return Predictions(widths=samples.widths, t=samples.t, vertex=vertex,
                       vertex_measured=vertex_measured, training=training,
                       training_measured=training_measured, notes=notes)
