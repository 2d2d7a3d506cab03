"""The architecture spec: the single input of every layer of `dmft`.

A `Spec` bundles an `Architecture` (what network), a `Data` set (which inputs and targets) and
`Training` settings (when results are saved). All three are immutable and validated on
construction, so that everything downstream can trust them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .._errors import InputError

Parameterization = Literal["ntk", "mup"]
PARAMETERIZATIONS: tuple[str, ...] = ("ntk", "mup")

#: Upper bound on ``hidden_layers``. Any valid depth up to it is a valid spec (the kernels march
#: over layers in a scanned loop); beyond it no part of dmft can give a result — ``dmft kernels``
#: alone would write 2(L + 1) per-layer matrices, a finite-width network holds L·N² weights, and a
#: deep network's kernels have long since converged to their depth fixed point — so a larger
#: integer is a typo (1e9, an extra zero) rather than a request, and is refused up front.
MAX_HIDDEN_LAYERS = 10**6

_SPEC_USAGE = (
    "Spec(architecture: Architecture, data: Data, training: Training = Training(), "
    "solver: Mapping = {}, sampler: Mapping = {}, source: str | None = None)"
)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _show(value: Any, limit: int = 60) -> str:
    """A short one-line description of a user value for error messages: repr and type."""
    try:
        text = repr(value)
    except Exception:  # a user object whose repr fails: still describe it
        text = "<unprintable>"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _unwrap_scalar(value: Any) -> Any:
    """A 0-d NumPy or JAX array becomes its NumPy scalar; anything else is returned as is."""
    if isinstance(value, (bool, int, float, str, bytes)) or value is None:
        return value
    if getattr(value, "shape", None) == () and hasattr(value, "__array__"):
        try:
            return np.asarray(value)[()]
        except Exception:  # an array-like that cannot be read: leave it to the type check
            return value
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _finite_number(key: str, value: Any) -> float:
    """A finite real number (Python, NumPy or 0-d array; not bool, not complex) as a float."""
    value = _unwrap_scalar(value)
    _require(
        isinstance(value, numbers.Real) and not _is_bool(value),
        f"{key} must be a real number, got {_show(value)}",
    )
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        number = math.inf
    _require(math.isfinite(number), f"{key} must be finite, got {_show(value)}")
    return number


def _integer(key: str, value: Any, minimum: int, maximum: int) -> int:
    """An integer (Python, NumPy or 0-d array; not bool, not float) in [minimum, maximum]."""
    value = _unwrap_scalar(value)
    _require(
        isinstance(value, numbers.Integral) and not _is_bool(value),
        f"{key} must be an integer >= {minimum}, got {_show(value)}",
    )
    number = int(value)
    _require(number >= minimum, f"{key} must be an integer >= {minimum}, got {number}")
    _require(number <= maximum, f"{key} = {number} is absurd: at most {maximum} is accepted")
    return number


def _string(key: str, value: Any) -> str:
    _require(isinstance(value, str), f"{key} must be a string, got {_show(value)}")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An MLP with `hidden_layers` hidden layers of activation `activation` (docs/conventions.md §1).

    - ``parameterization="ntk"``: h^{l+1} = σ_w W^l φ(h^l)/√N + σ_b b^l (the lazy limit).
    - ``parameterization="mup"``: h^{l+1} = W^l φ(h^l)/√N, f = w^L·φ(h^L)/(γ0 N) (richness γ0).

    `activation` is a known name (``dmft.activations.known_activations()``) or a SymPy
    expression in ``x`` such as ``"x*tanh(x)"``.

    ``residual_scale = α`` makes the hidden-to-hidden layers residual blocks with branch scale
    α/L^β: h^{l+1} = h^l + (α/L^β)·(σ_w W^l φ(h^l)/√N + σ_b b^l), l = 1..L-1 (the first layer
    and the readout are as above); ``residual_exponent = β`` is 1/2 (depth-μP, the default) or
    1 (CompleteP) or any β ≥ 0 (docs/conventions.md §2c).
    """

    hidden_layers: int
    activation: str = "relu"
    parameterization: Parameterization = "ntk"
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    gamma0: float = 1.0
    residual_scale: float | None = None
    residual_exponent: float = 0.5

    def __post_init__(self):
        # NumPy / JAX scalars are accepted and stored as Python int / float / str.
        set_ = object.__setattr__
        set_(self, "hidden_layers", _integer("architecture.hidden_layers", self.hidden_layers,
                                             1, MAX_HIDDEN_LAYERS))
        activation = _string("architecture.activation", self.activation)
        _require(activation.strip() != "", "architecture.activation must be a non-empty string, "
                                           f"got {_show(activation)}")
        set_(self, "activation", activation)
        parameterization = _string("architecture.parameterization", self.parameterization)
        _require(
            parameterization in PARAMETERIZATIONS,
            f"architecture.parameterization must be one of {PARAMETERIZATIONS}, "
            f"got {_show(parameterization)}",
        )
        set_(self, "parameterization", parameterization)
        for key in ("sigma_w", "sigma_b", "gamma0"):
            set_(self, key, _finite_number(f"architecture.{key}", getattr(self, key)))
        _require(self.sigma_w > 0, f"architecture.sigma_w must be > 0, got {self.sigma_w!r}")
        _require(self.sigma_b >= 0, f"architecture.sigma_b must be >= 0, got {self.sigma_b!r}")
        _require(self.gamma0 > 0, f"architecture.gamma0 must be > 0, got {self.gamma0!r}")
        if self.residual_scale is not None:
            alpha = _finite_number("architecture.residual_scale", self.residual_scale)
            _require(alpha > 0, f"architecture.residual_scale must be > 0, got {alpha!r}")
            set_(self, "residual_scale", alpha)
        beta = _finite_number("architecture.residual_exponent", self.residual_exponent)
        _require(beta >= 0, f"architecture.residual_exponent must be >= 0, got {beta!r}")
        set_(self, "residual_exponent", beta)
        if self.parameterization == "mup":
            _require(
                self.sigma_w == 1.0 and self.sigma_b == 0.0,
                "architecture.sigma_w / architecture.sigma_b apply to "
                "architecture.parameterization = \"ntk\" only; a \"mup\" network has unit "
                f"weights and no bias (docs/conventions.md §1b), got sigma_w = {self.sigma_w!r}, "
                f"sigma_b = {self.sigma_b!r}",
            )

    @property
    def depth(self) -> int:
        """Number of dense layers, L + 1."""
        return self.hidden_layers + 1


