"""Finite-width networks of a spec, trained and compared with the infinite-width limit.

- `Network`: the width-N MLP of conventions §1 (both parameterizations), its fields and kernels.
- `sample(spec, widths, seeds)` → `Samples`: vmapped, device-sharded ensembles trained by
  `GradientFlow` (Diffrax) or `GradientDescent`, recorded at the spec's times.
"""

from ._network import Network
from ._sample import Samples, member_bytes, method_from_table, plan_batches, sample
from ._train import GradientDescent, GradientFlow, member_key, seed_mesh, train_ensemble

__all__ = [
    "GradientDescent",
    "GradientFlow",
    "Network",
    "Samples",
    "member_bytes",
    "member_key",
    "method_from_table",
    "plan_batches",
    "sample",
    "seed_mesh",
    "train_ensemble",
]
