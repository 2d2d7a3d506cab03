"""Targets of several outputs and class labels in the spec (docs/conventions.md §2b)."""

import numpy as np
import pytest
from conftest import one_line_error

from dmft.spec import Architecture, Data, Spec, Training, spec_from_dict

CE = Training(loss="cross_entropy")


@pytest.fixture
def x(rng):
    return rng.standard_normal((6, 3))


def ce_spec(data, **training):
    return Spec(Architecture(1, "tanh"), data, Training(loss="cross_entropy", **training))


# --- several outputs ---------------------------------------------------------------------------

def test_mse_targets_of_several_outputs_keep_their_shape(x, rng):
    y = rng.standard_normal((6, 3))
    y_test = rng.standard_normal((2, 3))
    data = Data(x, y, x[:2], y_test)
    assert data.num_outputs == 3 and data.y_train.shape == (6, 3)
    np.testing.assert_array_equal(data.y_train, y)  # stored as given (a float64 copy)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.labels is None  # mse rows are not class labels unless labels are given


def test_one_output_keeps_the_shapes_of_today(x, rng):
    y = rng.standard_normal(6)
    for given in (y, y[:, None]):
        data = Data(x, given)
        assert data.y_train.shape == (6,) and data.num_outputs == 1


def test_mse_reads_a_vector_of_integers_as_a_scalar_target(x):
    """A (P,) target with "mse" is a regression target, even if its values look like labels."""
    spec = Spec(Architecture(1), Data(x, [0, 1, 2, 0, 1, 2]))
    assert spec.data.y_train.shape == (6,) and spec.data.labels is None
    np.testing.assert_array_equal(spec.data.y_train, [0, 1, 2, 0, 1, 2])


def test_outputs_mismatched_between_train_and_test(x, rng):
    one_line_error(lambda: Data(x, rng.standard_normal((6, 3)), x[:2], np.zeros((2, 2))),
                   "data.y_test", "3", "2")
    one_line_error(lambda: Data(x, rng.standard_normal(6), x[:2], np.zeros((2, 2))),
                   "data.y_test")
    one_line_error(lambda: ce_spec(Data(x, np.eye(3)[[0, 1, 2, 0, 1, 2]], x[:2],
                                        np.eye(4)[[0, 3]])), "data.y_test")


def test_outputs_of_bad_shape(x):
    one_line_error(lambda: Data(x, np.zeros((6, 2, 1))), "data.y_train", "(P, C)")
    one_line_error(lambda: Data(x, np.zeros((6, 0))), "data.y_train", "no outputs")


# --- cross-entropy labels ----------------------------------------------------------------------

def test_integer_labels_become_one_hot_rows_and_labels(x):
    labels = [0, 2, 1, 2, 0, 1]
    spec = ce_spec(Data(x, labels, x[:3], [1, 0, 2]))
    np.testing.assert_array_equal(spec.data.y_train, np.eye(3)[labels])
    np.testing.assert_array_equal(spec.data.labels, labels)
    np.testing.assert_array_equal(spec.data.y_test, np.eye(3)[[1, 0, 2]])
    np.testing.assert_array_equal(spec.data.labels_test, [1, 0, 2])
    assert spec.data.num_outputs == 3
    described = spec.to_dict()["data"]
    assert described["y_train"] == [6, 3] and described["num_outputs"] == 3
    assert described["labels"] is True


def test_num_classes_sets_the_number_of_outputs(x):
    spec = ce_spec(Data(x, [0, 1, 1, 0, 1, 0]), num_classes=4)
    assert spec.data.y_train.shape == (6, 4)
    np.testing.assert_array_equal(spec.data.y_train[:, 2:], 0.0)


def test_classes_seen_only_in_the_test_labels_count(x):
    """C = max label + 1 over the train and test labels, so test labels are never out of range."""
    spec = ce_spec(Data(x, [0, 1, 1, 0, 1, 0], x[:2], [2, 0]))
    assert spec.data.num_outputs == 3


@pytest.mark.parametrize("labels, message", [
    ([0, 1, -1, 0, 1, 0], "negative class label"),
    ([0, 1, 0.5, 0, 1, 0], "not an integer"),
    ([0, 1, 2, 0, 1, 3], "out of range"),
])
def test_bad_labels_are_one_line_errors(x, labels, message):
    num_classes = 3 if message == "out of range" else None
    text = one_line_error(lambda: ce_spec(Data(x, labels), num_classes=num_classes),
                          "data.y_train", message)
    if num_classes is not None:
        assert "training.num_classes = 3" in text and "0..2" in text


def test_bad_test_labels_name_y_test(x):
    one_line_error(lambda: ce_spec(Data(x, [0, 1, 2, 0, 1, 2], x[:2], [1, 3]), num_classes=3),
                   "data.y_test", "out of range")
    one_line_error(lambda: ce_spec(Data(x, [0, 1, 2, 0, 1, 2], x[:2], [1, -2])),
                   "data.y_test", "negative")


def test_absurd_label_is_refused_before_allocating(x):
    one_line_error(lambda: ce_spec(Data(x, [0, 1, 1e12, 0, 1, 0])), "data.y_train[2]", "absurd")


def test_cross_entropy_with_one_class_is_refused(x):
    one_line_error(lambda: ce_spec(Data(x, np.zeros(6))), "cross_entropy", "at least 2 classes")


def test_num_classes_must_match_the_rows(x):
    one_line_error(lambda: ce_spec(Data(x, np.eye(3)[[0, 1, 2, 0, 1, 2]]), num_classes=4),
                   "training.num_classes = 4", "3 columns")


