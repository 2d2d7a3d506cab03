"""Finite-width networks of a spec, trained and compared with the infinite-width limit.

- `FiniteNetwork`: a width-N instance of a `dmft.network.Network` (both parameterizations), its fields and kernels.
- `sample(spec, widths, seeds)` → `Samples`: vmapped, device-sharded ensembles trained by
  `AdaptiveSteps` (Diffrax) or `FixedSteps`, recorded at the spec's times.
- `compare(samples, spec)` → `Comparison`: means, standard errors, N·Var, 1/N fits
  (`fit_inverse_width`) and deviations from `dmft.solve(spec)`; `report_table`, `plot_comparison`.
- Predicted corrections: `vertex_prediction` (four-point vertex at initialization),
  `predict_training_fluctuations` (two-layer μP tangent propagator; lazy variance for NTK),
  and `predict_corrections(spec, samples)` that sets them beside the measurements.
"""

from ._compare import (
    Comparison,
    InverseWidthFit,
    compare,
    ensemble_statistics,
    fit_inverse_width,
    infinite_width_limit,
)
from ._network import FiniteNetwork
from ._predictions import Predictions, predict_corrections, variance_with_error
from ._propagator import TangentPropagator, TrainingFluctuations, predict_training_fluctuations
from ._report import plot_comparison, report_table
from ._sample import Samples, member_bytes, method_from_table, plan_batches, sample
from ._train import AdaptiveSteps, FixedSteps, member_key, seed_mesh, train_ensemble
from ._vertex import PolarQuadrature, vertex_prediction

__all__ = [
    "AdaptiveSteps",
    "Comparison",
    "FiniteNetwork",
    "FixedSteps",
    "InverseWidthFit",
    "PolarQuadrature",
    "Predictions",
    "Samples",
    "TangentPropagator",
    "TrainingFluctuations",
    "compare",
    "ensemble_statistics",
    "fit_inverse_width",
    "infinite_width_limit",
    "member_bytes",
    "member_key",
    "method_from_table",
    "plan_batches",
    "plot_comparison",
    "predict_corrections",
    "predict_training_fluctuations",
    "report_table",
    "sample",
    "seed_mesh",
    "train_ensemble",
    "variance_with_error",
    "vertex_prediction",
]
