"""Reading a spec from a TOML file (docs/conventions.md §4)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ._spec import Architecture, Data, Spec, Training

_TABLES = {
    "architecture": {"hidden_layers", "activation", "parameterization", "sigma_w", "sigma_b", "gamma0",
                     "residual_scale", "residual_exponent"},
    "data": {"x_train", "y_train", "x_test", "y_test", "dataset", "classes", "train_size",
             "test_size", "seed", "standardize", "targets"},
    "training": {"times", "optimizer", "learning_rate", "batch_size", "seed", "loss",
                 "num_classes"},
    "solver": None,  # free-form: validated by the solver that reads it
    "sampler": None,  # free-form: validated by the sampler
}

# Keys that name other architectures: refused with "not supported yet" instead of "unknown key".
# The listed values are what dmft does; giving one of them explicitly is accepted.
_NOT_YET = {
    "architecture": {
        "type": (("mlp",), "dmft handles fully connected networks (MLPs) only"),
    },
}


def _load_array(key: str, value: Any, base: Path) -> np.ndarray:
    """An array given inline (a TOML list) or as a path relative to the spec file."""
    if value is None:
        raise InputError(f"data.{key} is empty (None): give an inline list or a file path, or "
                         "omit the key")
    if not isinstance(value, str):
        return value
    try:
        path = (base / value).resolve()
        found = path.is_file()
    except (ValueError, OSError) as error:
        raise InputError(f"data.{key}: not a usable file path ({error}): "
                         f"{value[:60]!r}{'...' if len(value) > 60 else ''}") from None
    if not found:
        raise InputError(f"data.{key}: file not found: {path}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix in (".txt", ".csv"):
            return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except (ValueError, OSError) as error:
        raise InputError(f"data.{key}: cannot read {path}: {error}") from None
    raise InputError(f"data.{key}: unsupported file type {path.suffix!r} (use .npy, .csv or .txt)")


#: The [data] keys of arrays, and those of a named data set (`dmft.data.load_dataset`).
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
_DATASET_KEYS = ("classes", "train_size", "test_size", "seed", "standardize", "targets")


def data_from_table(table: dict[str, Any], base: Path | str = ".", loss: Any = "mse") -> Data:
    """The `Data` of a spec's ``[data]`` table: arrays (inline or files relative to `base`) or a
    named data set (``dataset = "digits"``, read by `dmft.data.load_dataset`). `loss` is the
    raw ``training.loss``: with "cross_entropy" a data set's targets default to "labels"."""
    base = Path(base)
    if "dataset" in table:
        for key in _ARRAY_KEYS:
            if key in table:
                raise InputError(f"data.dataset and data.{key} are mutually exclusive: a data set "
                                 "brings its own inputs and targets")
        if "train_size" not in table:
            raise InputError("data.dataset needs data.train_size (the number P of training "
                             "points)")
        from ..data import load_dataset

        options = {key: table[key] for key in _DATASET_KEYS if key in table}
        if loss == "cross_entropy":
            options.setdefault("targets", "labels")
        return load_dataset(table["dataset"], **options)
    for key in _DATASET_KEYS:
        if key in table:
            raise InputError(f"data.{key} applies to a named data set (data.dataset = "
                             '"digits" or "mnist1d") only')
    for key in ("x_train", "y_train"):
        if key not in table:
            raise InputError(f"spec is missing data.{key} (or data.dataset)")
    return Data(**{key: _load_array(key, value, base) for key, value in table.items()})


def architecture_from_table(table: dict[str, Any]) -> Architecture:
    """The `Architecture` of a spec's ``[architecture]`` table (keys checked by `check_table_keys`)."""
    if "hidden_layers" not in table:
        raise InputError("spec is missing architecture.hidden_layers")
    return Architecture(**_supported_only("architecture", table))


def read_spec_table(path: str | Path) -> dict[str, Any]:
    """The parsed TOML tables of a spec file; InputError naming the file when it is missing or
    not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"spec file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid TOML: {error}") from None


def check_table_keys(table: dict[str, Any]) -> None:
    """InputError for unknown tables or keys of a spec (free-form tables excepted)."""
    for name, value in table.items():
        if name not in _TABLES:
            raise InputError(f"unknown table [{name}] in spec (known: {', '.join(_TABLES)})")
        if not isinstance(value, dict):
            raise InputError(f"[{name}] must be a table")
        allowed = _TABLES[name]
        if allowed is not None:
            for key in value:
                if key in _NOT_YET.get(name, {}):
                    _check_not_yet(name, key, value[key])
                elif key not in allowed:
                    raise InputError(
                        f"unknown key {name}.{key} in spec (known: {', '.join(sorted(allowed))})"
                    )


def _check_not_yet(name: str, key: str, value: Any) -> None:
    """InputError "not supported yet" unless `value` is what dmft does today."""
    accepted, reason = _NOT_YET[name][key]
    if accepted and isinstance(value, str) and value in accepted:
        return
    shown = f"{value!r}" if isinstance(value, (str, int, float, bool)) else "a value"
    allowed = (f"; the only accepted value is {' or '.join(map(repr, accepted))}"
               if accepted else "")
    raise InputError(f"{name}.{key} = {shown} is not supported yet ({reason}{allowed})")


def _supported_only(name: str, table: dict[str, Any]) -> dict[str, Any]:
    """`table` without the accepted not-yet keys (explicit defaults such as loss = "mse")."""
    return {key: value for key, value in table.items() if key not in _NOT_YET.get(name, {})}


def spec_from_dict(table: dict[str, Any], base: Path | str = ".", source: str | None = None) -> Spec:
    """Build a `Spec` from the parsed TOML tables; data paths are relative to `base`."""
    if not isinstance(table, dict):
        raise InputError(f"a spec must be a table of tables ([architecture], [data], ...), got "
                         f"{type(table).__name__}")
    base = Path(base)
    check_table_keys(table)
    for name in ("architecture", "data"):
        if name not in table:
            raise InputError(f"spec is missing the [{name}] table")
    architecture = architecture_from_table(table["architecture"])
    training_table = table.get("training", {})
    data = data_from_table(table["data"], base,
                           training_table.get("loss", "mse") if isinstance(training_table, dict)
                           else "mse")
    training = Training(**_supported_only("training", table.get("training", {})))
    return Spec(
        architecture=architecture,
        data=data,
        training=training,
        solver=table.get("solver", {}),
        sampler=table.get("sampler", {}),
        source=source,
    )


def load_spec(path: str | Path) -> Spec:
    """Read a spec file; every problem raises `InputError` naming the file or key."""
    path = Path(path)
    table = read_spec_table(path)
    try:
        return spec_from_dict(table, base=path.parent, source=str(path))
    except TypeError as error:  # e.g. a wrong argument type caught by a dataclass
        raise InputError(f"{path}: {error}") from None
