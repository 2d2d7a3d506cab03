"""Data sets that ship offline (dmft.data): digits and MNIST-1D, splits, targets, spec keys."""

import dataclasses
import os
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error

from dmft.data import _datasets, known_datasets, load_dataset
from dmft.spec import Architecture, Spec, Training, load_spec, spec_from_dict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits, read directly (the reference the loader is checked against)."""
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    return bunch.data.astype(np.float64), bunch.target


def sorted_rows(x):
    return x[np.lexsort(x.T[::-1])]


def rows_of(x, pool):
    """For each row of x, whether it is a row of pool (exact: the loader copies, never rounds)."""
    pool = {tuple(row) for row in pool}
    return np.array([tuple(row) in pool for row in x])


# --- digits ------------------------------------------------------------------------------------

def test_digits_split_is_stratified_disjoint_and_complete(digits):
    x, y = digits
    pool = x[np.isin(y, [0, 1])]
    data = load_dataset("digits", classes=[0, 1], train_size=64, test_size=len(pool) - 64)
    assert data.x_train.shape == (64, 64) and data.num_outputs == 1
    assert np.bincount(data.labels).tolist() == [32, 32]  # 178 and 182 points: 32 each
    # Train and test together are exactly the points of the two classes: disjoint and complete.
    both = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_array_equal(sorted_rows(both), sorted_rows(pool))


def test_digits_targets_follow_the_order_of_classes(digits):
    x, y = digits
    data = load_dataset("digits", classes=[8, 3], train_size=20, test_size=10)
    minus, plus = data.y_train == -1.0, data.y_train == 1.0
    assert np.all(minus | plus)
    np.testing.assert_array_equal(data.labels, plus.astype(int))  # class 8 has label 0
    assert rows_of(data.x_train[minus], x[y == 8]).all()
    assert rows_of(data.x_train[plus], x[y == 3]).all()
    assert rows_of(data.x_test[data.labels_test == 1], x[y == 3]).all()


def test_digits_splits_are_deterministic_in_the_seed():
    pytest.importorskip("sklearn")
    first = load_dataset("digits", train_size=50, test_size=20, seed=3)
    again = load_dataset("digits", train_size=50, test_size=20, seed=3)
    other = load_dataset("digits", train_size=50, test_size=20, seed=4)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_train, other.x_train)


def test_all_ten_classes_default_to_one_hot_rows():
    pytest.importorskip("sklearn")
    data = load_dataset("digits", train_size=100, test_size=30)
    assert data.y_train.shape == (100, 10) and data.y_test.shape == (30, 10)
    np.testing.assert_array_equal(data.y_train, np.eye(10)[data.labels])
    assert np.bincount(data.labels).min() >= 9  # 100 points over classes of 174..183 points
    assert dict(data.dataset)["targets"] == "one_hot"


def test_standardize_uses_the_training_statistics():
    pytest.importorskip("sklearn")
    raw = load_dataset("digits", classes=[0, 1], train_size=40, test_size=10, seed=1)
    data = load_dataset("digits", classes=[0, 1], train_size=40, test_size=10, seed=1,
                        standardize=True)
    mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
    constant = std == 0
    assert constant.any()  # the digits' blank corner pixels
    # Round-off of a mean and a standard deviation over 40 points: 1e-12 is generous.
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(axis=0)[~constant], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(data.x_train[:, constant], 0.0)
    scale = np.where(constant, 1.0, std)
    # The same affine map as the loader's, evaluated in another order: round-off only.
    np.testing.assert_allclose(data.x_test, (raw.x_test - mean) / scale, rtol=1e-12, atol=1e-12)


def test_label_targets_become_one_hot_under_cross_entropy():
    pytest.importorskip("sklearn")
    data = load_dataset("digits", classes=[2, 5, 7], train_size=30, test_size=9,
                        targets="labels")
    assert data.y_train.shape == (30,) and data.labels is None
    spec = Spec(Architecture(1, "tanh", "mup"), data, Training(loss="cross_entropy"))
    np.testing.assert_array_equal(spec.data.y_train, np.eye(3)[data.y_train.astype(int)])
    np.testing.assert_array_equal(spec.data.labels, data.y_train)
    np.testing.assert_array_equal(spec.data.labels_test, data.y_test)


# --- spec files --------------------------------------------------------------------------------

def dataset_table(**data):
    return {"architecture": {"hidden_layers": 2, "activation": "tanh", "parameterization": "mup"},
            "data": {"dataset": "digits", "train_size": 16, **data},
            "training": {"times": [0.0, 1.0]}}


def test_spec_reads_a_dataset_and_records_its_settings():
    pytest.importorskip("sklearn")
    spec = spec_from_dict(dataset_table(classes=[0, 1], test_size=8, seed=2, standardize=True))
    assert spec.data.x_train.shape == (16, 64) and spec.data.x_test.shape == (8, 64)
    settings = spec.to_dict()["data"]["dataset"]
    assert {key: settings[key] for key in ("name", "classes", "train_size", "test_size", "seed",
                                           "standardize", "targets")} == {
        "name": "digits", "classes": [0, 1], "train_size": 16, "test_size": 8, "seed": 2,
        "standardize": True, "targets": "pm1"}
    assert settings["package"] == "scikit-learn" and settings["package_version"]


def test_spec_with_cross_entropy_defaults_to_label_targets():
    pytest.importorskip("sklearn")
    table = dataset_table(classes=[0, 1, 2])
    table["training"]["loss"] = "cross_entropy"
    spec = spec_from_dict(table)
    assert spec.data.dataset["targets"] == "labels"
    assert spec.data.y_train.shape == (16, 3) and spec.data.labels.shape == (16,)


def test_examples_on_digits_load():
    pytest.importorskip("sklearn")
    spec = load_spec(EXAMPLES / "digits_two_class.toml")
    assert spec.data.num_train == 64 and spec.data.num_outputs == 1
    assert spec.data.num_test > 0 and spec.architecture.hidden_layers == 2
    spec = load_spec(EXAMPLES / "digits_one_hot.toml")
    assert spec.data.num_outputs > 1


def test_one_hot_example_is_solved_with_its_three_outputs():
    """digits_one_hot.toml has C = 3 outputs under the MSE: the Monte Carlo DMFT solves it (with
    fewer samples and times here, for speed) and reports (T, P, C) outputs and the accuracy."""
    pytest.importorskip("sklearn")
    from dmft.solvers import solve

    spec = load_spec(EXAMPLES / "digits_one_hot.toml")
    spec = dataclasses.replace(spec, solver={"method": "monte_carlo", "num_samples": 512},
                               training=dataclasses.replace(spec.training, times=(0.0, 1.0)))
    solution = solve(spec)
    assert solution.f_train.shape == (2, spec.data.num_train, 3)
    arrays = solution.arrays(spec.data.y_train, spec.data.y_test)
    assert arrays["loss_train"][1] < arrays["loss_train"][0]
    assert arrays["accuracy_test"][1] > 1 / 3  # better than chance after one unit of time


@pytest.mark.parametrize("data, names", [
    ({"x_train": [[1.0]]}, ["data.dataset", "data.x_train", "mutually exclusive"]),
    ({"y_test": [1.0]}, ["data.dataset", "data.y_test", "mutually exclusive"]),
    ({"dataset": "cifar10"}, ["data.dataset", "digits", "mnist1d"]),
    ({"dataset": 3}, ["data.dataset", "digits, mnist1d"]),
    ({"train_size": None}, ["data.train_size"]),
])
def test_bad_dataset_tables_without_the_extra(data, names):
    """Refused before any data set is read (these need no optional package)."""
    table = dataset_table(**data)
    if data.get("train_size", 1) is None:
        del table["data"]["train_size"]
    one_line_error(lambda: spec_from_dict(table), *names)


@pytest.mark.parametrize("key", ["classes", "train_size", "test_size", "seed", "standardize",
                                 "targets"])
def test_dataset_keys_need_a_dataset(key):
    table = dataset_table()
    table["data"] = {"x_train": [[1.0], [2.0]], "y_train": [1.0, 2.0], key: 1}
    one_line_error(lambda: spec_from_dict(table), f"data.{key}", "data.dataset")


@pytest.mark.parametrize("options, names", [
    ({"classes": [0, 0]}, ["data.classes[1]", "twice"]),
    ({"classes": [0, 10]}, ["data.classes[1]", "0..9"]),
    ({"classes": [-1, 2]}, ["data.classes[0]"]),
    ({"classes": [1]}, ["data.classes", "at least 2"]),
    ({"classes": "01"}, ["data.classes"]),
    ({"classes": [0.0, 1.0]}, ["data.classes[0]", "integer"]),
    ({"train_size": 0}, ["data.train_size", ">= 1"]),
    ({"train_size": 2.5}, ["data.train_size", "integer"]),
    ({"train_size": True}, ["data.train_size", "integer"]),
    ({"train_size": 5}, ["data.train_size = 5", "10 classes"]),
    ({"train_size": 400, "classes": [0, 1]}, ["data.train_size = 400", "360 points"]),
    ({"test_size": 300, "classes": [0, 1]}, ["data.test_size = 300", "left after"]),
    ({"test_size": -1}, ["data.test_size"]),
    ({"seed": -2}, ["data.seed"]),
    ({"standardize": "yes"}, ["data.standardize", "true or false"]),
    ({"targets": "soft"}, ["data.targets", "pm1"]),
    ({"targets": "pm1"}, ["data.targets", "exactly 2 classes"]),
])
def test_bad_dataset_options(options, names):
    pytest.importorskip("sklearn")
    options = {"train_size": 100, **options}
    one_line_error(lambda: load_dataset("digits", **options), *names)
    table = dataset_table(**options)  # the same one-line error from a spec file
    one_line_error(lambda: spec_from_dict(table), *names)


def test_targets_that_do_not_fit_the_loss():
    pytest.importorskip("sklearn")
    table = dataset_table(classes=[0, 1], targets="labels")
    one_line_error(lambda: spec_from_dict(table), 'data.targets = "labels"', "mse")
    table = dataset_table(classes=[0, 1], targets="pm1")
    table["training"]["loss"] = "cross_entropy"
    one_line_error(lambda: spec_from_dict(table), 'data.targets = "pm1"', "cross_entropy")


def test_unknown_dataset_lists_the_known_ones():
    assert known_datasets() == ("digits", "mnist1d")
    one_line_error(lambda: load_dataset("mnist", train_size=10), "mnist", "digits, mnist1d")


# --- the optional extra ------------------------------------------------------------------------

@pytest.mark.parametrize("name, modules, package", [
    ("digits", ["sklearn", "sklearn.datasets"], "scikit-learn"),
    ("mnist1d", ["mnist1d", "mnist1d.data"], "mnist1d"),
])
def test_missing_extra_names_it(monkeypatch, name, modules, package):
    for module in modules:  # None in sys.modules: `import module` raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    message = one_line_error(lambda: load_dataset(name, train_size=20), package,
                             'pip install "dmft[data]"')
    assert f'data.dataset = "{name}"' in message
    table = dataset_table()
    table["data"]["dataset"] = name
    one_line_error(lambda: spec_from_dict(table), 'pip install "dmft[data]"')


# --- MNIST-1D ----------------------------------------------------------------------------------

def test_mnist1d_is_generated_offline(monkeypatch, tmp_path):
    """With every socket refused and in an empty working directory: the loader generates the
    data (never downloads it), writes no file and leaves the global random state as it was."""
    generator = pytest.importorskip("mnist1d.data")

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.chdir(tmp_path)
    _datasets._mnist1d_pools.cache_clear()  # generate now, not from an earlier test's cache
    np.random.seed(7)
    random.seed(7)
    numpy_before, python_before = np.random.random(), random.random()
    np.random.seed(7)
    random.seed(7)
    data = load_dataset("mnist1d", classes=[0, 1, 2], train_size=30, test_size=12, seed=1)
    assert (np.random.random(), random.random()) == (numpy_before, python_before)
    assert os.listdir(tmp_path) == []
    assert data.x_train.shape == (30, 40) and data.x_test.shape == (12, 40)
    assert np.bincount(data.labels).tolist() == [10, 10, 10]
    assert np.bincount(data.labels_test).tolist() == [4, 4, 4]
    assert data.dataset["source"].startswith("mnist1d.data.make_dataset")
    monkeypatch.undo()  # the reference below needs nothing from the network either
    state = np.random.get_state(), random.getstate()
    reference = generator.make_dataset()  # the package's own generator, default arguments
    np.random.set_state(state[0])  # it seeds the global random state: put it back
    random.setstate(state[1])
    classes = np.array([0, 1, 2])
    # Training points from the package's training split, test points from its test split.
    assert rows_of(data.x_train, reference["x"][np.isin(reference["y"], classes)]).all()
    assert rows_of(data.x_test, reference["x_test"][np.isin(reference["y_test"], classes)]).all()
    for x, labels, pool_x, pool_y in ((data.x_train, data.labels, reference["x"], reference["y"]),
                                      (data.x_test, data.labels_test, reference["x_test"],
                                       reference["y_test"])):
        for label, digit in enumerate(classes):
            assert rows_of(x[labels == label], pool_x[pool_y == digit]).all()
