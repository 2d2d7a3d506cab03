"""The grid of a sweep: ``--set KEY=V1,V2,...`` assignments, their product, and one validated
`Spec` per point.

Keys are dotted spec keys, ``table.key`` (docs/conventions.md §4), plus two keys that exist only
in sweeps:

- ``data.train_size = n``: the first n training points of the spec's data (test set unchanged);
- ``training.steps = k`` (or a list of step indices): save times k·η0 for k = 0..k (or the
  listed k), so that a learning-rate sweep compares the same steps at every η0
  (docs/conventions.md §2a).

Values are TOML scalars (``0.5``, ``2``, ``"gd"``, ``true``) or TOML arrays (``[0, 1, 2]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ..spec import Spec, check_table_keys, read_spec_table, spec_from_dict

#: Keys a sweep understands beyond the spec file's own (see the module docstring).
SWEEP_ONLY_KEYS = frozenset({"data.train_size", "training.steps"})
#: Most points in one sweep: a typo such as a missing comma in a range can make a grid explode.
MAX_POINTS = 100_000


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its index, its key values (in grid order) and its validated spec."""

    index: int
    values: tuple[tuple[str, Any], ...]
    spec: Spec

    @property
    def assignment(self) -> dict[str, Any]:
        return dict(self.values)

    @property
    def name(self) -> str:
        """The point's folder name, e.g. ``003_gamma0=2`` (index first, so folders sort)."""
        parts = [f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in self.values]
        text = "_".join(parts) if parts else "point"
        safe = "".join(c if c.isalnum() or c in "._=+-" else "-" for c in text)[:80]
        return f"{self.index:03d}_{safe}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside quotes and brackets (so ``[0, 1],[0, 2]`` is two values)."""
    parts, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_value(key: str, text: str) -> Any:
    """One TOML value (``0.5``, ``2``, ``"gd"``, ``true``, ``[0, 1]``); a bare word that is not
    TOML (``tanh``) is taken as a string. InputError naming `key` otherwise."""
    text = text.strip()
    if text == "":
        raise InputError(f"--set {key}: empty value (give V1,V2,... without empty entries)")
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    if text.replace("_", "").replace("-", "").isalnum() and not text[0].isdigit():
        return text  # a bare name such as tanh or monte_carlo
    raise InputError(f"--set {key}: cannot parse value {text!r} as a TOML value "
                     "(numbers, true/false, \"strings\" or [arrays])")


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """``"architecture.gamma0=0.5,1,2"`` → ``("architecture.gamma0", [0.5, 1, 2])``."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected KEY=V1,V2,... (e.g. architecture.gamma0=0.5,1)")
    key, values = text.split("=", 1)
    key = key.strip()
    check_key(key)
    parsed = [parse_value(key, value) for value in _split_top_level(values)]
    return key, parsed


def check_key(key: str) -> None:
    """InputError unless `key` is ``table.key`` of a known table and key (or a sweep-only key)."""
    if key.count(".") != 1 or not all(key.split(".")):
        raise InputError(f"--set {key!r}: keys are dotted spec keys table.key, "
                         "e.g. architecture.gamma0 or training.learning_rate")
    if key in SWEEP_ONLY_KEYS:
        return
    table, name = key.split(".")
    check_table_keys({table: {name: None}})


def as_grid(grid: Mapping[str, Sequence[Any]] | Sequence[tuple[str, Sequence[Any]]] | Sequence[str]
            ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """The grid as ``((key, values), ...)`` from a mapping, pairs or ``KEY=V1,V2`` strings."""
    if isinstance(grid, Mapping):
        items = list(grid.items())
    else:
        items = [parse_assignment(item) if isinstance(item, str) else tuple(item) for item in grid]
    out, seen = [], set()
    for item in items:
        if len(item) != 2:
            raise InputError(f"sweep grid entries must be (key, values) pairs, got {item!r}")
        key, values = item
        if not isinstance(key, str):
            raise InputError(f"sweep grid keys must be strings, got {key!r}")
        check_key(key)
        if key in seen:
            raise InputError(f"--set {key} is given twice; list all its values in one --set")
        seen.add(key)
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            values = [values]
        values = tuple(v.item() if isinstance(v, np.generic) else v for v in values)
        if not values:
            raise InputError(f"--set {key}: no values")
        out.append((key, values))
    if not out:
        raise InputError("a sweep needs at least one --set KEY=V1,V2,...")
    count = math.prod(len(values) for _, values in out)
    if count > MAX_POINTS:
        raise InputError(f"the grid has {count} points, more than {MAX_POINTS}; split the sweep")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# The base spec as a table of tables, and one spec per point.


def base_table(spec: Spec | str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], Path, str | None]:
    """The spec as TOML tables (arrays inline), the folder data paths are relative to, and its
    source file."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        return read_spec_table(path), path.parent, str(path)
    if isinstance(spec, Mapping):
        return _copy_table(spec), Path("."), None
    if not isinstance(spec, Spec):
        raise InputError(f"sweep: spec must be a dmft.Spec, a spec file path or a table of "
                         f"tables, got {type(spec).__name__}")
    arch = {k: v for k, v in dataclasses.asdict(spec.architecture).items() if v is not None}
    data = {"x_train": spec.data.x_train, "y_train": spec.data.y_train}
    if spec.data.x_test is not None:
        data["x_test"] = spec.data.x_test
    if spec.data.y_test is not None:
        data["y_test"] = spec.data.y_test
    table = {"architecture": arch, "data": data, "training": spec.training.to_dict(),
             "solver": dict(spec.solver), "sampler": dict(spec.sampler)}
    base = Path(spec.source).parent if spec.source else Path(".")
    return table, base, spec.source