# --- cross-entropy probability rows --------------------------------------------------------------

def test_one_hot_rows_give_labels_and_soft_rows_do_not(x, rng):
    rows = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    spec = ce_spec(Data(x, rows))
    np.testing.assert_array_equal(spec.data.labels, [0, 1, 2, 2, 1, 0])
    soft = rng.dirichlet(np.ones(3), size=6)
    spec = ce_spec(Data(x, soft))
    assert spec.data.labels is None
    np.testing.assert_array_equal(spec.data.y_train, soft)


def test_float32_probability_rows_pass(x, rng):
    """Rows normalised in float32 miss 1 by float32 round-off; they are valid probabilities."""
    scores = rng.standard_normal((6, 10)).astype(np.float32)
    rows = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert rows.dtype == np.float32
    spec = ce_spec(Data(x, rows))
    assert spec.data.num_outputs == 10


@pytest.mark.parametrize("row, where, message", [
    ([1.001, 0.0, 0.0], "data.y_train[3]", "sums to"),
    ([1.0 + 1e-5, 0.0, 0.0], "data.y_train[3]", "sums to"),  # 28 times the tolerance 3.6e-7
    ([0.5, 0.4, 0.0], "data.y_train[3]", "sums to"),
    ([0.5, 0.7, -0.2], "data.y_train[3, 2]", "negative"),  # sums to 1, but not a probability
])
def test_rows_that_are_not_probabilities_are_refused(x, row, where, message):
    rows = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    rows[3] = row
    one_line_error(lambda: ce_spec(Data(x, rows)), where, message)


def test_row_sums_within_the_tolerance_pass(x):
    """The tolerance is C·2^-23 (3.6e-7 for C = 3); 1e-7 is inside it."""
    rows = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    rows[3] = [1.0 + 1e-7, 0.0, 0.0]
    assert ce_spec(Data(x, rows)).data.labels is None  # not exactly one-hot: soft rows


def test_bad_test_rows_name_y_test(x):
    rows = np.eye(2)[[0, 1, 1, 0, 1, 0]]
    one_line_error(lambda: ce_spec(Data(x, rows, x[:2], [[0.5, 0.6], [1.0, 0.0]])),
                   "data.y_test[0]", "sums to")


# --- explicit labels ---------------------------------------------------------------------------

def test_explicit_labels_of_pm1_and_one_hot_targets(x):
    data = Data(x, [-1, 1, 1, -1, 1, -1], labels=[0, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(data.labels, [0, 1, 1, 0, 1, 0])
    assert data.labels.dtype == np.int64
    one_line_error(lambda: Data(x, [-1, 1, 1, -1, 1, -1], labels=[1, 1, 1, 0, 1, 0]),
                   "data.labels[0]", "disagrees")
    one_line_error(lambda: Data(x, [-1, 1, 1, -1, 1, -1], labels=[0, 2, 1, 0, 1, 0]),
                   "data.labels[1]", "out of range")
    rows = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    one_line_error(lambda: Data(x, rows, labels=[0, 1, 2, 2, 1, 1]), "data.labels[5]",
                   "disagrees")
    one_line_error(lambda: Data(x, rows, labels=[0, 1, 2]), "data.labels", "shape")
    one_line_error(lambda: Data(x, rows, x[:2], labels_test=[0, 1]), "data.labels_test",
                   "data.y_test")


def test_labels_with_a_scalar_target_are_not_cross_entropy_targets(x):
    data = Data(x, [-1, 1, 1, -1, 1, -1], labels=[0, 1, 1, 0, 1, 0])
    one_line_error(lambda: ce_spec(data), "data.labels", "mse")


def test_accuracy_of_scalar_and_vector_outputs(x):
    data = Data(x, [-1, 1, 1, -1, 1, -1], labels=[0, 1, 1, 0, 1, 0])
    f = np.array([[-0.1, 0.2, 0.3, -0.4, 0.5, -0.6],    # all right
                  [0.1, 0.2, 0.3, -0.4, -0.5, -0.6]])   # two wrong
    np.testing.assert_array_equal(data.accuracy(f), [1.0, 4 / 6])
    rows = np.eye(3)[[0, 1, 2, 2, 1, 0]]
    data = Data(x, rows, labels=[0, 1, 2, 2, 1, 0])
    np.testing.assert_array_equal(data.accuracy(rows), 1.0)
    np.testing.assert_array_equal(data.accuracy(np.roll(rows, 1, axis=1)), 0.0)
    one_line_error(lambda: Data(x, rows).accuracy(rows), "data.labels")


# --- spec files --------------------------------------------------------------------------------

def table(**data):
    return {"architecture": {"hidden_layers": 1, "activation": "tanh"},
            "data": {"x_train": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], **data},
            "training": {"times": [0.0, 1.0], "loss": "cross_entropy"}}


def test_spec_file_labels_and_rows():
    spec = spec_from_dict(table(y_train=[0, 1, 2]))
    np.testing.assert_array_equal(spec.data.y_train, np.eye(3))
    spec = spec_from_dict(table(y_train=[[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]]))
    assert spec.data.num_outputs == 2 and spec.data.labels is None
    one_line_error(lambda: spec_from_dict(table(y_train=[0, 1, 1.5])), "data.y_train[2]")
    one_line_error(lambda: spec_from_dict(table(y_train=[[0.2, 0.7], [1.0, 0.0], [0.5, 0.5]])),
                   "data.y_train[0]", "sums to")
