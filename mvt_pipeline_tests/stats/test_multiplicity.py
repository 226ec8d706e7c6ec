"""BH and Holm vs the Benjamini & Hochberg (1995) example and statsmodels.multipletests."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from mvt_pipeline.stats import benjamini_hochberg, holm

BH_1995 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
           0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]


def test_bh_1995_worked_example_rejects_first_four():
    q = benjamini_hochberg(BH_1995)
    assert list(q <= 0.05) == [True] * 4 + [False] * 11


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bh_and_holm_equal_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.01, 7), rng.uniform(0, 1, 40)])
    rng.shuffle(p)
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(benjamini_hochberg(BH_1995), multipletests(BH_1995, method="fdr_bh")[1], rtol=1e-12)


def test_nan_safe_and_series_index():
    p = pd.Series([0.01, np.nan, 0.04, 0.03], index=list("abcd"))
    q = benjamini_hochberg(p)
    assert list(q.index) == list("abcd") and np.isnan(q["b"])
    ref = multipletests([0.01, 0.04, 0.03], method="fdr_bh")[1]
    np.testing.assert_allclose(q.dropna().to_numpy(), ref)
    np.testing.assert_allclose(holm(p).dropna().to_numpy(), multipletests([0.01, 0.04, 0.03], method="holm")[1])
    assert benjamini_hochberg([]).size == 0
    with pytest.raises(ValueError):
        benjamini_hochberg([0.5, 1.5])
