"""Finite-width networks of a spec, trained and compared with the infinite-width limit.

- `FiniteNetwork`: a width-N instance of a `dmft.network.Network` (both parameterizations), its fields and kernels.
- `sample(spec, widths, seeds)` → `Samples`: vmapped, device-sharded ensembles recorded at the
  spec's times, trained by the spec's rule: gradient flow integrated by `AdaptiveSteps` (Diffrax)
  or `FixedSteps` (Euler steps dt of the flow), or GD / SGD themselves (`RuleSteps`, step η0 =
  ``training.learning_rate``; no numerical method). Each member records the sharpness
  λ_max(K)/P and λ_max(η∇²𝓛) (`hessian_sharpness`, Lanczos on Hessian–vector products).
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
    without_diverged,
)
from ._network import FiniteNetwork
from ._predictions import Predictions, predict_corrections, variance_with_error
from ._propagator import TangentPropagator, TrainingFluctuations, predict_training_fluctuations
from ._report import plot_comparison, report_table
from ._sample import (
    Samples,
    member_bytes,
    method_for_spec,
    method_from_table,
    plan_batches,
    sample,
)
from ._sharpness import (
    gauss_newton_sharpness,
    hessian_sharpness,
    lanczos_top_eigenvalue,
    ntk_sharpness,
)
from ._train import AdaptiveSteps, FixedSteps, RuleSteps, member_key, seed_mesh, train_ensemble
from ._vertex import PolarQuadrature, vertex_prediction

__all__ = [
    "AdaptiveSteps",
    "Comparison",
    "FiniteNetwork",
    "FixedSteps",
    "InverseWidthFit",
    "PolarQuadrature",
    "Predictions",
    "RuleSteps",
    "Samples",
    "TangentPropagator",
    "TrainingFluctuations",
    "compare",
    "ensemble_statistics",
    "fit_inverse_width",
    "gauss_newton_sharpness",
    "hessian_sharpness",
    "infinite_width_limit",
    "lanczos_top_eigenvalue",
    "member_bytes",
    "member_key",
    "method_for_spec",
    "method_from_table",
    "ntk_sharpness",
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
    "without_diverged",
]
