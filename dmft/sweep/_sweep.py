"""`sweep`: the infinite-width limit (and optionally the sampler) over a grid of spec keys.

Layout of the output folder::

    DIR/points/000_gamma0=0.5/   result.npz, metadata.json, learning_curve.pdf/.png, ...
                                 (the files of ``dmft run``), samples.npz with widths
    DIR/summary.csv, summary.npz the tidy table (`dmft.sweep._summary`)
    DIR/metadata.json            the grid, the points and their status, provenance

Each point folder is written atomically (`dmft.io.atomic_output`) and carries a fingerprint of
its spec and sampler settings in its metadata; a point is finished when that metadata matches and
every file it lists exists. A rerun skips finished points, so an interrupted sweep loses only the
point in flight. A point whose training diverges (`SolveError`, e.g. gradient descent past
2/η0) is recorded as diverged — a metadata file with the message — and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, SolveError
from .._options import check_training_rule
from .._progress import progress_bar
from ..io import OutputError, atomic_output, provenance, write_json, write_npz
from ..spec import Spec
from ._grid import Point, fingerprint, grid_points
from ._lazy import SharedKernel, lazy_group_key, lazy_solution, shared_kernel
from ._summary import (
    SUMMARY_CSV,
    SUMMARY_NPZ,
    build_table,
    limit_columns,
    sampler_columns,
    table_csv,
)

POINTS_FOLDER = "points"
DEFAULT_EIGENVALUES = 4


@dataclasses.dataclass(frozen=True)
class PointRecord:
    """What happened at one point: ``status`` is "done" or "diverged"; ``skipped`` when an
    earlier run had finished it."""

    index: int
    values: dict[str, Any]
    folder: Path
    status: str
    skipped: bool
    message: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """The records of a sweep and its summary table (column name → array, one row per point and
    saved time)."""

    out: Path
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    points: tuple[PointRecord, ...]
    summary: dict[str, np.ndarray]

    @property
    def computed(self) -> int:
        return sum(not record.skipped for record in self.points)


# ---------------------------------------------------------------------------------------------
# Validation before any work


def _limit_method(spec: Spec):
    from ..solvers import lazy_method_from_table, method_from_spec

    if spec.architecture.parameterization == "ntk":
        return lazy_method_from_table(spec.solver)
    return method_from_spec(spec)


def _check_point(spec: Spec, widths, seeds, sampler_method) -> None:
    method = _limit_method(spec)
    check_training_rule(spec, method, f"the limit's method {type(method).__name__}")
    if widths:
        from ..sampler import method_for_spec, plan_batches

        sampler = sampler_method if sampler_method is not None else method_for_spec(spec)
        check_training_rule(spec, sampler, f"the sampler method {type(sampler).__name__}")
        plan_batches(spec, widths, seeds, sampler)


def _as_widths(widths) -> tuple[int, ...]:
    if widths is None:
        return ()
    if isinstance(widths, (int, np.integer)):
        widths = (widths,)
    widths = tuple(widths)
    if not widths or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool)
                             and w > 0 for w in widths):
        raise InputError(f"--widths must be positive integers, got {list(widths)!r}")
    return tuple(sorted({int(w) for w in widths}))


def _as_seed_count(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise InputError(f"--seeds must be a positive number of ensemble members, got {seeds!r}")
    return int(seeds)


# ---------------------------------------------------------------------------------------------
# Finished points


def _read_metadata(folder: Path) -> dict[str, Any] | None:
    try:
        content = json.loads((folder / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _finished(folder: Path, key: str) -> dict[str, Any] | None:
    """The point's metadata when it finished with fingerprint `key` and all its files exist."""
    meta = _read_metadata(folder)
    if meta is None:
        return None
    record = meta.get("sweep")
    if not isinstance(record, dict) or record.get("fingerprint") != key:
        return None
    if record.get("status") not in ("done", "diverged"):
        return None
    files = meta.get("files")
    if not isinstance(files, list) or not all(isinstance(n, str) and (folder / n).is_file()
                                              for n in files):
        return None
    for name in ("result.npz", "samples.npz"):
        if name in files:
            try:
                with np.load(folder / name, allow_pickle=False) as content:
                    content.files  # noqa: B018 - opening checks the zip directory
            except (OSError, ValueError):
                return None
    return meta


