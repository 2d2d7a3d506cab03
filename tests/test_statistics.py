"""Ensemble statistics of `dmft sample`: the standard error of a variance, and the comparison of
uncentred NTK-parameterized networks with the lazy limit."""

import numpy as np
import pytest

from dmft import InputError
from dmft.sampler._predictions import (
    KURTOSIS_SEEDS,
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


@pytest.mark.parametrize("seeds", [2, 3])
def test_variance_error_below_four_seeds_is_the_gaussian_one(seeds):
    assert MIN_VARIANCE_SEEDS <= seeds < KURTOSIS_SEEDS
    rng = np.random.default_rng(200 + seeds)
    sigma = rng.uniform(0.3, 3.0)
    values = rng.normal(0.0, sigma, (seeds, REPLICAS))
    var, var_of_var = variance_of_variance(values)
    np.testing.assert_allclose(var_of_var, 2 * var**2 / (seeds + 1), rtol=1e-14)  # round-off
    assert np.all(var_of_var[var > 0] > 0)
    # unbiased for Gaussian members: E[2s⁴/(S+1)] = 2σ⁴/(S−1). At S = 2, s⁴ ∝ (χ²_1)² has
    # relative sd √96/3 ≈ 3.3 per estimate, 0.73 % for the mean of 2e5: 5 % is ~7 of those
    ratio = var_of_var.mean() / (2 * sigma**4 / (seeds - 1))
    assert abs(ratio - 1) < 0.05, ratio


def test_one_seed_has_no_variance_error_and_names_the_flag():
    assert MIN_VARIANCE_SEEDS == 2
    with pytest.raises(InputError, match="--seeds"):
        variance_with_error(np.arange(2.0).reshape(1, 2))


def test_predictions_refuse_too_few_seeds_before_any_work():
    class _Samples:  # predict_corrections must look at nothing but the seeds before refusing
        seeds = (0,)

    with pytest.raises(InputError, match="--seeds.*--no-predictions"):
        predict_corrections(None, _Samples())


# ---------------------------------------------------------------------------------------------
# uncentred NTK-parameterized networks against the lazy limit


@pytest.fixture(scope="module")
def lazy_spec():
    from dmft import Architecture, Spec, Training
    from dmft.spec import teacher_data

    return Spec(Architecture(1, "erf", "ntk", sigma_w=1.5, sigma_b=0.2),
                teacher_data(num_train=6, num_test=3, input_dim=4, seed=3),
                Training((0.0, 0.5, 2.0, 8.0)))


@pytest.fixture(scope="module")
def uncentred(lazy_spec):
    from dmft.sampler import compare, sample

    samples = sample(lazy_spec, [32, 512], 12)
    return samples, compare(samples, lazy_spec)


def test_control_variates_at_t0_are_exact(lazy_spec, uncentred):
    samples, comparison = uncentred
    arch, data = lazy_spec.architecture, lazy_spec.data
    for width in samples.widths:
        member = samples[width]
        stats = comparison.stats
        # f_cv(0) = f(0) − I f(0) = 0 and f*_cv(0) = f*(0) − f*(0) = 0 up to round-off
        np.testing.assert_allclose(stats["f_train_cv"][width]["mean"][0], 0.0, atol=1e-12)
        np.testing.assert_allclose(stats["f_test_cv"][width]["mean"][0], 0.0, atol=1e-12)
        # 𝓛_cv(0) = E(q_0 | hidden) = (|y|² + tr C)/2P, C = σ_w² Φ̂^L(0) + σ_b², per network
        cov_trace = np.trace(arch.sigma_w**2 * member["phi"][:, 0, -1], axis1=1, axis2=2) \
            + data.num_train * arch.sigma_b**2
        expected = (data.y_train @ data.y_train + cov_trace) / (2 * data.num_train)
        np.testing.assert_allclose(stats["loss_train_cv"][width]["mean"][0], expected.mean(),
                                   rtol=1e-12)  # round-off only


def test_control_variates_converge_where_raw_uncentred_observables_do_not(uncentred):
    samples, comparison = uncentred
    summary = comparison.summary
    small, large = samples.widths
    ratio = large / small  # 16: one network's deviation shrinks by √16 = 4 where it converges
    for name in ("f_train_cv", "f_test_cv", "loss_train_cv"):
        rms = summary[name]["member_rms"]
        # O(1/√N): 4× closer; 2.5× leaves room for the 12-seed scatter of each RMS (~20 %)
        assert rms[1] < rms[0] / 2.5, (name, rms)
    for name in ("f_train", "f_test", "loss_train"):
        rms = summary[name]["member_rms"]
        # random f(0) ~ N(0, Σ^{L+1}): one network stays O(1) away at every width (ratio ≈ 1;
        # 1.6 is far from the 4 of a converging observable, and beyond the 12-seed scatter)
        assert rms[1] > rms[0] / 1.6, (name, rms)
        # the control variate takes out the O(1) seed noise: the ensemble mean's standard error
        # at N = 512 drops by ~√N·O(1); a factor 4 is the least a working variate gives here
        assert summary[f"{name}_cv"]["noise"][1] < summary[name]["noise"][1] / 4, name
    assert ratio == 16


def test_control_variate_means_agree_with_the_lazy_limit(uncentred):
    samples, comparison = uncentred
    for name in ("f_train_cv", "f_test_cv", "loss_train_cv"):
        stats = comparison.stats[name][512]
        # unbiased for E f(t), E 𝓛(t): 5 standard errors (12 seeds) plus the O(1/N) bias
        # (prefactor O(1): 2/512)
        assert np.all(np.abs(stats["deviation"]) < 5 * stats["stderr"] + 2.0 / 512), (
            name, stats["deviation"], stats["stderr"])


def test_report_table_says_what_each_fit_is_about(uncentred):
    from dmft.sampler import report_table

    _, comparison = uncentred
    table = report_table(comparison)
    for name in ("loss_train", "loss_train_cv", "f_train_cv", "ntk", "phi_L1"):
        assert f"  {name} " in table
    assert "one network does not converge" in comparison.quantities["f_train"]
    assert "f_train_cv" in comparison.quantities["f_train"]
    assert "1/sqrt(N)" in comparison.quantities["f_train_cv"]
    assert "eq:lazy-variance" in comparison.quantities["loss_train_cv"]


def test_centred_or_mup_samples_get_no_control_variates(lazy_spec, uncentred):
    from dmft.sampler._compare import _control_variates

    samples, comparison = uncentred
    centred = type(samples)(t=samples.t, widths=samples.widths, seeds=samples.seeds,
                            members=samples.members, diagnostics={"centered": True})
    assert _control_variates(centred, lazy_spec, comparison.limit) == ({}, "")
    late = type(samples)(t=samples.t[1:] , widths=samples.widths, seeds=samples.seeds,
                         members=samples.members, diagnostics={})
    cv, note = _control_variates(late, lazy_spec, comparison.limit)
    assert cv == {} and "t = 0" in note


def test_compare_bad_input_is_an_input_error_not_a_bare_value_error(lazy_spec, uncentred):
    from dmft.sampler import compare, fit_inverse_width

    samples, comparison = uncentred
    bad = dict(comparison.limit)
    bad["ntk"] = np.zeros((2, 2))
    with pytest.raises(InputError, match="ntk"):
        compare(samples, lazy_spec, limit=bad, limit_note="given")
    for args in (([64, 64], np.zeros((2, 3))), ([64, 128], np.zeros((3, 3))),
                 ([0, 128], np.zeros((2, 3))), (["a", "b"], np.zeros((2, 3)))):
        with pytest.raises(InputError) as error:
            fit_inverse_width(*args)
        assert "\n" not in str(error.value)  # one line
    with pytest.raises(InputError, match="standard error"):
        fit_inverse_width([64, 128], np.zeros((2, 3)), np.ones((2, 4)))
