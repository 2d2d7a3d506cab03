"""Property tests: every spec input is either a valid spec or a one-line InputError naming the key.

Each field of `Architecture`, `Data` and `Training` is drawn either from values that must be
accepted (in every Python / NumPy / JAX flavour) or from values that must be refused (wrong
types, NaN, inf, huge integers, booleans, complex numbers, nested lists, dicts, None, strings,
arrays of the wrong shape), and the outcome is checked against that label: accepted values must
give a spec whose fields are plain Python numbers (or float64 arrays) equal to the input, refused
ones an `InputError` whose single-line message names one of the refused keys. `spec_from_dict` is
fuzzed the same way from valid tables with one mutation each, and on entirely random dicts.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dmft import Architecture, Data, InputError, Training
from dmft.spec import spec_from_dict
from dmft.spec import MAX_HIDDEN_LAYERS

# Each property runs a few hundred cheap constructions: the whole file stays well under 20 s.
# database=None: no example database is written into the working tree.
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# An empty folder as the base of relative data paths, so that no random string names a file.
EMPTY_BASE = Path(tempfile.mkdtemp(prefix="dmft-fuzz-"))


class Valid:
    """A value that must be accepted, with the Python value it must be stored as."""

    def __init__(self, raw, stored):
        self.raw, self.stored = raw, stored

    def __repr__(self):
        return f"Valid({self.raw!r})"


class Bad:
    """A value that must be refused."""

    def __init__(self, raw):
        self.raw = raw

    def __repr__(self):
        return f"Bad({self.raw!r})"


def expect_outcome(call, bad_keys):
    """Run `call`; with no bad keys it must succeed, otherwise raise a one-line InputError that
    names one of `bad_keys`. Any other exception fails the test (it propagates)."""
    if not bad_keys:
        return call()
    try:
        result = call()
    except InputError as error:
        message = str(error)
        assert "\n" not in message, message
        assert any(key in message for key in bad_keys), (bad_keys, message)
        return None
    raise AssertionError(f"accepted although {bad_keys} are bad: {result!r}")


# --- values of every type ---------------------------------------------------------------------

# Text without NUL (a NUL in a data path has its own test, test_unusable_data_paths_are_input_errors
# below), from a code-point range that is cheap for Hypothesis to set up (full Unicode costs
# seconds) yet holds controls, whitespace, punctuation, accents and Greek.
CHARACTERS = st.characters(min_codepoint=1, max_codepoint=0x3FF)
TEXT = st.text(CHARACTERS, max_size=12)
HUGE_INTS = st.sampled_from([2**63, 2**64, 10**400, -(10**400), MAX_HIDDEN_LAYERS + 1])
NUMPY_SCALARS = st.one_of(
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.booleans().map(np.bool_),
    st.complex_numbers(allow_nan=True).map(np.complex128),
    TEXT.map(np.str_),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(), st.complex_numbers(),
    TEXT, st.binary(max_size=4), NUMPY_SCALARS, st.just(object()),
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, -0.0]),
)
SMALL_ARRAYS = st.one_of(
    hnp.arrays(
        dtype=st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(),
                        hnp.complex_number_dtypes()),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    ),
    st.lists(TEXT, max_size=3).map(np.array),  # string arrays
)
NESTED = st.recursive(
    st.one_of(SCALARS, SMALL_ARRAYS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(TEXT, inner, max_size=3),
    ),
    max_leaves=8,
)
# Values every field must survive; listed explicitly because Hypothesis draws the branches of
# NESTED unevenly (a boolean comes up in well under 1 % of its draws).
EDGE_VALUES = st.sampled_from([
    True, False, np.bool_(True), None, "", " ", "1", "1.0", "relu", b"1", 1j, 1 + 0j,
    np.complex64(1), math.nan, math.inf, -math.inf, np.float32("nan"), 0, -1, 0.0, -0.0, 1e-320,
    2**63, 10**400, -(10**400), MAX_HIDDEN_LAYERS + 1, [], [1.0], [[1.0]], (), {}, {"a": 1}, set(),
    np.array([]), np.array([1.0]), np.zeros((2, 2)), np.array(True), np.array(1j), np.array("a"),
    np.array([1.0, "a"], dtype=object), object(), range(3), (x for x in [1.0]),
])
ANY_VALUE = st.one_of(EDGE_VALUES, SCALARS, SMALL_ARRAYS, NESTED)


def _is_real_number(value) -> bool:
    """What the spec calls a number: a real, non-boolean Python / NumPy scalar or 0-d array."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iuf"
    if isinstance(value, (bool, np.bool_, complex, np.complexfloating)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating))