# ---------------------------------------------------------------------------------------------
# One point


def _activation_summary(spec: Spec) -> dict[str, Any]:
    from ..activations import get_activation

    activation = get_activation(spec.architecture.activation)
    return {"name": activation.name, "tier": activation.tier, "method": activation.method,
            "dual_error": activation.dual_error}


_PROVENANCE: dict[str | None, dict[str, Any]] = {}


def _provenance(spec_file: str | None) -> dict[str, Any]:
    """`dmft.io.provenance`, looked up once per spec file and process (versions, commit, devices
    do not change during a sweep), with this write's own creation time."""
    if spec_file not in _PROVENANCE:
        _PROVENANCE[spec_file] = provenance(spec_file)
    import datetime

    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {**_PROVENANCE[spec_file], "created": created}


def _write_point(folder: Path, files: Mapping[str, Mapping[str, np.ndarray]],
                 metadata: Mapping[str, Any], figures=None, spec_file: str | None = None) -> None:
    with atomic_output(folder) as staging:
        for name, arrays in files.items():
            write_npz(staging / name, arrays)
        if figures is not None:
            figures(staging)
        names = sorted({path.name for path in staging.iterdir()} | {"metadata.json"})
        write_json(staging / "metadata.json",
                   {**metadata, "files": names, "provenance": _provenance(spec_file)})


def _solve_limit(spec: Spec, kernels: dict, vectorize: bool):
    from ..solvers import solve

    key = lazy_group_key(spec) if vectorize else None
    if key is None:
        return solve(spec)
    if key not in kernels:
        kernels[key] = shared_kernel(spec)
    return lazy_solution(spec, kernels[key])


def _sample(spec: Spec, widths, seeds, method) -> tuple[dict[str, np.ndarray], dict[int, str],
                                                        dict[str, Any]]:
    """Each width on its own (a divergent width does not cost the others): the merged
    samples.npz arrays, the divergence messages per width and the sampler diagnostics."""
    from ..sampler import sample

    arrays: dict[str, np.ndarray] = {"t": np.asarray(spec.training.times)}
    diverged: dict[int, str] = {}
    diagnostics: dict[str, Any] = {}
    done = []
    for width in widths:
        try:
            samples = sample(spec, [width], seeds, method)
        except SolveError as error:
            diverged[width] = str(error)
            continue
        done.append(width)
        arrays.update({k: v for k, v in samples.arrays().items() if k not in ("widths",)})
        diagnostics[str(width)] = samples.diagnostics
    arrays["widths"] = np.asarray(done, dtype=np.int64)
    return arrays, diverged, diagnostics


def _remove_stale_staging(folder: Path) -> None:
    """Staging folders a killed run left in a point folder (SIGKILL skips the clean-up)."""
    import shutil

    from ..io import STAGING_PREFIX

    if folder.is_dir():
        for path in folder.glob(STAGING_PREFIX + "*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _run_point(point: Point, folder: Path, key: str, widths, seeds, sampler_method,
               point_figures: bool, kernels: dict, vectorize: bool) -> PointRecord:
    spec = point.spec
    _remove_stale_staging(folder)
    data = spec.data
    start = time.perf_counter()
    files: dict[str, dict[str, np.ndarray]] = {}
    status, message, solution, arrays = "done", None, None, None
    step = t_div = float("nan")  # where the limit diverged, when it names a step or time
    try:
        solution = _solve_limit(spec, kernels, vectorize)
        arrays = solution.arrays(data.y_train, data.y_test)
        files["result.npz"] = arrays
    except SolveError as error:
        status, message = "diverged", str(error)
        step = float("nan") if error.step is None else float(error.step)
        t_div = float("nan") if error.time is None else error.time
    wall_time = time.perf_counter() - start
    sampler_record: dict[str, Any] = {}
    if widths:
        sample_arrays, sample_diverged, diagnostics = _sample(spec, widths, seeds, sampler_method)
        files["samples.npz"] = sample_arrays
        sampler_record = {"widths": list(widths), "seeds": seeds, "diagnostics": diagnostics,
                          "diverged": {str(w): m for w, m in sample_diverged.items()}}
    metadata = {
        "command": "sweep",
        "spec": spec.to_dict(),
        "activation": _activation_summary(spec),
        "solver": solution.diagnostics if solution is not None else None,
        "wall_time_s": wall_time,
        "sweep": {"index": point.index, "point": point.assignment, "fingerprint": key,
                  "status": status, "message": message, "diverged_step": step,
                  "diverged_t": t_div},
        **({"sampler": sampler_record} if widths else {}),
    }

    def figures(staging: Path) -> None:
        from ..figures import plot_learning_curve, plot_ntk_evolution

        plot_learning_curve(arrays, staging / "learning_curve", spec=spec)
        if spec.architecture.parameterization == "mup":
            plot_ntk_evolution(solution, data.y_train, staging / "ntk_evolution", spec=spec)

    _write_point(folder, files, metadata, figures if (point_figures and arrays is not None)
                 else None, spec.source)
    return PointRecord(point.index, point.assignment, folder, status, False, message)