_DTYPE_KINDS = {
    "b": "booleans",
    "c": "complex numbers",
    "U": "strings",
    "S": "bytes",
    "M": "datetimes",
    "m": "timedeltas",
    "V": "structured records",
}


def _as_float_array(key: str, value: Any) -> np.ndarray:
    """A float64 copy of a real numeric array-like; InputError naming `key` for anything else.

    Accepted: anything ``np.asarray`` turns into an array of integers or floats (lists, tuples,
    NumPy and JAX arrays, nested lists of Python / NumPy numbers). Refused with one line each:
    complex values (the imaginary part is never dropped silently), booleans (a mask passed by
    mistake; convert with ``.astype(float)`` if 0/1 features are meant), strings and file paths
    (paths are read by ``load_spec`` / ``spec_from_dict``), None, mappings, sets, ragged lists,
    object arrays of non-numbers, and NaN or inf.
    """
    if value is None or isinstance(value, (str, bytes, os.PathLike)):
        hint = (" (Data takes arrays; file paths are read by dmft.load_spec / spec_from_dict)"
                if value is not None else "")
        raise InputError(f"{key} must be an array of numbers, got {_show(value)}{hint}")
    _require(
        not isinstance(value, (Mapping, set, frozenset)),
        f"{key} must be an array of numbers, got {_show(value)}",
    )
    try:
        array = np.asarray(value)
    except Exception as error:  # ragged lists, objects whose __array__ fails, ...
        reason = "ragged (rows of different lengths)" if "inhomogeneous" in str(error) else (
            f"not an array ({type(error).__name__})")
        raise InputError(f"{key} must be a rectangular array of numbers; it is {reason}") from None
    kind = array.dtype.kind
    if kind == "O":  # mixed Python objects: every element must be a real number
        flat = array.ravel()
        for element in flat:
            element = _unwrap_scalar(element)
            _require(
                isinstance(element, numbers.Real) and not _is_bool(element),
                f"{key} must be an array of numbers, but it holds {_show(element)}",
            )
        try:
            array = np.array([float(element) for element in flat], dtype=np.float64).reshape(
                array.shape)
        except (OverflowError, ValueError, TypeError):
            raise InputError(f"{key} contains values too large for float64") from None
    elif kind == "c":
        hint = (" (its imaginary part is zero: pass x.real)"
                if array.size and not np.any(np.imag(array)) else "")
        raise InputError(f"{key} must be real, got complex values{hint}")
    elif kind in _DTYPE_KINDS:
        hint = " (convert with .astype(float) if 0/1 values are meant)" if kind == "b" else ""
        raise InputError(f"{key} must be an array of numbers, got {_DTYPE_KINDS[kind]}{hint}")
    _require(kind in "iufO", f"{key} must be an array of numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # float128 or huge integers beyond float64 become inf
        array = array.astype(np.float64)  # a copy: later changes to the caller's array don't leak
    _require(bool(np.all(np.isfinite(array))), f"{key} contains non-finite values (NaN or inf)")
    return array


def _targets(key: str, value: Any, inputs_key: str, num_points: int) -> np.ndarray:
    """Targets (P,) for one output per point ((P, 1) is flattened) or (P, C) for C outputs."""
    y = _as_float_array(key, value)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    _require(y.ndim in (1, 2), f"{key} must have shape (P,), (P, 1) or (P, C), got {y.shape}")
    _require(
        y.shape[0] == num_points,
        f"{key} has {y.shape[0]} targets but {inputs_key} has {num_points} points",
    )
    _require(y.ndim == 1 or y.shape[1] >= 1, f"{key} has no outputs: shape {y.shape}")
    return y


def _num_outputs(y: np.ndarray) -> int:
    return 1 if y.ndim == 1 else y.shape[1]


#: One-hot targets hold P·C float64 entries; label sets whose one-hot form is larger than this
#: (2^27 entries, 1 GiB) are refused: such a C comes from a stray label (1e9 for 9), not a task.
_MAX_ONE_HOT_ENTRIES = 2**27


def _class_labels(key: str, values: np.ndarray, limit: int | None, limit_text: str,
                  context: str = "") -> np.ndarray:
    """Integer class labels 0..limit-1 (int64) from a float array; one-line InputError naming
    `key` and the first bad entry otherwise. `limit` None: any label >= 0."""
    integral = values == np.round(values)
    if not np.all(integral):
        i = int(np.argmin(integral))
        raise InputError(f"{key}[{i}] = {float(values[i])!r} is not an integer class "
                         f"label{context}")
    if values.size and values.min() < 0:
        i = int(np.argmin(values))
        raise InputError(f"{key}[{i}] = {float(values[i]):g} is a negative class label; "
                         f"labels run 0..C-1{context}")
    if limit is not None and values.size and values.max() >= limit:
        i = int(np.argmax(values))
        raise InputError(f"{key}[{i}] = {float(values[i]):g} is out of range: {limit_text} "
                         f"allows the labels 0..{limit - 1}{context}")
    if values.size and values.max() * values.size >= _MAX_ONE_HOT_ENTRIES:
        i = int(np.argmax(values))
        raise InputError(f"{key}[{i}] = {float(values[i]):g} is an absurd class label: its "
                         f"one-hot targets would hold more than {_MAX_ONE_HOT_ENTRIES} entries")
    return values.astype(np.int64)


def _check_labels(key: str, value: Any, y: np.ndarray, y_key: str) -> np.ndarray:
    """Explicit class labels (P,) of targets `y`: 0..C-1 with label = argmax of a row for C > 1
    outputs; for one output (C = 1) the two classes of a ±1 target, label 1 where y > 0."""
    labels = _as_float_array(key, value)
    num = y.shape[0]
    _require(labels.ndim == 1 and labels.shape[0] == num,
             f"{key} must have shape ({num},), one label per point of {y_key}, got "
             f"{labels.shape}")
    outputs = _num_outputs(y)
    classes = 2 if outputs == 1 else outputs
    limit_text = (f"a scalar target ({y_key} of shape (P,): the classes y < 0 and y > 0)"
                  if outputs == 1 else f"the {outputs} outputs of {y_key}")
    labels = _class_labels(key, labels, classes, limit_text)
    if outputs == 1:
        agree = (y > 0) == (labels == 1)
        agree &= y != 0
        rule = f"label 1 where {y_key} > 0, label 0 where it is < 0"
    else:
        agree = y[np.arange(num), labels] == y.max(axis=1)
        rule = f"each label is the index of its row's largest entry of {y_key}"
    if not np.all(agree):
        i = int(np.argmin(agree))
        raise InputError(f"{key}[{i}] = {labels[i]} disagrees with {y_key}[{i}] ({rule})")
    return labels


def _frozen_settings(key: str, value: Any) -> Mapping[str, Any] | None:
    """A read-only copy of a data set's settings (JSON-ready values) for result metadata."""
    if value is None:
        return None
    _require(isinstance(value, Mapping) and all(isinstance(k, str) for k in value),
             f"{key} must be a mapping of setting names to values, got {_show(value)}")
    return MappingProxyType({k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in value.items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
    """Training inputs ``x_train`` (P, D) and targets ``y_train``, optional test set.

    Targets are (P,) (or (P, 1), flattened) for one output per point, or (P, C) for C outputs
    (docs/conventions.md §2b); ``y_test`` has the same C. Whether (P,) targets are class labels
    is decided by the loss: under ``training.loss = "cross_entropy"`` a `Spec` reads them as
    integer labels and stores them as one-hot rows plus `labels`; under "mse" they are a scalar
    regression target.

    ``labels`` (P,) and ``labels_test`` (P_test,) are optional integer class labels, used for
    accuracy. For C > 1 a label is the index of its row's largest target; for C = 1 the two
    classes are the signs of a ±1 target: label 1 where y > 0, label 0 where y < 0 (and a scalar
    output predicts class 1 where f > 0). ``dataset`` records where the data came from (the
    settings of `dmft.data.load_dataset`), for metadata.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    labels: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    dataset: Mapping[str, Any] | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        x = _as_float_array("data.x_train", self.x_train)
        _require(x.ndim == 2, f"data.x_train must have shape (P, D), got {x.shape}")
        _require(x.shape[0] >= 1 and x.shape[1] >= 1, f"data.x_train is empty: shape {x.shape}")
        set_(self, "x_train", x)
        y = _targets("data.y_train", self.y_train, "data.x_train", x.shape[0])
        set_(self, "y_train", y)
        if self.labels is not None:
            set_(self, "labels", _check_labels("data.labels", self.labels, y, "data.y_train"))
        set_(self, "dataset", _frozen_settings("data.dataset", self.dataset))
        if self.x_test is None:
            _require(self.y_test is None, "data.y_test is given but data.x_test is not")
            _require(self.labels_test is None, "data.labels_test is given but data.x_test is not")
            return
        x_test = _as_float_array("data.x_test", self.x_test)
        _require(
            x_test.ndim == 2 and x_test.shape[1] == x.shape[1],
            f"data.x_test must have shape (P_test, {x.shape[1]}) like data.x_train, "
            f"got {x_test.shape}",
        )
        set_(self, "x_test", x_test)
        if self.y_test is not None:
            y_test = _targets("data.y_test", self.y_test, "data.x_test", x_test.shape[0])
            _require(_num_outputs(y_test) == _num_outputs(y),
                     f"data.y_test has {_num_outputs(y_test)} outputs per point but "
                     f"data.y_train has {_num_outputs(y)}")
            set_(self, "y_test", y_test)
        if self.labels_test is not None:
            _require(self.y_test is not None, "data.labels_test is given but data.y_test is not")
            set_(self, "labels_test", _check_labels("data.labels_test", self.labels_test,
                                                    self.y_test, "data.y_test"))

    @property
    def num_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def num_test(self) -> int:
        return 0 if self.x_test is None else self.x_test.shape[0]

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_outputs(self) -> int:
        """C, the outputs per point (1 for targets of shape (P,))."""
        return _num_outputs(self.y_train)

    def predicted_labels(self, f: Any) -> np.ndarray:
        """The class each output predicts: f (..., P) for C = 1 (class 1 where f > 0), or
        (..., P, C) (the index of the largest output)."""
        f = np.asarray(f)
        if self.num_outputs == 1:
            return (f > 0).astype(np.int64)
        _require(f.ndim >= 2 and f.shape[-1] == self.num_outputs,
                 f"outputs of shape {f.shape} do not end in the {self.num_outputs} outputs")
        return np.argmax(f, axis=-1)

    def accuracy(self, f: Any, test: bool = False) -> np.ndarray:
        """The fraction of points whose predicted class (`predicted_labels`) is the label;
        f (..., P[_test]) for C = 1 or (..., P[_test], C). InputError without labels."""
        labels = self.labels_test if test else self.labels
        key = "data.labels_test" if test else "data.labels"
        _require(labels is not None, f"accuracy needs class labels, and {key} is not given")
        predicted = self.predicted_labels(f)
        _require(predicted.shape[-1:] == labels.shape,
                 f"outputs for {predicted.shape[-1:]} points, but {key} has {labels.shape[0]}")
        return np.mean(predicted == labels, axis=-1)


#: Probability rows must sum to 1 within C·2^-23: twice the worst-case rounding of a normalised
#: row of C entries computed or stored in float32 (each entry rounded by up to 2^-24 relative,
#: plus a float32 summation, together ≤ C·2^-24), so float32 softmax outputs and saved one-hot
#: rows pass, while a real normalisation error (a dropped class, raw scores) is far larger.
def _row_sum_tolerance(num_classes: int) -> float:
    return num_classes * 2.0**-23


def _probability_rows(key: str, y: np.ndarray) -> None:
    """InputError unless every row of `y` (P, C) is a probability vector."""
    if y.size and y.min() < 0:
        i, c = np.unravel_index(int(np.argmin(y)), y.shape)
        raise InputError(f"{key}[{i}, {c}] = {float(y[i, c])!r} is negative: training.loss = "
                         '"cross_entropy" takes rows of class probabilities (one-hot or soft)')
    error = np.abs(y.sum(axis=1) - 1.0)
    tolerance = _row_sum_tolerance(y.shape[1])
    if np.any(error > tolerance):
        i = int(np.argmax(error))
        raise InputError(f"{key}[{i}] sums to {float(y[i].sum())!r}, not 1 (within {tolerance:.1e}): "
                         'training.loss = "cross_entropy" takes rows of class probabilities')


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    rows = np.zeros((labels.shape[0], num_classes))
    rows[np.arange(labels.shape[0]), labels] = 1.0
    return rows


def _labels_of_rows(y: np.ndarray) -> np.ndarray | None:
    """The labels of exactly one-hot rows, None for soft probability rows."""
    if np.all((y == 0.0) | (y == 1.0)) and np.all(y.sum(axis=1) == 1.0):
        return np.argmax(y, axis=1)
    return None


def _cross_entropy_data(data: Data, training: Training) -> Data:
    """The data as cross-entropy reads it: integer labels (P,) become one-hot rows (P, C) plus
    `Data.labels`; rows (P, C) must be probabilities (docs/conventions.md §2b)."""
    given = training.num_classes
    context = ' (training.loss = "cross_entropy" reads targets of shape (P,) as class labels)'
    if data.y_train.ndim == 1:
        _require(data.labels is None,
                 "data.labels with a scalar target (the ±1 classes of one output) are for "
                 'training.loss = "mse"; for "cross_entropy" give the labels as data.y_train')
        limit_text = f"training.num_classes = {given}"
        train = _class_labels("data.y_train", data.y_train, given, limit_text, context)
        test = None if data.y_test is None else _class_labels(
            "data.y_test", data.y_test, given, limit_text, context)
        if given is None:
            given = int(max(train.max(), -1 if test is None or not test.size else test.max())) + 1
            _require(given >= 2,
                     'training.loss = "cross_entropy" needs at least 2 classes, but data.y_train '
                     "holds the label 0 only (set training.num_classes, or use "
                     'training.loss = "mse" for a scalar target)')
        _require(given * max(data.num_train, data.num_test) < _MAX_ONE_HOT_ENTRIES,
                 f"training.num_classes = {given} is absurd: the one-hot targets would hold more "
                 f"than {_MAX_ONE_HOT_ENTRIES} entries")
        return dataclasses.replace(
            data, y_train=_one_hot(train, given), labels=train,
            y_test=None if test is None else _one_hot(test, given), labels_test=test)
    classes = data.num_outputs
    _require(given is None or given == classes,
             f"training.num_classes = {given} but data.y_train has {classes} columns (one per "
             "class)")
    _probability_rows("data.y_train", data.y_train)
    labels = data.labels if data.labels is not None else _labels_of_rows(data.y_train)
    labels_test = data.labels_test
    if data.y_test is not None:
        _probability_rows("data.y_test", data.y_test)
        if labels_test is None:
            labels_test = _labels_of_rows(data.y_test)
    return dataclasses.replace(data, labels=labels, labels_test=labels_test)


OPTIMIZERS: tuple[str, ...] = ("flow", "gd", "sgd")
LOSSES: tuple[str, ...] = ("mse", "cross_entropy")

#: Save times must be integer multiples k·η0 of the learning rate up to this relative round-off
#: (decimal times such as 0.3 = 3 × 0.1 are not exact binary multiples).
_STEP_RTOL = 1e-9


@dataclasses.dataclass(frozen=True)
class Training:
    """The training rule and the times at which results are saved (docs/conventions.md §2, §2a).

    - ``optimizer = "flow"`` (default): gradient flow in time t; `learning_rate`, `batch_size`
      and `seed` are not used and must not be given.
    - ``"gd"``: θ_{k+1} = θ_k − η0 η ∇𝓛 with ``learning_rate = η0``; step k sits at t = k·η0,
      so every save time must be a multiple of η0.
    - ``"sgd"``: as "gd" on the loss of a minibatch of ``batch_size`` points per step, drawn by
      `dmft.network.SGD` from ``seed`` (a fresh permutation of the points every epoch).

    ``loss`` is "mse" (default) or "cross_entropy" (docs/conventions.md §2b), with
    ``num_classes`` for label targets.
    """

    times: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0)
    optimizer: str = "flow"
    learning_rate: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    loss: str = "mse"
    num_classes: int | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "times", _times("training.times", self.times))
        optimizer = _string("training.optimizer", self.optimizer)
        _require(optimizer in OPTIMIZERS,
                 f"training.optimizer must be one of {OPTIMIZERS}, got {_show(optimizer)}")
        set_(self, "optimizer", optimizer)
        loss = _string("training.loss", self.loss)
        _require(loss in LOSSES, f"training.loss must be one of {LOSSES}, got {_show(loss)}")
        set_(self, "loss", loss)
        if self.num_classes is not None:
            _require(loss == "cross_entropy",
                     'training.num_classes applies to training.loss = "cross_entropy" only')
            set_(self, "num_classes", _integer("training.num_classes", self.num_classes, 2,
                                               10**6))
        if optimizer == "flow":
            for key in ("learning_rate", "batch_size", "seed"):
                _require(getattr(self, key) is None,
                         f'training.{key} applies to training.optimizer = "gd" / "sgd" only; '
                         'gradient flow ("flow", the default) has none')
            return
        _require(self.learning_rate is not None,
                 f'training.optimizer = "{optimizer}" needs training.learning_rate (η0 > 0)')
        eta = _finite_number("training.learning_rate", self.learning_rate)
        _require(eta > 0, f"training.learning_rate must be > 0, got {eta!r}")
        set_(self, "learning_rate", eta)
        if optimizer == "gd":
            for key in ("batch_size", "seed"):
                _require(getattr(self, key) is None,
                         f'training.{key} applies to training.optimizer = "sgd" only')
        else:
            _require(self.batch_size is not None,
                     'training.optimizer = "sgd" needs training.batch_size')
            set_(self, "batch_size", _integer("training.batch_size", self.batch_size, 1,
                                              10**9))
            set_(self, "seed", 0 if self.seed is None else _integer("training.seed", self.seed,
                                                                     0, 2**63 - 1))
        for i, t in enumerate(self.times):
            k = round(t / eta)
            _require(abs(t - k * eta) <= _STEP_RTOL * max(t, eta),
                     f"training.times[{i}] = {t!r} is not a multiple of training.learning_rate = "
                     f"{eta!r} (step k sits at t = k·η0)")

    @property
    def steps(self) -> tuple[int, ...] | None:
        """The step index k = t/η0 of each save time ("gd" / "sgd"), None for gradient flow."""
        if self.learning_rate is None:
            return None
        return tuple(round(t / self.learning_rate) for t in self.times)

    @property
    def dynamics(self):
        """The training rule as a `dmft.network` dynamics object (GradientFlow, GradientDescent
        or SGD)."""
        from ..network import SGD, GradientDescent, GradientFlow

        if self.optimizer == "flow":
            return GradientFlow()
        if self.optimizer == "gd":
            return GradientDescent(self.learning_rate)
        return SGD(self.learning_rate, self.batch_size, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready settings (unused keys left out)."""
        out: dict[str, Any] = {"times": list(self.times), "optimizer": self.optimizer,
                               "loss": self.loss}
        for key in ("learning_rate", "batch_size", "seed", "num_classes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def _times(key: str, value: Any) -> tuple[float, ...]:
    """Save times from a list, tuple, range or 1-D NumPy / JAX array of real numbers."""
    expected = f"{key} must be a non-empty 1-D list of numbers"
    value = _unwrap_scalar(value)
    _require(
        not isinstance(value, (str, bytes, Mapping, set, frozenset)) and value is not None,
        f"{expected}, got {_show(value)}",
    )
    if isinstance(value, Sequence):
        items = list(value)
    elif hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        try:
            array = np.asarray(value)
        except Exception:  # an array-like that cannot be read
            raise InputError(f"{expected}, got {_show(value)}") from None
        _require(array.ndim == 1, f"{expected}, got an array of shape {array.shape}")
        kind = array.dtype.kind
        if kind in _DTYPE_KINDS:
            raise InputError(f"{expected}, got an array of {_DTYPE_KINDS[kind]}")
        items = array.tolist() if kind in "iuf" else list(array)
    else:
        raise InputError(f"{expected}, got {_show(value)}")
    _require(len(items) >= 1, f"{expected}, got an empty one")
    times = tuple(_finite_number(f"{key}[{i}]", t) for i, t in enumerate(items))
    for i, t in enumerate(times):
        _require(t >= 0, f"{key} must be >= 0, got {key}[{i}] = {t!r}")
        _require(
            i == 0 or t > times[i - 1],
            f"{key} must be strictly increasing, got {key}[{i}] = {t!r} after "
            f"{key}[{i - 1}] = {times[i - 1]!r}",
        )
    return times


def _frozen_mapping(key: str, value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of a ``[solver]`` / ``[sampler]`` table (None means empty)."""
    if value is None:
        return MappingProxyType({})
    _require(isinstance(value, Mapping), f"spec.{key} must be a mapping of {key} options "
                                         f"(a dict or TOML table), got {_show(value)}")
    for name in value:
        _require(isinstance(name, str), f"spec.{key} keys must be strings, got {_show(name)}")
    return MappingProxyType(dict(value))


def _check_part(key: str, value: Any, kind: type, hint: str) -> None:
    if isinstance(value, kind):
        return
    if isinstance(value, Mapping):
        hint = f" (build it with dmft.{kind.__name__}(**table), or read whole specs with "
        hint += "dmft.spec.spec_from_dict)"
    raise InputError(f"spec.{key} must be a dmft.{kind.__name__}, got {_show(value)}"
                     f"{hint}; expected {_SPEC_USAGE}")


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
        _check_part("architecture", self.architecture, Architecture, "")
        _check_part("data", self.data, Data, "")
        _check_part("training", self.training, Training, "")
        batch = self.training.batch_size
        _require(batch is None or batch <= self.data.num_train,
                 f"training.batch_size = {batch} exceeds the {self.data.num_train} training points")
        targets = (self.data.dataset or {}).get("targets")
        loss = self.training.loss
        _require(not (targets == "labels" and loss == "mse"),
                 'data.targets = "labels" gives integer class labels, which training.loss = '
                 '"mse" would regress on as numbers; use "pm1" (two classes) or "one_hot" with '
                 '"mse", or training.loss = "cross_entropy"')
        _require(not (targets == "pm1" and loss == "cross_entropy"),
                 'data.targets = "pm1" is one ±1 output for training.loss = "mse"; '
                 '"cross_entropy" takes data.targets = "labels" or "one_hot"')
        if loss == "cross_entropy":
            object.__setattr__(self, "data", _cross_entropy_data(self.data, self.training))
        object.__setattr__(self, "solver", _frozen_mapping("solver", self.solver))
        object.__setattr__(self, "sampler", _frozen_mapping("sampler", self.sampler))
        source = self.source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        _require(source is None or isinstance(source, str),
                 f"spec.source must be a string or None, got {_show(source)}")
        object.__setattr__(self, "source", None if source is None else str(source))

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
        shapes["num_outputs"] = data.num_outputs
        shapes["labels"] = data.labels is not None
        if data.dataset is not None:
            shapes["dataset"] = dict(data.dataset)
        return {
            "architecture": dataclasses.asdict(self.architecture),
            "data": shapes,
            "training": self.training.to_dict(),
            "solver": dict(self.solver),
            "sampler": dict(self.sampler),
            "source": self.source,
        }
