"""The tidy summary of a sweep: one row per point and saved time, as CSV and npz.

Columns, in order (absent ones are left out of the table, never filled with zeros):

- ``point`` (the index), one column per swept key (named after the dotted key), ``diverged``
  (the limit diverged), ``diverged_step`` / ``diverged_t`` (where, NaN otherwise), ``t`` and,
  for discrete training rules, ``step``;
- the limit's ``loss_train``, ``loss_test``, ``accuracy_train`` / ``accuracy_test`` when the
  result has them, their ``*_stderr`` (Monte Carlo solves), ``sharpness`` = λ_max(K)/P,
  ``alignment`` A(t) = yᵀKy/(‖K‖_F‖y‖²) and the top NTK eigenvalues ``ntk_eig1``, ...;
- ``lazy_loss_train`` / ``lazy_loss_test``: the γ0 → 0 (lazy) reference of a μP point;
- per sampled width N: ``N{N}_diverged`` (at least half of the members diverged),
  ``N{N}_diverged_fraction``, and over the members that did not diverge the ensemble mean and standard error (over seeds) of
  ``loss_train``, ``loss_test``, ``sharpness``, ``hessian_sharpness``, ``alignment``,
  ``ntk_eig1`` and ``f_dev`` = ⟨‖f_N(t) − f_∞(t)‖²⟩/P (the squared deviation of the train
  predictions from the limit), as ``N{N}_<name>`` and ``N{N}_<name>_stderr``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_CSV = "summary.csv"
SUMMARY_NPZ = "summary.npz"
_SAMPLER_QUANTITIES = ("loss_train", "loss_test", "sharpness", "hessian_sharpness", "alignment",
                       "ntk_eig1", "f_dev")


def kernel_alignment(ntk: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A = yᵀ K y / (‖K‖_F ‖y‖²) over the leading axes of K (..., P, P)."""
    ntk = np.asarray(ntk, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    quadratic = np.einsum("i,...ij,j->...", y, ntk, y)
    norm = np.linalg.norm(ntk, axis=(-2, -1)) * (y @ y)
    return np.divide(quadratic, norm, out=np.full_like(quadratic, np.nan), where=norm > 0)


def top_eigenvalues(ntk: np.ndarray, count: int) -> np.ndarray:
    """The `count` largest eigenvalues of symmetric K (..., P, P), descending (..., count)."""
    ntk = np.asarray(ntk, dtype=np.float64)
    if ntk.ndim == 3 and ntk.shape[0] > 1 and np.all(ntk == ntk[:1]):
        # a frozen kernel (the lazy limit): one decomposition serves every saved time
        first = top_eigenvalues(ntk[0], count)
        return np.broadcast_to(first, (ntk.shape[0], first.shape[-1])).copy()
    symmetric = 0.5 * (ntk + np.swapaxes(ntk, -1, -2))
    values = np.linalg.eigvalsh(symmetric)[..., ::-1]
    return values[..., :count]


def _mean_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the first axis (seeds) and its standard error (NaN for one seed)."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    count = values.shape[0]
    if count < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, values.std(axis=0, ddof=1) / math.sqrt(count)


def limit_columns(arrays: Mapping[str, np.ndarray], y_train: np.ndarray,
                  num_eigenvalues: int) -> dict[str, np.ndarray]:
    """The limit's columns of one point (each (T,)) from its result-file arrays."""
    out: dict[str, np.ndarray] = {}
    for key in ("loss_train", "loss_test", "accuracy_train", "accuracy_test"):
        for name in (key, f"{key}_stderr"):
            if name in arrays:
                out[name] = np.asarray(arrays[name], dtype=np.float64)
    if "sharpness" in arrays:
        out["sharpness"] = np.asarray(arrays["sharpness"], dtype=np.float64)
        if "sharpness_stderr" in arrays:
            out["sharpness_stderr"] = np.asarray(arrays["sharpness_stderr"], dtype=np.float64)
    ntk = np.asarray(arrays["ntk"]) if "ntk" in arrays else None
    y = np.asarray(y_train, dtype=np.float64)
    if ntk is not None and ntk.ndim == 3 and y.ndim == 1 and ntk.shape[-1] == y.shape[0]:
        out["alignment"] = kernel_alignment(ntk, y)
        values = top_eigenvalues(ntk, num_eigenvalues)
        for k in range(values.shape[-1]):
            out[f"ntk_eig{k + 1}"] = values[:, k]
    return out


def sampler_columns(samples: Mapping[str, np.ndarray], widths: Sequence[int],
                    y_train: np.ndarray, limit_f: np.ndarray | None,
                    diverged: Mapping[int, str]) -> dict[str, np.ndarray]:
    """Per-width ensemble columns (each (T,)) from a point's samples.npz arrays."""
    out: dict[str, np.ndarray] = {}
    num_times = len(np.asarray(samples["t"])) if "t" in samples else None
    y = np.asarray(y_train, dtype=np.float64)
    for width in widths:
        prefix = f"N{width}_"
        if f"{prefix}f_train" not in samples:
            if num_times is not None:
                out[f"{prefix}diverged"] = np.full(num_times, width in diverged)
            continue
        f = np.asarray(samples[f"{prefix}f_train"], dtype=np.float64)  # (S, T, P)
        # members that diverged (a discrete rule past its stability edge) are left out of the
        # statistics; the width counts as diverged when at most half of its members survive
        steps = np.asarray(samples.get(f"{prefix}diverged_step", np.full(f.shape[0], -1)))
        keep = steps < 0
        fraction = 1.0 - keep.mean()
        out[f"{prefix}diverged"] = np.full(f.shape[1], fraction >= 0.5)
        out[f"{prefix}diverged_fraction"] = np.full(f.shape[1], fraction)
        if not keep.any():
            continue
        f = f[keep]
        per_seed: dict[str, np.ndarray] = {}
        for key in ("loss_train", "loss_test", "sharpness", "hessian_sharpness"):
            if prefix + key in samples:
                per_seed[key] = np.asarray(samples[prefix + key], dtype=np.float64)[keep]
        ntk = samples.get(f"{prefix}ntk")
        ntk = None if ntk is None else np.asarray(ntk)[keep]
        if ntk is not None and np.ndim(ntk) == 4 and y.ndim == 1:
            per_seed["alignment"] = kernel_alignment(ntk, y)
            per_seed["ntk_eig1"] = top_eigenvalues(ntk, 1)[..., 0]
        if limit_f is not None and np.shape(limit_f) == f.shape[1:]:
            per_seed["f_dev"] = np.mean((f - np.asarray(limit_f)[None]) ** 2, axis=-1)
        for key in _SAMPLER_QUANTITIES:
            if key in per_seed:
                mean, stderr = _mean_stderr(per_seed[key])
                out[prefix + key] = mean
                out[prefix + key + "_stderr"] = stderr
    return out


def build_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Columns from rows (dicts): the union of their keys in first-seen order; a missing float
    is NaN, a missing bool False, a missing string empty."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    table: dict[str, np.ndarray] = {}
    for key in columns:
        present = [row[key] for row in rows if key in row]
        sample = present[0]
        if isinstance(sample, (bool, np.bool_)):
            table[key] = np.array([bool(row.get(key, False)) for row in rows])
        elif isinstance(sample, (int, np.integer)) and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present) \
                and len(present) == len(rows):
            table[key] = np.array([int(row[key]) for row in rows], dtype=np.int64)
        elif isinstance(sample, (int, float, np.integer, np.floating)):
            table[key] = np.array([float(row.get(key, np.nan)) for row in rows], dtype=np.float64)
        else:
            table[key] = np.array([_text(row.get(key, "")) for row in rows], dtype=np.str_)
    return table


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def table_csv(table: Mapping[str, np.ndarray]) -> str:
    """The table as CSV text (floats with 17 significant digits, bools as 0/1)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = list(table)
    writer.writerow(keys)
    length = len(next(iter(table.values()))) if table else 0
    for index in range(length):
        row = []
        for key in keys:
            value = table[key][index]
            if isinstance(value, (bool, np.bool_)):
                row.append(int(value))
            elif isinstance(value, (float, np.floating)):
                row.append("nan" if not np.isfinite(value) and np.isnan(value) else repr(float(value)))
            else:
                row.append(value.item() if isinstance(value, np.generic) else value)
        writer.writerow(row)
    return buffer.getvalue()


def load_summary(folder: str | Path) -> dict[str, np.ndarray]:
    """The summary table of a sweep folder (its ``summary.npz``), column by column."""
    from .._errors import InputError

    path = Path(folder) / SUMMARY_NPZ
    if not path.is_file():
        raise InputError(f"{folder}: no {SUMMARY_NPZ} (is it the --out folder of dmft sweep?)")
    try:
        with np.load(path, allow_pickle=False) as content:
            return {key: content[key] for key in content.files}
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the sweep summary ({error})") from None