# ---------------------------------------------------------------------------------------------
# The summary


def _load(folder: Path, name: str) -> dict[str, np.ndarray] | None:
    path = folder / name
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as content:
        return {key: content[key] for key in content.files}


def _lazy_reference(spec: Spec, cache: dict) -> dict[str, np.ndarray] | None:
    """The γ0 → 0 losses of a μP point at its saved times (one kernel per group), or None."""
    if spec.architecture.parameterization != "mup":
        return None
    key = lazy_group_key(spec, lazy_reference=True)
    if key is None:
        return None
    if key not in cache:
        cache[key] = shared_kernel(spec)
    kernel: SharedKernel = cache[key]
    try:
        solution = lazy_solution(spec, kernel)
    except SolveError:
        return None
    return solution.losses(spec.data.y_train, spec.data.y_test)


def _point_rows(point: Point, record: PointRecord, widths, num_eigenvalues: int,
                cache: dict) -> list[dict[str, Any]]:
    spec = point.spec
    times = np.asarray(spec.training.times, dtype=np.float64)
    meta = _read_metadata(record.folder) or {}
    sweep_meta = meta.get("sweep", {})
    result = _load(record.folder, "result.npz")
    samples = _load(record.folder, "samples.npz")
    columns: dict[str, np.ndarray] = {}
    if result is not None:
        columns.update(limit_columns(result, spec.data.y_train, num_eigenvalues))
    lazy = _lazy_reference(spec, cache)
    if lazy is not None:
        columns.update({f"lazy_{k}": v for k, v in lazy.items()})
    if widths and samples is not None:
        diverged = {int(w): m for w, m in meta.get("sampler", {}).get("diverged", {}).items()}
        limit_f = None if result is None else result.get("f_train")
        columns.update(sampler_columns(samples, widths, spec.data.y_train, limit_f, diverged))
    steps = spec.training.steps
    rows = []
    for i, t in enumerate(times):
        row: dict[str, Any] = {"point": point.index}
        for key, value in point.values:
            row[key] = value
        row["diverged"] = record.status == "diverged"
        row["diverged_step"] = float(sweep_meta.get("diverged_step", np.nan) or np.nan) \
            if record.status == "diverged" else float("nan")
        row["diverged_t"] = float(sweep_meta.get("diverged_t", np.nan) or np.nan) \
            if record.status == "diverged" else float("nan")
        row["t"] = float(t)
        if steps is not None:
            row["step"] = int(steps[i])
        if record.status == "diverged":
            row["loss_train"] = float("nan")
        for name, values in columns.items():
            row[name] = values[i].item() if isinstance(values[i], np.generic) else values[i]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The public entry point


