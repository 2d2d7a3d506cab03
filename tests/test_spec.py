"""The spec objects and the TOML loader accept the conventions' keys and reject bad input."""

import numpy as np
import pytest

from dmft import Architecture, Data, InputError, Training, load_spec
from dmft.spec import spec_from_dict


def write_spec(tmp_path, text, arrays=None):
    for name, value in (arrays or {}).items():
        np.save(tmp_path / name, value)
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.fixture
def data_files(rng):
    return {"x.npy": rng.standard_normal((5, 3)), "y.npy": rng.standard_normal((5, 1)),
            "xt.npy": rng.standard_normal((2, 3))}


CONVENTIONS_EXAMPLE = """
[architecture]
hidden_layers = 2
activation = "relu"
parameterization = "ntk"
sigma_w = 1.5
sigma_b = 0.05

[data]
x_train = "x.npy"
y_train = "y.npy"
x_test = "xt.npy"

[training]
times = [0.0, 0.5, 1.0, 2.0]
"""


def test_loads_the_conventions_example(tmp_path, data_files):
    spec = load_spec(write_spec(tmp_path, CONVENTIONS_EXAMPLE, data_files))
    assert spec.architecture == Architecture(2, "relu", "ntk", 1.5, 0.05)
    assert spec.data.y_train.shape == (5,)  # (P, 1) targets are flattened to (P,)
    assert spec.data.x_test.shape == (2, 3)
    assert spec.training.times == (0.0, 0.5, 1.0, 2.0)
    assert spec.to_dict()["architecture"]["sigma_w"] == 1.5


def test_inline_arrays_and_defaults():
    spec = spec_from_dict({
        "architecture": {"hidden_layers": 1, "parameterization": "mup", "gamma0": 0.5},
        "data": {"x_train": [[1.0, 0.0], [0.0, 1.0]], "y_train": [1.0, -1.0]},
    })
    assert spec.architecture.activation == "relu"
    assert spec.architecture.gamma0 == 0.5
    assert spec.data.x_test is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_layers": 0}, "architecture.hidden_layers"),
        ({"sigma_w": -1.0}, "architecture.sigma_w"),
        ({"sigma_b": -0.1}, "architecture.sigma_b"),
        ({"gamma0": 0.0}, "architecture.gamma0"),
        ({"gamma0": -2.0}, "architecture.gamma0"),
        ({"parameterization": "sp"}, "architecture.parameterization"),
        ({"parameterization": "mup", "sigma_w": 2.0}, "sigma_w"),
        ({"sigma_w": float("nan")}, "architecture.sigma_w"),
    ],
)
def test_bad_architecture_values_name_the_key(change, message):
    with pytest.raises(InputError, match=message):
        Architecture(**{"hidden_layers": 2, **change})


@pytest.mark.parametrize(
    "times, message",
    [([1.0, 0.5], "strictly increasing"), ([0.0, 0.0], "strictly increasing"),
     ([-1.0], ">= 0"), ([], "non-empty"), (["a"], "number")],
)
def test_bad_times(times, message):
    with pytest.raises(InputError, match=message):
        Training(times=times)


def test_bad_data_shapes_and_values(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(InputError, match="data.y_train has 3 targets"):
        Data(x, np.zeros(3))
    with pytest.raises(InputError, match="data.x_train contains non-finite"):
        Data(np.full((4, 3), np.nan), np.zeros(4))
    with pytest.raises(InputError, match=r"data.x_test must have shape \(P_test, 3\)"):
        Data(x, np.zeros(4), x_test=np.zeros((2, 5)))
    # (P, C) targets are C outputs (docs/conventions.md §2b); a 3-D target is still refused
    with pytest.raises(InputError, match=r"data.y_train must have shape"):
        Data(x, np.zeros((4, 2, 1)))
    assert Data(x, np.zeros((4, 2))).num_outputs == 2


def test_file_problems_name_the_file_or_key(tmp_path, data_files):
    with pytest.raises(InputError, match="spec file not found"):
        load_spec(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="file not found: .*nothere.npy"):
        load_spec(write_spec(tmp_path, CONVENTIONS_EXAMPLE.replace("xt.npy", "nothere.npy"), data_files))
    with pytest.raises(InputError, match="not valid TOML"):
        load_spec(write_spec(tmp_path, "[architecture\nhidden_layers = 2"))
    with pytest.raises(InputError, match="unknown key architecture.depth"):
        load_spec(write_spec(tmp_path, CONVENTIONS_EXAMPLE.replace("hidden_layers", "depth"), data_files))
    with pytest.raises(InputError, match="missing data.y_train"):
        load_spec(write_spec(tmp_path, CONVENTIONS_EXAMPLE.replace('y_train = "y.npy"', ""), data_files))
