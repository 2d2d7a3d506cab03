"""Ensemble statistics of `dmft sample`: the standard error of a variance, and the comparison of
uncentred NTK-parameterized networks with the lazy limit."""

import numpy as np
import pytest

from dmft import InputError
from dmft.sampler._predictions import (
    MIN_VARIANCE_SEEDS,
    predict_corrections,
    variance_of_variance,
    variance_with_error,
)

REPLICAS = 200_000  # independent ensembles per check, vectorised along axis 1


@pytest.mark.parametrize("seeds", [6, 8, 16, 40])
def test_variance_error_is_unbiased_for_gaussian_data(seeds):
    rng = np.random.default_rng(seeds)
    sigma = rng.uniform(0.3, 3.0)
    values = rng.normal(rng.normal(), sigma, (seeds, REPLICAS))
    var, var_of_var = variance_of_variance(values)
    exact = 2 * sigma**4 / (seeds - 1)  # (S−1)s²/σ² ~ χ²_{S−1}: Var s² = 2σ⁴/(S−1)
    # the empirical spread of s² over the replicas is the exact sampling distribution's
    spread = var.var()
    # Monte Carlo error of a variance over 2e5 replicas: ≈ sqrt(2 + kurtosis excess)/√R ≈ 1 %
    # for S = 6 (χ²_5 has excess kurtosis 12/5); 5 % is ≥ 5 of those standard errors
    assert abs(spread / exact - 1) < 0.05, (spread, exact)
    # E[V] = Var s² up to the floor's conservative bias (+2 % at S = 6, < 0.1 % from S = 8, by
    # simulation); the mean of 2e5 estimates has a relative Monte Carlo error under 0.5 %, so 4 %
    # covers the bias plus ≥ 4 standard errors
    assert abs(var_of_var.mean() / exact - 1) < 0.04, (var_of_var.mean(), exact)


@pytest.mark.parametrize("seeds", [4, 5])
def test_variance_error_is_conservative_for_few_gaussian_seeds(seeds):
    rng = np.random.default_rng(100 + seeds)
    sigma = rng.uniform(0.3, 3.0)
    values = rng.normal(0.0, sigma, (seeds, REPLICAS))
    _, var_of_var = variance_of_variance(values)
    exact = 2 * sigma**4 / (seeds - 1)
    ratio = var_of_var.mean() / exact
    # the floor 2U/(S(S−1)) replaces negative unbiased estimates: never below the truth (minus
    # 2 % Monte Carlo error of the mean over 2e5 heavy-tailed estimates), at most +23 % (S = 4)
    # and +7 % (S = 5) above it, as simulated; 1.3 leaves room for the Monte Carlo error
    assert 0.98 < ratio < 1.3, ratio


def test_variance_error_is_unbiased_for_skewed_data():
    # exponential(1): μ4 = 9, σ = 1, Var s² = 9/S − (S−3)/(S(S−1)) for any distribution
    rng = np.random.default_rng(7)
    seeds = 10
    values = rng.exponential(size=(seeds, REPLICAS))
    var, var_of_var = variance_of_variance(values)
    exact = 9 / seeds - (seeds - 3) / (seeds * (seeds - 1))
    # heavy tails: relative Monte Carlo error of both averages ≈ 2-3 %; 8 % is ≥ 3 of them
    assert abs(var.var() / exact - 1) < 0.08
    assert abs(var_of_var.mean() / exact - 1) < 0.08, (var_of_var.mean(), exact)


def test_variance_error_is_positive_for_any_nondegenerate_data():
    rng = np.random.default_rng(11)
    for seeds in (4, 5, 6, 9):
        for draw in (rng.normal, rng.standard_cauchy, lambda size: rng.integers(0, 2, size)):
            values = draw(size=(seeds, 5000)).astype(float)
            values = values[:, values.std(axis=0) > 0]  # non-degenerate ensembles only
            _, err = variance_with_error(values)
            assert np.all(err > 0), (seeds, err.min())
    # the cases where the unbiased estimate is ≤ 0: symmetric two-point data (m4 = m2²) ...
    _, err = variance_with_error(np.array([-1.0, 1.0, -1.0, 1.0]))
    assert err > 0
    # ... and one outlier, where the U-statistic of σ⁴ vanishes but s⁴ does not
    _, err = variance_with_error(np.array([0.0, 0.0, 0.0, 1.0]))
    assert err > 0
    # degenerate data: no spread, no error
    var, err = variance_with_error(np.full((5, 3), 2.5))
    np.testing.assert_array_equal(var, 0.0)
    np.testing.assert_array_equal(err, 0.0)


def test_variance_error_matches_closed_form_on_a_small_sample():
    values = np.array([0.3, -1.2, 2.0, 0.7, -0.4])
    S = len(values)
    d = values - values.mean()
    m2, m4 = np.mean(d**2), np.mean(d**4)
    # the unbiased combination of m4 and m2² (Stuart & Ord's moments of m2, m4), here positive
    expected = S / ((S - 2) * (S - 3)) * (m4 - (S * S - 3) / (S - 1) ** 2 * m2**2)
    assert expected > 0
    var, err = variance_with_error(values)
    np.testing.assert_allclose(var, values.var(ddof=1), rtol=1e-14)  # round-off only
    np.testing.assert_allclose(err, np.sqrt(expected), rtol=1e-12)  # round-off only


@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_too_few_seeds_for_a_variance_error_name_the_flag(seeds):
    assert seeds < MIN_VARIANCE_SEEDS
    with pytest.raises(InputError, match="--seeds"):
        variance_with_error(np.arange(seeds * 2.0).reshape(seeds, 2))


def test_predictions_refuse_too_few_seeds_before_any_work():
    class _Samples:  # predict_corrections must look at nothing but the seeds before refusing
        seeds = (0, 1, 2)

    with pytest.raises(InputError, match="--seeds.*--no-predictions"):
        predict_corrections(None, _Samples())
