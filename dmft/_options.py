"""Validation of option tables (a spec's ``[solver]`` and ``[sampler]`` tables): one implementation.

Every check returns the normalised value or raises a one-line `InputError` that names the key as
``<section>.<key>`` (``section`` is "solver" or "sampler"), e.g.

    check_tolerance("rtol", 0.0)               # InputError: solver.rtol must be > 0, got 0.0
    options_from_table(KernelODE, {"rtl": 1})  # InputError: unknown key solver.rtl for method ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._errors import InputError

#: Smallest tolerance an ODE or fixed-point solve can honour in float64 (a few ulps of O(1)).
MIN_TOLERANCE = 1e-14


def _is_real(value: Any) -> bool:
    """A finite real number (Python or NumPy), not a bool."""
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer,
                                                                          np.floating))
            and math.isfinite(value))


def options_from_table(cls: type, table: Mapping[str, Any], method_name: str,
                       section: str = "solver", ignore: tuple[str, ...] = ("method",)):
    """``cls(**table)`` for a dataclass `cls`, with a one-line InputError naming
    ``<section>.<key>`` for every key that is not one of its fields. Keys in `ignore` (the
    dispatcher's ``method``) are dropped first."""
    table = {key: value for key, value in dict(table).items() if key not in ignore}
    known = sorted(field.name for field in dataclasses.fields(cls))
    unknown = [key for key in table if key not in known]
    if unknown:
        raise InputError(f"unknown key {section}.{unknown[0]} for method {method_name!r} "
                         f"(known: {known})")
    return cls(**table)


def check_tolerance(key: str, value: Any, section: str = "solver") -> float:
    """A relative/absolute tolerance or cutoff: a number in [MIN_TOLERANCE, 1)."""
    if not _is_real(value):
        raise InputError(f"{section}.{key} must be a number, got {value!r}")
    if value <= 0:
        raise InputError(f"{section}.{key} must be > 0, got {value!r}")
    if value < MIN_TOLERANCE:
        raise InputError(f"{section}.{key} = {value!r} is below what float64 can reach "
                         f"(>= {MIN_TOLERANCE:g})")
    if value >= 1:
        raise InputError(f"{section}.{key} must be < 1, got {value!r}")
    return float(value)


def check_int(key: str, value: Any, minimum: int, section: str = "solver") -> int:
    """An integer option >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise InputError(f"{section}.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(key: str, value: Any, section: str = "solver") -> float:
    """A finite number > 0."""
    if not _is_real(value) or value <= 0:
        raise InputError(f"{section}.{key} must be a finite number > 0, got {value!r}")
    return float(value)


def check_unit_interval(key: str, value: Any, section: str = "solver") -> float:
    """A number in (0, 1] (a mixing weight)."""
    if not _is_real(value) or not 0 < value <= 1:
        raise InputError(f"{section}.{key} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_bool(key: str, value: Any, section: str = "solver") -> bool:
    """true or false (a TOML boolean)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{section}.{key} must be true or false, got {value!r}")
    return bool(value)


def check_choice(key: str, value: Any, choices: tuple[str, ...], section: str = "solver") -> str:
    """One of the strings `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{section}.{key} must be one of {list(choices)}, got {value!r}")
    return value


__all__ = ["MIN_TOLERANCE", "check_bool", "check_choice", "check_int", "check_positive",
           "check_tolerance", "check_unit_interval", "options_from_table"]


def check_ode_options(options: Any, section: str = "solver") -> None:
    """Normalise and check the ``rtol``, ``atol`` (and ``max_steps``, when it has one) fields of
    a frozen adaptive-ODE method object in place."""
    for key in ("rtol", "atol"):
        object.__setattr__(options, key, check_tolerance(key, getattr(options, key), section))
    if hasattr(options, "max_steps"):
        object.__setattr__(options, "max_steps",
                           check_int("max_steps", options.max_steps, 1, section))


def check_training_rule(spec, method, what: str) -> None:
    """InputError unless `method` honours the spec's ``training.optimizer`` and ``training.loss``.

    A method object lists what it can do in class attributes ``optimizers`` (default
    ``("flow",)``), ``losses`` (default ``("mse",)``) and ``multi_output`` (default False: one
    output per point); `what` names it in the message (e.g.
    "solver.method = 'deep_linear'"). No solver silently trains by a rule other than the spec's.
    """
    outputs = spec.data.num_outputs
    if outputs > 1 and not getattr(method, "multi_output", False):
        raise InputError(f"data.y_train has {outputs} outputs per point, which {what} does not "
                         "solve yet (it takes one output, shape (P,))")
    training = spec.training
    for key, supported in (("optimizer", getattr(method, "optimizers", ("flow",))),
                           ("loss", getattr(method, "losses", ("mse",)))):
        value = getattr(training, key)
        if value not in supported:
            raise InputError(f"training.{key} = {value!r} is not supported by {what} "
                             f"(it supports {', '.join(map(repr, supported))})")
