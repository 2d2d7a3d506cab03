"""The architecture spec: the single input of every layer of `dmft`.

A `Spec` bundles an `Architecture` (what network), a `Data` set (which inputs and targets) and
`Training` settings (when results are saved). All three are immutable and validated on
construction, so that everything downstream can trust them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .._errors import InputError

Parameterization = Literal["ntk", "mup"]
PARAMETERIZATIONS: tuple[str, ...] = ("ntk", "mup")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _finite_number(key: str, value: Any) -> float:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{key} must be a number, got {value!r}",
    )
    value = float(value)
    _require(math.isfinite(value), f"{key} must be finite, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An MLP with `hidden_layers` hidden layers of activation `activation` (conventions §1).

    - ``parameterization="ntk"``: h^{l+1} = σ_w W^l φ(h^l)/√N + σ_b b^l (the lazy limit).
    - ``parameterization="mup"``: h^{l+1} = W^l φ(h^l)/√N, f = w^L·φ(h^L)/(γ0 N) (richness γ0).

    `activation` is a known name (``dmft.activations.known_activations()``) or a SymPy
    expression in ``x`` such as ``"x*tanh(x)"``.

    ``residual_scale = α`` makes the hidden-to-hidden layers residual blocks with depth-μP branch
    scale α/√L: h^{l+1} = h^l + (α/√L)·(σ_w W^l φ(h^l)/√N + σ_b b^l), l = 1..L-1 (the first
    layer and the readout are as above).
    """

    hidden_layers: int
    activation: str = "relu"
    parameterization: Parameterization = "ntk"
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    gamma0: float = 1.0
    residual_scale: float | None = None

    def __post_init__(self):
        L = self.hidden_layers
        _require(
            isinstance(L, int) and not isinstance(L, bool) and L >= 1,
            f"architecture.hidden_layers must be an integer >= 1, got {L!r}",
        )
        _require(
            isinstance(self.activation, str) and self.activation.strip() != "",
            f"architecture.activation must be a non-empty string, got {self.activation!r}",
        )
        _require(
            self.parameterization in PARAMETERIZATIONS,
            f"architecture.parameterization must be one of {PARAMETERIZATIONS}, "
            f"got {self.parameterization!r}",
        )
        for key in ("sigma_w", "sigma_b", "gamma0"):
            object.__setattr__(self, key, _finite_number(f"architecture.{key}", getattr(self, key)))
        _require(self.sigma_w > 0, f"architecture.sigma_w must be > 0, got {self.sigma_w!r}")
        _require(self.sigma_b >= 0, f"architecture.sigma_b must be >= 0, got {self.sigma_b!r}")
        _require(self.gamma0 > 0, f"architecture.gamma0 must be > 0, got {self.gamma0!r}")
        if self.residual_scale is not None:
            alpha = _finite_number("architecture.residual_scale", self.residual_scale)
            _require(alpha > 0, f"architecture.residual_scale must be > 0, got {alpha!r}")
            object.__setattr__(self, "residual_scale", alpha)
        if self.parameterization == "mup":
            _require(
                self.sigma_w == 1.0 and self.sigma_b == 0.0,
                "architecture.sigma_w / sigma_b apply to parameterization = \"ntk\" only; "
                "a \"mup\" network has unit weights and no bias (conventions §1b)",
            )

    @property
    def depth(self) -> int:
        """Number of dense layers, L + 1."""
        return self.hidden_layers + 1


def _as_float_array(key: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{key} is not a numeric array: {error}") from None
    _require(np.all(np.isfinite(array)), f"{key} contains non-finite values (NaN or inf)")
    return array


def _targets(key: str, value: Any, num_points: int) -> np.ndarray:
    y = _as_float_array(key, value)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    _require(y.ndim == 1, f"{key} must have shape (P,) or (P, 1), got {y.shape}")
    _require(
        y.shape[0] == num_points,
        f"{key} has {y.shape[0]} targets but the inputs have {num_points} points",
    )
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
    """Training inputs ``x_train`` (P, D) and targets ``y_train`` (P,), optional test set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __post_init__(self):
        x = _as_float_array("data.x_train", self.x_train)
        _require(x.ndim == 2, f"data.x_train must have shape (P, D), got {x.shape}")
        _require(x.shape[0] >= 1 and x.shape[1] >= 1, f"data.x_train is empty: shape {x.shape}")
        object.__setattr__(self, "x_train", x)
        object.__setattr__(self, "y_train", _targets("data.y_train", self.y_train, x.shape[0]))
        if self.x_test is None:
            _require(self.y_test is None, "data.y_test is given but data.x_test is not")
            return
        x_test = _as_float_array("data.x_test", self.x_test)
        _require(
            x_test.ndim == 2 and x_test.shape[1] == x.shape[1],
            f"data.x_test must have shape (P_test, {x.shape[1]}), got {x_test.shape}",
        )
        object.__setattr__(self, "x_test", x_test)
        if self.y_test is not None:
            y_test = _targets("data.y_test", self.y_test, x_test.shape[0])
            object.__setattr__(self, "y_test", y_test)

    @property
    def num_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def num_test(self) -> int:
        return 0 if self.x_test is None else self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]


@dataclasses.dataclass(frozen=True)
class Training:
    """Gradient-flow times at which results are saved (conventions §2): non-negative, increasing."""

    times: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0)

    def __post_init__(self):
        times = self.times
        _require(
            isinstance(times, Sequence) and not isinstance(times, str) and len(times) >= 1,
            f"training.times must be a non-empty list of numbers, got {times!r}",
        )
        times = tuple(_finite_number("training.times", t) for t in times)
        _require(all(t >= 0 for t in times), f"training.times must be >= 0, got {list(times)}")
        _require(
            all(b > a for a, b in zip(times, times[1:])),
            f"training.times must be strictly increasing, got {list(times)}",
        )
        object.__setattr__(self, "times", times)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """Everything a solve needs: architecture, data, training times and method options.

    ``solver`` and ``sampler`` hold the raw ``[solver]`` / ``[sampler]`` tables of a spec file;
    each method validates the keys it understands (see ``dmft.solvers`` and ``dmft.sampler``).
    """

    architecture: Architecture
    data: Data
    training: Training = Training()
    solver: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sampler: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "solver", _frozen_mapping(self.solver))
        object.__setattr__(self, "sampler", _frozen_mapping(self.sampler))

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed, e.g. ``spec.replace(architecture=...)``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (arrays summarised by shape) for result metadata."""
        data = self.data
        shapes = {
            "x_train": list(data.x_train.shape),
            "y_train": list(data.y_train.shape),
        }
        if data.x_test is not None:
            shapes["x_test"] = list(data.x_test.shape)
        if data.y_test is not None:
            shapes["y_test"] = list(data.y_test.shape)
        return {
            "architecture": dataclasses.asdict(self.architecture),
            "data": shapes,
            "training": {"times": list(self.training.times)},
            "solver": dict(self.solver),
            "sampler": dict(self.sampler),
            "source": self.source,
        }