def _as_float(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def field(label, valid, near_misses):
    """(plain, full) strategies for one field, labelled Valid / Bad by `label`.

    plain: the `valid` flavours (labelled all the same, as a check of the label);
    full: those, near misses (a negative, a float for an integer), the edge values and random
    nested values of every type.
    """
    full = st.one_of(valid, near_misses, near_misses, EDGE_VALUES, ANY_VALUE)
    return valid.map(label), full.map(label)


def real_parameter(allow_zero: bool = False, allow_none: bool = False):
    """A sigma_w / gamma0 (> 0), sigma_b (allow_zero) or residual_scale (allow_none) value."""

    def label(raw):
        if raw is None and allow_none:
            return Valid(raw, None)
        if not _is_real_number(raw):
            return Bad(raw)
        number = _as_float(raw)
        ok = math.isfinite(number) and (number > 0 or (allow_zero and number == 0))
        return Valid(raw, number) if ok else Bad(raw)

    valid = st.one_of(
        st.floats(min_value=1e-3, max_value=1e6),
        st.floats(min_value=1e-3, max_value=1e6).map(np.float32),
        st.floats(min_value=1e-3, max_value=1e6).map(np.float64),
        st.floats(min_value=1e-3, max_value=10).map(np.float16),
        st.floats(min_value=1e-3, max_value=1e6).map(np.array),
        st.integers(1, 1000),
        st.integers(1, 1000).map(np.int32),
        st.sampled_from([1.0, 0.0] if allow_zero else [1.0]),  # the defaults
    )
    near_misses = st.one_of(
        st.floats(min_value=-2, max_value=2),
        st.floats(min_value=-2, max_value=2).map(np.float32),
        st.integers(-3, 0),
        st.sampled_from([0.0, -0.0, -1e-300, 1e-320, np.float32(1e-30) ** 2]),
    )
    return field(label, valid, near_misses)


def layer_count():
    def label(raw):
        ok = (not isinstance(raw, (bool, np.bool_)) and isinstance(raw, (int, np.integer))
              or isinstance(raw, np.ndarray) and raw.ndim == 0 and raw.dtype.kind in "iu")
        if ok and 1 <= int(raw) <= MAX_HIDDEN_LAYERS:
            return Valid(raw, int(raw))
        return Bad(raw)

    valid = st.one_of(
        st.integers(1, 5), st.integers(1, MAX_HIDDEN_LAYERS),
        st.integers(1, 127).map(np.int8), st.integers(1, 2**16 - 1).map(np.uint16),
        st.integers(1, 2**31 - 1).map(np.int64), st.integers(1, 9).map(np.array),
    )
    near_misses = st.one_of(
        st.integers(-3, 0), st.floats(1, 10), st.integers(1, 5).map(float),
        st.sampled_from([True, np.bool_(True), MAX_HIDDEN_LAYERS + 1, 2**64, np.float64(2.0),
                         np.array([2]), "2"]),
    )
    return field(label, valid, near_misses)


def text_field(allowed=None):
    def label(raw):
        if isinstance(raw, str) and (raw in allowed if allowed else raw.strip() != ""):
            return Valid(raw, str(raw))
        return Bad(raw)

    good = st.sampled_from(allowed) if allowed else st.text(CHARACTERS, min_size=1, max_size=20)
    near_misses = st.one_of(st.text(CHARACTERS, max_size=4), st.sampled_from(
        ["", "  ", "NTK", "mup ", b"ntk", None]))
    return field(label, st.one_of(good, good.map(np.str_)), near_misses)


# key: (plain values, mostly valid; values of every type), each labelled Valid or Bad
ARCHITECTURE_FIELDS = {
    "hidden_layers": layer_count(),
    "activation": text_field(),
    "parameterization": text_field(("ntk", "mup")),
    "sigma_w": real_parameter(),
    "sigma_b": real_parameter(allow_zero=True),
    "gamma0": real_parameter(),
    "residual_scale": real_parameter(allow_none=True),
}


@settings(FUZZ, max_examples=400)  # cheap examples; one bad field of many needs many draws
@given(st.data())
def test_architecture_fuzz(data):
    # Some optional fields, all plain (valid) but one drawn from values of every type, so that
    # each bad value meets an otherwise valid architecture (and a wrong refusal is caught).
    keys = ["hidden_layers", *sorted(data.draw(st.sets(st.sampled_from(
        [key for key in ARCHITECTURE_FIELDS if key != "hidden_layers"]))))]
    free = data.draw(st.sampled_from(keys))
    fields = {key: data.draw(ARCHITECTURE_FIELDS[key][key == free], label=key) for key in keys}
    bad = [f"architecture.{key}" for key, value in fields.items() if isinstance(value, Bad)]
    stored = {key: value.stored for key, value in fields.items() if isinstance(value, Valid)}
    if not bad and stored.get("parameterization") == "mup" and (
            stored.get("sigma_w", 1.0) != 1.0 or stored.get("sigma_b", 0.0) != 0.0):
        bad = ["architecture.sigma_w"]  # valid values, but not for a "mup" network
    arch = expect_outcome(lambda: Architecture(**{k: v.raw for k, v in fields.items()}), bad)
    if arch is None:
        return
    for key, value in stored.items():
        assert getattr(arch, key) == value
        assert type(getattr(arch, key)) is type(value)  # NumPy scalars are stored as Python ones
    assert Architecture(**stored) == arch


# --- Training ---------------------------------------------------------------------------------

def _times_label(raw):
    """Valid iff raw is a non-empty 1-D list/tuple/array of finite reals, >= 0, increasing."""
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1 or raw.dtype.kind not in "iufO":
            return Bad(raw)
        items = list(raw)
    elif isinstance(raw, (list, tuple, range)):
        items = list(raw)
    else:
        return Bad(raw)
    if not items or not all(_is_real_number(t) for t in items):
        return Bad(raw)
    times = tuple(_as_float(t) for t in items)
    if all(math.isfinite(t) and t >= 0 for t in times) and all(
            b > a for a, b in zip(times, times[1:])):
        return Valid(raw, times)
    return Bad(raw)


INCREASING = st.lists(st.floats(0, 1e6), min_size=1, max_size=8, unique=True).map(sorted)
TIMES = st.one_of(
    INCREASING,
    INCREASING.map(tuple),
    INCREASING.map(np.array),
    INCREASING.map(lambda t: np.array(t, dtype=np.float32)),
    INCREASING.map(lambda t: [np.float32(v) for v in t]),
    INCREASING.map(lambda t: np.array(t, dtype=object)),
    st.integers(1, 6).map(range),
    st.lists(st.floats(), max_size=5),  # NaN, inf, negative, unsorted
    st.lists(st.one_of(st.floats(0, 10), EDGE_VALUES), min_size=1, max_size=4),
    st.lists(st.one_of(st.floats(0, 10), SCALARS), min_size=1, max_size=4),
    INCREASING.map(lambda t: [-min(t[0], 0.5) - 1e-300, *t]),  # slightly negative start
    INCREASING.map(lambda t: [*t, t[-1]]),  # a repeated time
    EDGE_VALUES,
    SMALL_ARRAYS,
    ANY_VALUE,
).map(_times_label)


@FUZZ
@given(TIMES)
def test_training_fuzz(times):
    bad = ["training.times"] if isinstance(times, Bad) else []
    training = expect_outcome(lambda: Training(times=times.raw), bad)
    if training is not None:
        assert training.times == times.stored
        assert all(type(t) is float for t in training.times)


# --- Data -------------------------------------------------------------------------------------

REAL_DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint32])