def sweep(
    spec: Spec | str | Path | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | Sequence[Any],
    out: str | Path,
    *,
    widths: int | Sequence[int] | None = None,
    seeds: int = 8,
    sampler_method=None,
    point_figures: bool = True,
    vectorize: bool = True,
    num_eigenvalues: int = DEFAULT_EIGENVALUES,
) -> SweepResult:
    """Solve the limit of `spec` (and sample finite widths) at every point of `grid`.

    Args:
        spec: a `Spec`, a spec file path or its tables (``{"architecture": {...}, ...}``).
        grid: ``{"architecture.gamma0": [0.5, 1, 2], ...}``, or ``"KEY=V1,V2"`` strings; the
            points are the product of the keys' values, in the given order. Besides the spec's
            keys: ``data.train_size`` and ``training.steps`` (see `dmft.sweep._grid`).
        out: the output folder (one subfolder per point, the summary, the metadata).
        widths: widths N to train with `dmft.sample` at every point (None: the limit only).
        seeds: ensemble members per width.
        sampler_method: the sampler's method object (default: each point's ``[sampler]`` table).
        point_figures: draw each point's ``dmft run`` figures.
        vectorize: share one kernel and eigendecomposition among lazy points (`dmft.sweep._lazy`);
            False solves every point with `dmft.solve`.
        num_eigenvalues: top NTK eigenvalues in the summary.

    Every point's spec is validated before any work (InputError naming the point). Finished
    points of an earlier run into `out` are skipped; divergent points are recorded, not raised.
    """
    from .._precision import require_float64

    require_float64("dmft.sweep")
    widths = _as_widths(widths)
    seeds = _as_seed_count(seeds)
    if isinstance(num_eigenvalues, bool) or not isinstance(num_eigenvalues, int) \
            or num_eigenvalues < 1:
        raise InputError(f"num_eigenvalues must be a positive integer, got {num_eigenvalues!r}")
    grid, points = grid_points(spec, grid)
    for point in points:
        try:
            _check_point(point.spec, widths, seeds, sampler_method)
        except InputError as error:
            shown = ", ".join(f"{k} = {v!r}" for k, v in point.values)
            raise InputError(f"sweep point {point.index} ({shown}): {error}") from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} is an existing file, not a folder")
    sampler_settings = {"widths": list(widths), "seeds": seeds,
                        "sampler_method": None if sampler_method is None
                        else [type(sampler_method).__name__, dataclasses.asdict(sampler_method)]}
    records: list[PointRecord] = []
    kernels: dict = {}
    _PROVENANCE.clear()  # a fresh look-up per sweep (a commit may have happened in between)
    bar = progress_bar(len(points), "sweep")
    try:
        for point in points:
            folder = out / POINTS_FOLDER / point.name
            key = fingerprint(point.spec, sampler_settings if widths else {})
            bar.set_postfix_str(", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.values))
            meta = _finished(folder, key)
            if meta is not None:
                sweep_meta = meta["sweep"]
                records.append(PointRecord(point.index, point.assignment, folder,
                                           sweep_meta["status"], True, sweep_meta.get("message")))
            else:
                records.append(_run_point(point, folder, key, widths, seeds, sampler_method,
                                          point_figures, kernels, vectorize))
            bar.update(1)
            bar.refresh()  # a point is coarse work: show every finished one, not tqdm's sample
    finally:
        bar.close()
    cache: dict = dict(kernels)
    rows = [row for point, record in zip(points, records)
            for row in _point_rows(point, record, widths, num_eigenvalues, cache)]
    summary = build_table(rows)
    _write_summary(out, grid, points, records, summary, spec, widths, seeds)
    return SweepResult(out, grid, tuple(records), summary)


def _write_summary(out: Path, grid, points, records, summary, spec, widths, seeds) -> None:
    source = points[0].spec.source if points else None
    metadata = {
        "command": "sweep",
        "grid": {key: list(values) for key, values in grid},
        "keys": [key for key, _ in grid],
        "base_spec": source if source else None,
        "widths": list(widths),
        "seeds": seeds if widths else None,
        "points": [{"index": r.index, "values": r.values,
                    "folder": str(r.folder.relative_to(out)), "status": r.status,
                    "skipped": r.skipped, "message": r.message} for r in records],
        "summary_columns": list(summary),
    }
    with atomic_output(out) as staging:
        write_npz(staging / SUMMARY_NPZ, summary)
        (staging / SUMMARY_CSV).write_text(table_csv(summary))
        names = sorted({path.name for path in staging.iterdir()} | {"metadata.json"})
        write_json(staging / "metadata.json",
                   {**metadata, "files": names, "provenance": provenance(source)})


def read_sweep_metadata(folder: str | Path) -> dict[str, Any]:
    """The sweep's metadata.json (grid, keys, points); InputError when `folder` holds none."""
    meta = _read_metadata(Path(folder))
    if meta is None or meta.get("command") != "sweep" or "grid" not in meta:
        raise InputError(f"{folder}: no sweep metadata.json (is it the --out folder of dmft sweep?)")
    return meta
