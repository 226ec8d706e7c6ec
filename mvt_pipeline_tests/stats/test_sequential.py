"""sequential_ci / sequential_p_value vs the published formula and by simulation.

The formula is re-typed here in the paper's own form (Waudby-Smith et al., Thm 2.2:
``sigma_hat * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))``), the
property that matters (time-uniform coverage) is simulated with plain numpy two-sample
z-statistics, independent of the engine.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.stats import sequential_ci, sequential_p_value


def paper_half_width(sigma, t, alpha, t_star):
    rho2 = (-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / t_star
    return sigma * np.sqrt(2 * (t * rho2 + 1) / (t**2 * rho2) * np.log(np.sqrt(t * rho2 + 1) / alpha))


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_half_width_is_the_published_formula(alpha):
    sigma, t = 2.5, np.array([10.0, 1000.0, 5e4, 1e6])
    se = sigma / np.sqrt(t)
    lo, hi = sequential_ci(1.0, se, t, alpha=alpha, n_star=5e4)
    np.testing.assert_allclose((hi - lo) / 2, paper_half_width(sigma, t, alpha, 5e4), rtol=1e-12)
    np.testing.assert_allclose((hi + lo) / 2, 1.0)


def test_tuning_makes_the_cs_tightest_at_n_star():
    t = np.geomspace(100, 1e6, 2001)
    # width per unit of sigma/sqrt(t): minimised (over rho) at t = n_star; check across n_star
    for n_star in (1e3, 1e4, 1e5):
        here = paper_half_width(1.0, n_star, 0.05, n_star)
        others = [paper_half_width(1.0, n_star, 0.05, s) for s in (n_star / 3, n_star * 3)]
        assert here < min(others)
    multiplier = sequential_ci(0.0, 1.0, 5e4, n_star=5e4)[1]
    assert 3.0 < multiplier < 3.1  # ~3.04 SE at alpha 0.05, vs 1.96 for a fixed look
    assert np.all(np.diff(sequential_ci(0.0, 1 / np.sqrt(t), t, n_star=1e4)[1]) < 0)  # width shrinks


def test_fixed_method_is_the_z_interval_and_z_p_value():
    est, se = np.array([0.3, -1.0, 0.0]), np.array([0.1, 0.4, 0.2])
    lo, hi = sequential_ci(est, se, 100, method="fixed", alpha=0.1)
    z = stats.norm.ppf(0.95)
    np.testing.assert_allclose(lo, est - z * se)
    np.testing.assert_allclose(hi, est + z * se)
    np.testing.assert_allclose(sequential_p_value(est, se, 100, method="fixed"), 2 * stats.norm.sf(np.abs(est / se)))


def test_p_value_is_the_level_where_the_cs_touches_zero():
    """With rho fixed by (alpha=0.05, n_star), the CS at level p has half-width |estimate|."""
    est, se, n, n_star = np.array([0.31, -0.05, 0.5]), np.array([0.1, 0.1, 0.1]), np.array([4e3, 9e3, 2e4]), 1e4
    p = sequential_p_value(est, se, n, n_star=n_star)
    rho2 = (-2 * np.log(0.05) + np.log(-2 * np.log(0.05) + 1)) / n_star
    v = n * rho2
    half_at_p = se * np.sqrt(2 * (v + 1) / v * np.log(np.sqrt(v + 1) / p))
    small = p < 1
    np.testing.assert_allclose(half_at_p[small], np.abs(est[small]), rtol=1e-10)
    assert p[1] == 1.0
    # p < alpha exactly when the alpha-level CS excludes zero
    lo, hi = sequential_ci(est, se, n, n_star=n_star)
    np.testing.assert_array_equal(p < 0.05, (lo > 0) | (hi < 0))


def test_scalars_series_and_errors():
    lo, hi = sequential_ci(1.0, 0.5, 400, n_star=1000)
    assert isinstance(lo, float) and lo < 1 < hi
    lo, hi = sequential_ci(pd.Series([1.0, 2.0]), pd.Series([0.5, 0.5]), pd.Series([10, 20]), n_star=20)
    assert lo.shape == (2,)
    assert np.isnan(sequential_p_value(1.0, 0.0, 100))
    for bad in [dict(alpha=0), dict(method="bonf"), dict(n_star=0)]:
        with pytest.raises(ValueError):
            sequential_ci(1.0, 0.5, 100, **bad)
    with pytest.raises(ValueError):
        sequential_ci(1.0, -0.5, 100)
    with pytest.raises(ValueError):
        sequential_p_value(1.0, 0.5, 0)


def test_time_uniform_false_positive_rate_by_simulation():
    """A/A two-sample test of skewed data, 14 nightly looks and 60 denser looks: the CS keeps
    P(ever excludes 0) <= 5%; fixed 95% intervals read every night inflate it 3-5x."""
    rng = np.random.default_rng(7)
    reps, looks, per_day = 4000, 60, 40
    a = rng.exponential(1.0, (reps, looks * per_day))
    b = rng.exponential(1.0, (reps, looks * per_day))
    idx = np.arange(1, looks + 1) * per_day - 1
    n = idx + 1.0
    ma, mb = np.cumsum(a, 1)[:, idx] / n, np.cumsum(b, 1)[:, idx] / n
    va = np.cumsum(a * a, 1)[:, idx] / n - ma**2
    vb = np.cumsum(b * b, 1)[:, idx] / n - mb**2
    est, se = mb - ma, np.sqrt((va + vb) / n)
    n_units, n_star = 2 * n, 2 * n[-1]
    rates = {}
    for method in ("asymptotic_cs", "fixed"):
        lo, hi = sequential_ci(est, se, n_units, n_star=n_star, method=method)
        rej = (lo > 0) | (hi < 0)
        rates[method, 60] = rej.any(1).mean()
        rates[method, 14] = rej[:, 3::4][:, :14].any(1).mean()
    p = sequential_p_value(est, se, n_units, n_star=n_star)
    assert ((p < 0.05).any(1).mean()) == rates["asymptotic_cs", 60]
    assert rates["asymptotic_cs", 60] <= 0.05 and rates["asymptotic_cs", 14] <= 0.05, rates
    assert rates["fixed", 14] > 0.15 and rates["fixed", 60] > 0.2, rates


def test_add_sequential_on_an_effects_table():
    from mvt_pipeline.stats import add_sequential

    eff = pd.DataFrame({"term": ["A", "B"], "estimate": [0.3, 0.01], "std_error": [0.1, 0.1]})
    out = add_sequential(eff, 2000, 5000)
    lo, hi = sequential_ci(eff["estimate"], eff["std_error"], 2000, n_star=5000)
    np.testing.assert_allclose(out["seq_ci_low"], lo)
    np.testing.assert_allclose(out["seq_ci_high"], hi)
    np.testing.assert_allclose(out["seq_p_value"], sequential_p_value(eff["estimate"], eff["std_error"], 2000, n_star=5000))
    assert "seq_p_value" not in eff.columns
