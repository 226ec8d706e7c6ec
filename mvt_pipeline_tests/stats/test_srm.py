"""srm_test vs scipy.stats.chisquare."""

import numpy as np
import pytest
from scipy import stats

from mvt_pipeline.stats import srm_test


def test_matches_scipy_chisquare():
    counts, weights = [5030, 4870, 10100], [1, 1, 2]
    res = srm_test(counts, weights)
    expected = np.sum(counts) * np.array(weights) / np.sum(weights)
    ref = stats.chisquare(counts, expected)
    np.testing.assert_allclose([res.chi2, res.p_value], [ref.statistic, ref.pvalue], rtol=1e-12)
    np.testing.assert_allclose(res.expected, expected)
    assert res.df == 2 and not res.flagged


def test_keyed_counts_align_and_flag():
    res = srm_test({"b": 10500, "a": 9500}, {"a": 0.5, "b": 0.5})
    ref = stats.chisquare([10500, 9500])
    np.testing.assert_allclose(res.p_value, ref.pvalue, rtol=1e-12)
    assert res.expected["a"] == 10000 and res.flagged


@pytest.mark.parametrize(
    "counts, weights",
    [([1, 2], [1, 1, 1]), ([-1, 2], [1, 1]), ([1, 2], [0, 1]), ([5], [1]), ({"a": 1, "b": 2}, {"a": 1, "c": 1})],
)
def test_errors(counts, weights):
    with pytest.raises(ValueError):
        srm_test(counts, weights)


def test_factor_margins_match_scipy():
    import pandas as pd

    from mvt_pipeline.stats import srm_margins

    cells = pd.DataFrame(
        {"a": ["x", "x", "y", "y"], "b": ["u", "v", "u", "v"], "n": [2600, 2400, 2500, 2700], "weight": [1, 1, 1, 1]}
    )
    res = srm_margins(cells, ["a", "b"])
    ref_a = stats.chisquare([5000, 5200])
    ref_b = stats.chisquare([5100, 5100])
    np.testing.assert_allclose(res["a"].p_value, ref_a.pvalue, rtol=1e-12)
    np.testing.assert_allclose(res["b"].chi2, ref_b.statistic, atol=1e-12)


def test_segments_are_tested_with_bonferroni():
    import pandas as pd

    from mvt_pipeline.stats import srm_segments

    cells = pd.DataFrame({
        "seg": ["ios"] * 3 + ["web"] * 3 + ["tv"],
        "cell_id": ["c0", "c1", "c2"] * 2 + ["c0"],
        "n": [1000, 1010, 2030, 1000, 1300, 1950, 40],
        "weight": [1, 1, 2] * 2 + [1],
    })
    res = srm_segments(cells, "seg", cell="cell_id").set_index("segment")
    for seg, counts in [("ios", [1000, 1010, 2030]), ("web", [1000, 1300, 1950])]:
        ref = stats.chisquare(counts, np.sum(counts) * np.array([1, 1, 2]) / 4)
        np.testing.assert_allclose(res.loc[seg, ["chi2", "p_value"]].to_numpy(dtype=float), [ref.statistic, ref.pvalue], rtol=1e-12)
    assert res.loc["ios", "alpha"] == pytest.approx(0.001 / 3)
    assert bool(res.loc["web", "flagged"]) and not bool(res.loc["ios", "flagged"])
    # tv: 40 units, all in c0, none in the planned c1 and c2 (no rows): tested over the planned
    # cells, not skipped
    ref = stats.chisquare([40, 0, 0], np.array([10, 10, 20]))
    np.testing.assert_allclose(res.loc["tv", "p_value"], ref.pvalue, rtol=1e-12)
    assert bool(res.loc["tv", "flagged"])
