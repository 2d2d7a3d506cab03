"""Shared test set-up: float64 everywhere, headless plotting, no progress bars, small fixtures."""

import contextlib
import gc
import io
import os
import subprocess

os.environ.setdefault("DMFT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dmft import InputError  # noqa: E402

jax.config.update("jax_enable_x64", True)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    The default suite compiles thousands of distinct programs in one process; keeping them all
    grew the process past 6 GB and crashed XLA's CPU compiler (a segfault in
    ``backend_compile_and_load``) three quarters of the way through. No test relies on a
    program compiled by another module, so clearing costs only recompiles of shared helpers.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def nt_reference():
    """neural-tangents 0.6.5 reference kernels and lazy curves (../shared/reference)."""
    path = os.path.join(REFERENCE_DIR, "neural_tangents_public.npz")
    if not os.path.exists(path):
        pytest.skip("shared/reference/neural_tangents_public.npz not available")
    return dict(np.load(path))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def one_line_error(build, *names):
    """The InputError of `build`: one line that names every one of `names`."""
    with pytest.raises(InputError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    return message


def run_dmft(*args) -> subprocess.CompletedProcess:
    """``dmft ARGS`` run in this process, without an interpreter's start-up: its exit code, stdout
    and stderr. An exception that escapes the command line propagates (it would be a traceback)."""
    from dmft.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code if isinstance(exit.code, int) else 1
    return subprocess.CompletedProcess(["dmft", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())