@st.composite
def data_fields(draw):
    """x_train (P, D), y_train (P,) or (P, 1), optional test set; each maybe corrupted.

    Returns the fields, the keys corrupted on purpose (which must be refused), and the keys
    replaced by a value of any type (whose outcome only has to be a spec or a one-line error).
    """
    P = draw(st.integers(1, 5))
    D = draw(st.integers(1, 4))
    P_test = draw(st.integers(0, 3))
    shapes = {"x_train": (P, D), "y_train": draw(st.sampled_from([(P,), (P, 1)])),
              "x_test": (P_test, D), "y_test": draw(st.sampled_from([(P_test,), (P_test, 1)]))}
    present = {"x_train", "y_train"} | set(draw(st.sampled_from(
        [(), ("x_test",), ("x_test", "y_test")])))
    fields, bad, wild = {}, [], []
    for key in sorted(present):
        shape = shapes[key]
        dtype = draw(REAL_DTYPES)
        values = draw(hnp.arrays(dtype, shape, elements={"min_value": -100, "max_value": 100}
                                 if np.dtype(dtype).kind == "f" else None))
        # Nested lists lose the shape (0, D) of an empty test set: keep those as arrays.
        flavours = ["array", "object"] + (["list"] if values.size else [])
        flavour = draw(st.sampled_from(flavours))
        raw = {"array": values, "list": values.tolist(), "object": values.astype(object)}[flavour]
        corruptions = [None] * 6 + ["complex", "bool", "shape", "ragged", "string", "any"]
        if values.size:
            corruptions.append("nan")
        if key.endswith("train"):
            corruptions.append("none")  # a missing test set is None, and fine
        corruption = draw(st.sampled_from(corruptions))
        if corruption == "complex":
            raw = values + 1j * draw(st.sampled_from([0.0, 1.0]))
        elif corruption == "bool":
            raw = values > 0
        elif corruption == "nan":
            raw = values.astype(np.float64)
            raw.flat[draw(st.integers(0, values.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf]))
        elif corruption == "shape":
            raw = {"x_train": values.reshape(-1), "x_test": np.zeros((2, D + 1)),
                   "y_train": np.zeros(P + 1), "y_test": np.zeros(P_test + 1)}[key]
        elif corruption == "ragged":
            raw = ([[1.0] * (D + 1), [1.0] * D] if key.startswith("x") else [[1.0, 2.0], [1.0]])
        elif corruption == "none":
            raw = None
        elif corruption == "string":
            raw = draw(st.sampled_from(["x.npy", "1.0", ""]))
        elif corruption == "any":
            raw = draw(ANY_VALUE)
        fields[key] = raw
        if corruption == "any":
            wild.append(key)
        elif corruption is not None:
            bad.append(f"data.{key}")
    return fields, bad, wild, shapes


