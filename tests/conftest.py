"""Shared test set-up: float64 everywhere, headless plotting, no progress bars, small fixtures."""

import os

os.environ.setdefault("DMFT_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")


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
