"""The Python API takes what NumPy / JAX users pass and rejects the rest with one-line InputErrors.

Scalars may be Python, NumPy or 0-d NumPy / JAX arrays and are stored as Python int / float;
times may be any 1-D list or array of real numbers; data may be any real numeric array-like.
Booleans are never numbers (a mask or a flag passed by mistake), complex values are never
truncated to their real part, and every refusal is one line that names the key.
"""

import fractions
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmft import Architecture, Data, InputError, Spec, Training
from dmft.spec import teacher_data
from dmft._errors import SolveError
from dmft._precision import require_float64
from dmft.spec import MAX_HIDDEN_LAYERS


def one_line_error(call, key):
    """Run `call`, expecting an InputError whose message is one line naming `key`."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert key in message, message
    return message


@pytest.fixture
def xy(rng):
    return rng.standard_normal((4, 3)), rng.standard_normal(4)


# --- Architecture: NumPy scalars in, Python numbers out ---------------------------------------

@pytest.mark.parametrize("layers", [np.int64(2), np.int32(2), np.uint8(2), np.array(2), jnp.array(2)])
def test_hidden_layers_accepts_numpy_and_jax_integers(layers):
    arch = Architecture(hidden_layers=layers)
    assert arch.hidden_layers == 2 and type(arch.hidden_layers) is int
    assert arch == Architecture(2)  # equal to (and hashes like) the plain-int spec
    assert hash(arch) == hash(Architecture(2))


@pytest.mark.parametrize(
    "value", [np.float32(0.5), np.float64(0.5), np.float16(0.5), np.array(0.5), jnp.array(0.5),
              fractions.Fraction(1, 2), np.int64(1)],
)
def test_real_parameters_accept_numpy_scalars_and_store_python_floats(value):
    arch = Architecture(hidden_layers=2, parameterization="mup", gamma0=value, residual_scale=value)
    ntk = Architecture(hidden_layers=2, sigma_w=value, sigma_b=value)
    for number in (arch.gamma0, arch.residual_scale, ntk.sigma_w, ntk.sigma_b):
        assert type(number) is float
        assert number == float(value)  # 0.5 and 1 are exact in every float width


def test_the_brief_example():
    arch = Architecture(hidden_layers=np.int64(2), gamma0=np.float32(0.5), parameterization="mup")
    assert (arch.hidden_layers, arch.gamma0) == (2, 0.5)
    assert type(arch.hidden_layers) is int and type(arch.gamma0) is float


def test_string_fields_accept_numpy_strings():
    arch = Architecture(2, activation=np.str_("tanh"), parameterization=np.str_("mup"))
    assert type(arch.activation) is str and type(arch.parameterization) is str


@pytest.mark.parametrize(
    "value", [True, np.bool_(True), 2.0, np.float64(2.0), "2", None, [2], np.array([2]), 2 + 0j, 0,
              -3, MAX_HIDDEN_LAYERS + 1, 10**400],
)
def test_bad_hidden_layers_name_the_key(value):
    one_line_error(lambda: Architecture(hidden_layers=value), "architecture.hidden_layers")


def test_any_depth_up_to_the_bound_is_a_valid_spec():
    assert Architecture(100_000).hidden_layers == 100_000  # a spec is cheap; solvers judge cost
    assert Architecture(MAX_HIDDEN_LAYERS).depth == MAX_HIDDEN_LAYERS + 1
    message = one_line_error(lambda: Architecture(MAX_HIDDEN_LAYERS + 1), "architecture.hidden_layers")
    assert "absurd" in message and str(MAX_HIDDEN_LAYERS) in message


@pytest.mark.parametrize("key", ["sigma_w", "sigma_b", "gamma0", "residual_scale"])
@pytest.mark.parametrize(
    "value", [True, np.bool_(False), 1 + 2j, np.complex128(1), "1.0", None, [1.0], np.array([1.0]),
              float("nan"), np.float32("inf"), -np.inf, 10**400, {"a": 1}],
)
def test_bad_real_parameters_name_the_key(key, value):
    if key == "residual_scale" and value is None:
        assert Architecture(hidden_layers=2, residual_scale=None).residual_scale is None  # default
        return
    one_line_error(lambda: Architecture(hidden_layers=2, **{key: value}), f"architecture.{key}")


@pytest.mark.parametrize(
    "key, value", [("activation", 3), ("activation", "  "), ("activation", b"relu"),
                   ("activation", None), ("parameterization", "NTK"),
                   ("parameterization", np.array(["ntk", "mup"])), ("parameterization", None)],
)
def test_bad_string_fields_name_the_key(key, value):
    one_line_error(lambda: Architecture(hidden_layers=2, **{key: value}), f"architecture.{key}")


def test_mup_with_ntk_weights_names_every_key_involved():
    message = one_line_error(lambda: Architecture(2, parameterization="mup", sigma_w=np.float32(2)),
                             "architecture.sigma_w")
    assert "architecture.sigma_b" in message and "architecture.parameterization" in message


# --- Training ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "times", [np.linspace(0, 1, 5), jnp.linspace(0, 1, 5), np.linspace(0, 1, 5).astype(np.float32),
              [0, 0.25, 0.5, 0.75, 1], tuple(np.linspace(0, 1, 5)), np.array([0, 0.25, 0.5, 0.75, 1],
              dtype=object)],
)
def test_times_accept_any_1d_array_like_of_numbers(times):
    training = Training(times=times)
    assert training.times == (0.0, 0.25, 0.5, 0.75, 1.0)  # all exact in float32 as well
    assert all(type(t) is float for t in training.times)


def test_times_accept_ranges_and_integer_arrays():
    assert Training(range(3)).times == (0.0, 1.0, 2.0)
    assert Training(np.arange(3, dtype=np.uint16)).times == (0.0, 1.0, 2.0)


@pytest.mark.parametrize(
    "times, message",
    [
        (np.zeros((2, 2)), "1-D"),
        ([[0.0, 1.0]], r"training.times\[0\] must be a real number"),
        ("0 1 2", "1-D list"),
        (b"01", "1-D list"),
        (1.0, "1-D list"),
        (np.float64(1.0), "1-D list"),
        (None, "1-D list"),
        ({0.0, 1.0}, "1-D list"),  # a set has no order
        ({"t": 1.0}, "1-D list"),
        ((t for t in [0.0, 1.0]), "1-D list"),
        (np.array([], dtype=float), "empty"),
        ([0.0, float("nan")], r"training.times\[1\] must be finite"),
        (np.array([0.0, np.inf]), r"training.times\[1\] must be finite"),
        ([0.0, 10**400], r"training.times\[1\] must be finite"),
        (np.array([-1.0, 0.0]), r"training.times\[0\] = -1.0"),
        (np.array([0.0, 2.0, 1.0]), r"strictly increasing.*training.times\[2\] = 1.0"),
        ([0.0, 1.0, 1.0], "strictly increasing"),
        ([0.0, True], r"training.times\[1\] must be a real number"),
        (np.array([False, True]), "booleans"),
        (np.array([0.0, 1.0 + 1.0j]), "complex"),
        ([0.0, 1j], r"training.times\[1\] must be a real number"),
        (np.array(["0", "1"]), "strings"),
        (["0", "1"], r"training.times\[0\] must be a real number"),
    ],
)
def test_bad_times_are_one_line_errors(times, message):
    text = one_line_error(lambda: Training(times=times), "training.times")
    assert re.search(message, text), text


def with_last(array, value):
    """`array` as nested Python lists with its last element replaced by `value`."""
    objects = np.asarray(array, dtype=object).copy()
    objects.flat[-1] = value
    return objects.tolist()


# --- Data -------------------------------------------------------------------------------------

def test_data_accepts_numeric_array_likes_and_copies_them(xy):
    x, y = xy
    for cast in (np.float32, np.float16, np.int64, np.uint8):
        data = Data(x.astype(cast), y.astype(cast), x_test=x.astype(cast), y_test=y.astype(cast))
        for array, source in ((data.x_train, x), (data.y_train, y), (data.x_test, x), (data.y_test, y)):
            assert array.dtype == np.float64
            np.testing.assert_array_equal(array, source.astype(cast).astype(np.float64))
    data = Data(jnp.asarray(x), y.tolist(), x_test=x.tolist())
    np.testing.assert_array_equal(data.x_train, x)  # float64 round trip is exact
    original = x.copy()
    data = Data(x, y)
    x[0, 0] = 99.0  # a later change to the caller's array does not reach the spec
    assert data.x_train[0, 0] == original[0, 0]


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda a: a + 1j, "must be real, got complex"),
        (lambda a: a.astype(np.complex64), r"pass x.real"),  # zero imaginary part: say how
        (lambda a: a.astype(complex).tolist(), "complex"),
        (lambda a: with_last(a, 1j), "complex"),
        (lambda a: a > 0, "booleans"),
        (lambda a: a.astype(str), "strings"),
        (lambda a: with_last(a, None), "holds None"),
        (lambda a: with_last(a, "1.0"), "strings"),  # strings are not parsed as numbers
        (lambda a: a.astype(object), None),  # an object array of floats is fine
        (lambda a: np.where(a > 0, a, np.nan), "non-finite"),
        (lambda a: "file.npy", "file paths are read by"),
        (lambda a: {"a": 1}, "array of numbers"),
        (lambda a: a.tolist()[:-1] + [[1.0, 2.0, 3.0, 4.0, 5.0]], "ragged|holds"),  # 1-D: holds
        (lambda a: with_last(a, 10**400), "too large"),
        (lambda a: with_last(a, np.float32(1.5)), None),  # NumPy scalars inside lists are fine
    ],
)
def test_bad_data_values_are_one_line_errors(xy, key, corrupt, message):
    x, y = xy
    values = {"x_train": x, "y_train": y, "x_test": x[:2], "y_test": y[:2]}
    values[key] = corrupt(values[key])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. NumPy's ComplexWarning: nothing is dropped silently
        if message is None:
            assert Data(**values).num_train == 4
            return
        text = one_line_error(lambda: Data(**values), f"data.{key}")
    assert re.search(message, text), text


def test_python_complex_targets_are_refused_not_truncated(xy):
    x, _ = xy
    one_line_error(lambda: Data(x, [1.0, 2.0, 3.0, 4.0 + 0.5j]), "data.y_train")
    one_line_error(lambda: Data(x, [1.0, 2.0, 3.0, complex(4.0)]), "data.y_train")


@pytest.mark.parametrize("value", [None, 3.0, "x.npy", set(), object()])
def test_missing_or_scalar_inputs_name_the_key(xy, value):
    _, y = xy
    one_line_error(lambda: Data(value, y), "data.x_train")


def test_shape_mismatches_name_both_keys(xy):
    x, y = xy
    message = one_line_error(lambda: Data(x, y[:3]), "data.y_train")
    assert "data.x_train" in message
    message = one_line_error(lambda: Data(x, y, x_test=x, y_test=y[:3]), "data.y_test")
    assert "data.x_test" in message
    message = one_line_error(lambda: Data(x, y, x_test=x[:, :2]), "data.x_test")
    assert "data.x_train" in message


# --- Spec -------------------------------------------------------------------------------------

def test_spec_with_wrong_parts_says_what_it_expected(xy):
    x, y = xy
    expected = "Spec(architecture: Architecture, data: Data, training: Training"
    assert expected in one_line_error(lambda: Spec("a", "b"), "spec.architecture")
    assert expected in one_line_error(lambda: Spec(Architecture(2), (x, y)), "spec.data")
    message = one_line_error(lambda: Spec(Architecture(2), {"x_train": x, "y_train": y}), "spec.data")
    assert "dmft.Data(**table)" in message
    one_line_error(lambda: Spec(Architecture(2), Data(x, y), [0.0, 1.0]), "spec.training")
    one_line_error(lambda: Spec(Architecture(2), Data(x, y), solver=[("method", "ode")]), "spec.solver")
    one_line_error(lambda: Spec(Architecture(2), Data(x, y), sampler={1: 2}), "spec.sampler")
    one_line_error(lambda: Spec(Architecture(2), Data(x, y), source=3), "spec.source")
    spec = Spec(Architecture(2), Data(x, y), solver=None, source=pathlib.Path("a"))
    assert dict(spec.solver) == {} and spec.source == "a"
    one_line_error(lambda: spec.replace(training="0, 1"), "spec.training")


# --- errors and float64 -----------------------------------------------------------------------

def test_dmft_errors_are_one_line():
    assert str(InputError("data.x_train:\n  bad")) == "data.x_train: bad"
    assert str(SolveError("diverged\tat t = 1")) == "diverged at t = 1"


def test_require_float64_tells_how_to_switch_it_on():
    enabled = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        message = one_line_error(lambda: require_float64("dmft.solve"), "dmft.solve")
        assert 'jax.config.update("jax_enable_x64", True)' in message
        jax.config.update("jax_enable_x64", True)
        assert require_float64("dmft.solve") is None
    finally:
        jax.config.update("jax_enable_x64", enabled)
    assert jax.config.jax_enable_x64 == enabled


# --- the embedded teacher task ----------------------------------------------------------------

def test_teacher_data_takes_numpy_integers_and_refuses_bad_sizes():
    data = teacher_data(np.int64(6), np.int32(2), np.uint8(3), seed=np.int64(1))
    assert (data.num_train, data.num_test, data.input_dim) == (6, 2, 3)
    np.testing.assert_array_equal(data.x_train, teacher_data(6, 2, 3, seed=1).x_train)  # same draw
    for kwargs, key in [({"num_train": 0}, "num_train"), ({"num_test": -1}, "num_test"),
                        ({"input_dim": 2.0}, "input_dim"), ({"seed": -1}, "seed"),
                        ({"seed": True}, "seed"), ({"num_train": 10**6, "input_dim": 100}, "input_dim")]:
        one_line_error(lambda: teacher_data(**kwargs), key)