@FUZZ
@given(data_fields())
def test_data_fuzz(case):
    fields, bad, wild, shapes = case
    try:
        data = Data(**fields)
    except InputError as error:
        message = str(error)
        assert "\n" not in message, message
        named = re.findall(r"data\.(x_train|y_train|x_test|y_test)", message)
        assert named, message
        if bad:  # some field was corrupted on purpose: the message names one of those (or one
            # replaced by a random value, which may be checked first)
            culprits = set(bad) | {f"data.{key}" for key in wild}
            assert any(f"data.{key}" in culprits for key in named), (bad, wild, message)
        return
    assert not bad, f"accepted although {bad} are bad"
    for key in ("x_train", "y_train", "x_test", "y_test"):
        array = getattr(data, key)
        if fields.get(key) is None:
            assert array is None
            continue
        assert array.dtype == np.float64 and np.all(np.isfinite(array))
        expected = np.asarray(fields[key], dtype=np.float64)
        np.testing.assert_array_equal(array, expected.reshape(array.shape))  # a cast, exact
        if key not in wild:
            assert array.shape == shapes[key][:1] + shapes[key][1:2] * key.startswith("x")


# --- spec_from_dict ---------------------------------------------------------------------------

def valid_table():
    return {
        "architecture": {"hidden_layers": 2, "activation": "tanh", "parameterization": "ntk",
                         "sigma_w": 1.5, "sigma_b": 0.1},
        "data": {"x_train": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], "y_train": [1.0, -1.0, 0.5],
                 "x_test": [[0.5, 0.5]], "y_test": [0.0]},
        "training": {"times": [0.0, 0.5, 1.0]},
        "solver": {"method": "closed_form"},
    }


