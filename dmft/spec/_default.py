"""The embedded default problem that ``dmft run`` solves when given no spec."""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from ._spec import Architecture, Data, Spec, Training, _integer

#: Most numbers a teacher task may hold (80 MB of float64): it is an embedded example, and a
#: larger request would fail deep inside NumPy with a MemoryError instead of a one-line error.
_MAX_SIZE = 10**7


def teacher_data(
    num_train: int = 64,
    num_test: int = 32,
    input_dim: int = 16,
    seed: int = 0,
) -> Data:
    """A synthetic teacher task: x ~ N(0, I_D), y = tanh(2 β·x/√D) + 0.3 sin(3 x_1), unit-scale.

    Sizes and the seed are integers (Python or NumPy); anything else is an InputError naming
    the argument.
    """
    num_train = _integer("teacher_data num_train", num_train, 1, _MAX_SIZE)
    num_test = _integer("teacher_data num_test", num_test, 0, _MAX_SIZE)
    input_dim = _integer("teacher_data input_dim", input_dim, 1, _MAX_SIZE)
    seed = _integer("teacher_data seed", seed, 0, 2**128)
    _require_size(num_train + num_test, input_dim)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, input_dim))
    beta = rng.standard_normal(input_dim)
    y = np.tanh(2.0 * x @ beta / np.sqrt(input_dim)) + 0.3 * np.sin(3.0 * x[:, 0])
    return Data(x_train=x[:num_train], y_train=y[:num_train], x_test=x[num_train:], y_test=y[num_train:])


def _require_size(points: int, input_dim: int) -> None:
    if points * input_dim > _MAX_SIZE:
        raise InputError(f"teacher_data: (num_train + num_test) * input_dim = {points * input_dim} "
                         f"numbers is more than the {_MAX_SIZE} an example task may hold")


def default_spec() -> Spec:
    """A 3-hidden-layer ReLU network (NTK parameterization) on a P = 64 teacher task."""
    return Spec(
        architecture=Architecture(hidden_layers=3, activation="relu", parameterization="ntk",
                                  sigma_w=1.4, sigma_b=0.1),
        data=teacher_data(),
        training=Training(times=(0.0, *(float(t) for t in np.geomspace(0.1, 1000.0, 40)))),
        source="<embedded default>",
    )