def _copy_table(table: Mapping[str, Any]) -> dict[str, Any]:
    return {name: dict(value) if isinstance(value, Mapping) else value
            for name, value in table.items()}


def point_spec(table: Mapping[str, Any], base: Path, source: str | None,
               assignment: Mapping[str, Any]) -> Spec:
    """The spec of one point: the base tables with `assignment` applied, validated."""
    table = _copy_table(table)
    train_size = steps = None
    for key, value in assignment.items():
        if key == "data.train_size":
            train_size = value
            continue
        if key == "training.steps":
            steps = value
            continue
        name, field = key.split(".")
        table.setdefault(name, {})[field] = value
    if steps is not None:
        training = table.setdefault("training", {})
        rate = training.get("learning_rate")
        if training.get("optimizer", "flow") == "flow" or rate is None:
            raise InputError("training.steps needs training.optimizer = \"gd\" or \"sgd\" and "
                             "training.learning_rate (save times k·η0)")
        indices = _step_indices(steps)
        if not isinstance(rate, (int, float)) or isinstance(rate, bool):
            raise InputError(f"training.learning_rate must be a real number, got {rate!r}")
        training["times"] = [k * float(rate) for k in indices]
    spec = spec_from_dict(table, base=base, source=source)
    if train_size is not None:
        spec = _truncated(spec, train_size)
    return spec


def _step_indices(steps: Any) -> list[int]:
    if isinstance(steps, bool) or not (isinstance(steps, int) or (
            isinstance(steps, list) and steps and all(isinstance(k, int) and not isinstance(k, bool)
                                                      for k in steps))):
        raise InputError(f"training.steps must be a step count k >= 1 or a list of step indices, "
                         f"got {steps!r}")
    if isinstance(steps, int):
        if not 1 <= steps <= 10**6:
            raise InputError(f"training.steps must be in 1..1000000, got {steps}")
        return list(range(steps + 1))
    if min(steps) < 0 or any(b <= a for a, b in itertools.pairwise(steps)):
        raise InputError(f"training.steps must be increasing indices >= 0, got {steps!r}")
    return list(steps)


def _truncated(spec: Spec, size: Any) -> Spec:
    from ..spec import Data

    num = spec.data.num_train
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= num:
        raise InputError(f"data.train_size must be an integer in 1..{num} (the spec's training "
                         f"points), got {size!r}")
    data = spec.data
    return spec.replace(data=Data(data.x_train[:size], data.y_train[:size], data.x_test,
                                  data.y_test))


def grid_points(spec, grid) -> tuple[tuple[tuple[str, tuple[Any, ...]], ...], list[Point]]:
    """The normalised grid and every point's validated spec (InputError naming the first bad
    point, before any work)."""
    grid = as_grid(grid)
    table, base, source = base_table(spec)
    if not isinstance(table, dict):
        raise InputError("a spec must be a table of tables ([architecture], [data], ...)")
    keys = [key for key, _ in grid]
    points = []
    for index, combo in enumerate(itertools.product(*(values for _, values in grid))):
        assignment = dict(zip(keys, combo))
        try:
            point = point_spec(table, base, source, assignment)
        except InputError as error:
            shown = ", ".join(f"{k} = {_short(v)}" for k, v in assignment.items())
            raise InputError(f"sweep point {index} ({shown}): {error}") from None
        except TypeError as error:
            raise InputError(f"sweep point {index}: {error}") from None
        points.append(Point(index, tuple(assignment.items()), point))
    return grid, points


def fingerprint(spec: Spec, extra: Mapping[str, Any]) -> str:
    """A hash of everything that decides a point's result: the spec (data values included) and
    `extra` (widths, seeds, sampler settings)."""
    digest = hashlib.sha256()
    description = spec.to_dict()
    description.pop("source", None)
    digest.update(json.dumps({"spec": description, **extra}, sort_keys=True,
                             default=repr).encode())
    for array in (spec.data.x_train, spec.data.y_train, spec.data.x_test, spec.data.y_test):
        digest.update(b"|" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]