KEYS = [(table, key) for table, keys in valid_table().items() for key in keys] + [
    ("architecture", "gamma0"), ("architecture", "residual_scale"), ("training", "extra"),
    ("data", "x_val"), ("architecture", "depth")]
PATH_LIKE_TEXT = st.text(st.one_of(CHARACTERS, st.sampled_from("/.\\~")), max_size=40)


@st.composite
def mutated_tables(draw):
    """A valid spec table with one mutation, and the names the error message may give."""
    table = valid_table()
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "table", "new_table"]))
    if kind == "table":
        name = draw(st.sampled_from(list(table) + ["sampler"]))
        table[name] = draw(ANY_VALUE)
        return table, [name]
    if kind == "new_table":
        name = draw(st.text(CHARACTERS, max_size=10))
        table[name] = draw(st.one_of(st.dictionaries(st.text(CHARACTERS, max_size=5), ANY_VALUE), ANY_VALUE))
        return table, [name, "spec"]
    name, key = draw(st.sampled_from(KEYS))
    if kind == "delete":
        table[name].pop(key, None)
        return table, [f"{name}.{key}", "data.y_test"] if key == "x_test" else [f"{name}.{key}"]
    value = draw(st.one_of(ANY_VALUE, PATH_LIKE_TEXT, st.floats(), HUGE_INTS))
    table[name][key] = value
    names = [f"{name}.{key}"]
    if name == "data":  # a shape mismatch may be reported on the partner key, with this one
        names = [f"data.{key}"]
    if name == "architecture" and key == "parameterization":
        names.append("architecture.sigma_w")  # "mup" with the table's sigma_w = 1.5
    return table, names


def _one_line_input_error(call):
    try:
        return call(), None
    except InputError as error:
        message = str(error)
        assert "\n" not in message, message
        return None, message


@FUZZ
@given(mutated_tables())
def test_spec_from_dict_fuzz_mutations(case):
    table, names = case
    spec, message = _one_line_input_error(lambda: spec_from_dict(table, base=EMPTY_BASE))
    if message is not None:
        assert any(" ".join(name.split()) in message for name in names), (names, message)
        return
    # A spec came back: only mutations that keep the table valid may do that.
    assert spec.architecture.hidden_layers >= 1
    assert spec.data.x_train.shape == (3, 2) and spec.data.y_train.shape == (3,)
    assert all(b > a for a, b in zip(spec.training.times, spec.training.times[1:]))


RANDOM_TABLE = st.dictionaries(
    st.one_of(st.sampled_from(["architecture", "data", "training", "solver", "sampler"]),
              st.text(CHARACTERS, max_size=8)),
    st.one_of(
        st.dictionaries(
            st.one_of(st.sampled_from(sorted({key for _, key in KEYS})), st.text(CHARACTERS, max_size=8)),
            st.one_of(ANY_VALUE, PATH_LIKE_TEXT), max_size=5),
        ANY_VALUE,
    ),
    max_size=5,
)
TABLE_NAMES = ("architecture", "data", "training", "solver", "sampler", "spec")


@settings(FUZZ, max_examples=100)  # big nested values: the slowest to generate
@given(RANDOM_TABLE)
def test_spec_from_dict_fuzz_random_dicts(table):
    spec, message = _one_line_input_error(lambda: spec_from_dict(table, base=EMPTY_BASE))
    if message is not None:
        assert any(name in message for name in TABLE_NAMES), message
        return
    assert spec.data.x_train.ndim == 2  # only a complete, valid table gives a spec


# --- TOML loader edges: unusable data paths, a spec that is not a table ----------------------

@pytest.mark.parametrize(
    "path", ["a\x00b.npy", "x" * 300 + ".npy"],
    ids=["null byte", "name too long"],
)
def test_unusable_data_paths_are_input_errors(path):
    table = valid_table()
    table["data"]["x_train"] = path
    with pytest.raises(InputError, match="data.x_train"):
        spec_from_dict(table, base=EMPTY_BASE)


@pytest.mark.parametrize("table", [[], None, "architecture", 3])
def test_a_spec_that_is_not_a_table_is_an_input_error(table):
    with pytest.raises(InputError, match="spec"):
        spec_from_dict(table)
