"""Sweeps: the limit (and optionally finite-width ensembles) over a grid of spec keys.

- `sweep(spec, grid, out, widths=..., seeds=...)` → `SweepResult`: one result folder per point,
  a tidy summary table (``summary.csv`` / ``summary.npz``) and metadata recording the grid;
  resumable, with divergent points recorded (docs/conventions.md §5, ``dmft sweep``).
- `parse_assignment("architecture.gamma0=0.5,1,2")`: one ``--set`` of the command line.
- `load_summary(folder)`, `read_sweep_metadata(folder)`: what the figures are rebuilt from.
"""

from ._grid import (
    SWEEP_ONLY_KEYS,
    Point,
    as_grid,
    grid_points,
    parse_assignment,
    parse_value,
)
from ._lazy import gd_closed_form, lazy_group_key, lazy_solution, shared_kernel
from ._summary import kernel_alignment, load_summary, top_eigenvalues
from ._sweep import PointRecord, SweepResult, read_sweep_metadata, sweep

__all__ = [
    "SWEEP_ONLY_KEYS",
    "Point",
    "PointRecord",
    "SweepResult",
    "as_grid",
    "gd_closed_form",
    "grid_points",
    "kernel_alignment",
    "lazy_group_key",
    "lazy_solution",
    "load_summary",
    "parse_assignment",
    "parse_value",
    "read_sweep_metadata",
    "shared_kernel",
    "sweep",
    "top_eigenvalues",
]
