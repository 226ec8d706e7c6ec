"""segment_effects / cochran_q vs statsmodels (per-unit interaction Wald test, meta-analysis),
the normal-normal posterior in precision form, and a small level/power simulation."""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects

from mvt_pipeline.stats import benjamini_hochberg, cochran_q, eb_shrink, segment_effects, unit_cell_stats

LEVELS = {"t": ["ctl", "trt"]}


def units(seed, effects=(0.1, 0.3, -0.1, 0.2), n=(300, 500)):
    rng = np.random.default_rng(seed)
    parts = []
    for s, eff in enumerate(effects):
        for arm, shift in [("ctl", 0.0), ("trt", eff)]:
            k = int(rng.integers(*n))
            parts.append(pd.DataFrame({"seg": f"s{s}", "t": arm, "y": rng.normal(1 + 0.2 * s + shift, 1 + 0.3 * s, k)}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def data():
    d = units(5)
    cells = unit_cell_stats(d, "y", ["seg", "t"])
    return d, cells, segment_effects(cells, LEVELS, "seg", min_cell_units=100)


def test_q_equals_the_per_unit_treatment_by_segment_wald_test(data):
    d, _, res = data
    fit = smf.ols("y ~ C(t) * C(seg)", data=d).fit(cov_type="HC2")
    inter = [i for i, name in enumerate(fit.params.index) if name.startswith("C(t)[T.trt]:")]
    R = np.eye(len(fit.params))[inter]
    wald = fit.wald_test(R, scalar=True, use_f=False)
    h = res.heterogeneity.iloc[0]
    assert h.q_stat == pytest.approx(float(wald.statistic), rel=1e-9)
    assert h.p_value == pytest.approx(float(wald.pvalue), rel=1e-8)
    assert h.df == 3 and h.k == 4


def test_pooling_and_tau2_equal_statsmodels_meta_analysis(data):
    _, _, res = data
    seg = res.segments
    ref = combine_effects(seg["estimate"].to_numpy(), seg["std_error"].to_numpy() ** 2, method_re="dl")
    h = res.heterogeneity.iloc[0]
    assert h.q_stat == pytest.approx(ref.q, rel=1e-10)
    assert h.tau2 == pytest.approx(ref.tau2, rel=1e-10, abs=1e-14)
    assert h.i2 == pytest.approx(ref.i2, rel=1e-10, abs=1e-14)
    assert h.pooled_estimate == pytest.approx(ref.mean_effect_fe, rel=1e-10)
    assert h.re_mean == pytest.approx(ref.mean_effect_re, rel=1e-10)
    assert h.re_std_error == pytest.approx(ref.sd_eff_w_re, rel=1e-10)


def test_segment_rows_shrinkage_and_bh(data):
    d, _, res = data
    seg = res.segments.set_index("segment")
    for s, g in d.groupby("seg"):  # per-segment Welch difference of means
        a, b = g.loc[g.t == "ctl", "y"], g.loc[g.t == "trt", "y"]
        assert seg.loc[s, "estimate"] == pytest.approx(b.mean() - a.mean(), rel=1e-10)
        assert seg.loc[s, "std_error"] == pytest.approx(np.sqrt(a.var() / len(a) + b.var() / len(b)), rel=1e-10)
    np.testing.assert_allclose(seg["q_value"], benjamini_hochberg(seg["p_value"].to_numpy()))
    h = res.heterogeneity.iloc[0]
    y, v = seg["estimate"].to_numpy(), seg["std_error"].to_numpy() ** 2
    if h.tau2 > 0:  # precision-weighted posterior mean given mu
        post = (y / v + h.re_mean / h.tau2) / (1 / v + 1 / h.tau2)
        np.testing.assert_allclose(seg["shrunk_estimate"], post, rtol=1e-10)
    # shrinkage pulls every estimate toward the common mean, never past it
    assert np.all(np.abs(seg["shrunk_estimate"] - h.re_mean) <= np.abs(y - h.re_mean) + 1e-15)


def test_no_heterogeneity_collapses_to_the_pooled_mean():
    y, s = np.array([0.1, 0.12, 0.09]), np.array([0.05, 0.05, 0.05])
    h = cochran_q(y, s)
    assert h["tau2"] == 0 and h["i2"] == 0
    post, se, B = eb_shrink(y, s, h["tau2"], h["re_mean"], h["re_std_error"] ** 2)
    np.testing.assert_allclose(post, y.mean())
    np.testing.assert_allclose(se, 0.05 / np.sqrt(3))
    assert np.all(B == 1)


def test_factorial_segments_and_skips():
    rng = np.random.default_rng(9)
    levels = {"A": ["a0", "a1"], "B": ["b0", "b1"]}
    rows = []
    for seg, n in [("big", 400), ("mid", 300), ("tiny", 20)]:
        for c in itertools.product(*levels.values()):
            y = rng.normal(0.5 * (c[0] == "a1"), 1, n)
            rows.append((seg, *c, n, y.sum(), (y * y).sum()))
    rows.append(("partial", "a0", "b0", 500, 10.0, 600.0))
    cells = pd.DataFrame(rows, columns=["seg", "A", "B", "n", "sum", "sum_sq"])
    res = segment_effects(cells, levels, "seg")
    assert set(res.skipped) == {"tiny", "partial"}
    assert "150" in res.skipped["tiny"]
    assert set(res.segments["segment"]) == {"big", "mid"}
    assert list(res.heterogeneity["term"]) == ["A", "B", "A:B"]
    np.testing.assert_allclose(res.heterogeneity["q_value"], benjamini_hochberg(res.heterogeneity["p_value"].to_numpy()))
    with pytest.raises(ValueError):
        segment_effects(cells, levels, "nope")


def test_level_and_power_by_simulation():
    """Q at 5% on 6 independent segment estimates (vectorised): size ~5%, and power ~80% when
    one segment is shifted by the delta that the noncentral chi-square sets to 80%."""
    rng = np.random.default_rng(21)
    reps, k, n = 3000, 6, 400
    crit = stats.chi2.ppf(0.95, k - 1)
    ncp = optimize.brentq(lambda l: stats.ncx2.sf(crit, k - 1, l) - 0.8, 1e-6, 100)
    se_true = np.sqrt(2 / n)
    delta = np.sqrt(ncp / (1 - 1 / k)) * se_true
    for shift, target, tol in [(0.0, 0.05, 0.012), (delta, 0.8, 0.03)]:
        a = rng.standard_normal((reps, k, n))
        b = rng.standard_normal((reps, k, n)) + 0.1
        b[:, -1, :] += shift
        est = b.mean(2) - a.mean(2)
        se = np.sqrt((a.var(2, ddof=1) + b.var(2, ddof=1)) / n)
        rate = np.mean([cochran_q(est[r], se[r])["p_value"] < 0.05 for r in range(reps)])
        assert abs(rate - target) < tol, (shift, rate)
