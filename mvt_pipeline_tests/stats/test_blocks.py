"""Blocking variables: `y ~ C(blk, Sum) + C(A, Sum) * C(B, Sum)` from cell sums equals statsmodels."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from mvt_pipeline.stats import analyze_units


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(77)
    n = 3000
    df = pd.DataFrame({
        "A": rng.choice(["a0", "a1"], n, p=[0.45, 0.55]),
        "B": rng.choice(["b0", "b1", "b2"], n),
        "blk": rng.choice(["d1", "d2", "d3", "d4"], n, p=[0.1, 0.2, 0.3, 0.4]),
    })
    day = df["blk"].map({"d1": 0.0, "d2": 1.0, "d3": -0.5, "d4": 2.0})
    df["y"] = 1.0 + 0.3 * (df.A == "a1") - 0.2 * (df.B == "b2") + day + rng.normal(0, 1 + 0.5 * (df.A == "a1"), n)
    return df


def _contrast(fit, names, weights):
    L = np.zeros(len(fit.params))
    for name, w in weights.items():
        L[list(fit.params.index).index(name)] = w
    return fit.t_test(L)


@pytest.mark.parametrize("se, cov_type", [("pooled", "nonrobust"), ("robust", "HC2")])
def test_blocked_main_effect_equals_statsmodels(data, se, cov_type):
    res = analyze_units(data, "y", {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"]}, blocks="blk", se=se)
    fit = smf.ols("y ~ C(blk, Sum) + C(A, Sum) * C(B, Sum)", data).fit(cov_type=cov_type)
    # A: a1 vs a0 with sum coding (a1 is the -1 row) = -2 * coef[a0]
    t = _contrast(fit, fit.params.index, {"C(A, Sum)[S.a0]": -2.0})
    row = res.effects[(res.effects.term == "A")].iloc[0]
    assert row.estimate == pytest.approx(float(t.effect[0]), rel=1e-9)
    assert row.std_error == pytest.approx(float(t.sd[0, 0]), rel=1e-9)
    assert set(res.effects.term) == {"A", "B", "A:B"}  # the block is not reported as an effect


def test_blocked_anova_equals_statsmodels_type2(data):
    res = analyze_units(data, "y", {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"]}, blocks=["blk"], se="pooled")
    ref = anova_lm(smf.ols("y ~ C(blk, Sum) + C(A, Sum) * C(B, Sum)", data).fit(), typ=2)
    ours = res.anova.set_index("term")
    for name, ref_name in [("A", "C(A, Sum)"), ("B", "C(B, Sum)"), ("A:B", "C(A, Sum):C(B, Sum)"), ("blk", "C(blk, Sum)")]:
        assert ours.loc[name, "sum_sq"] == pytest.approx(ref.loc[ref_name, "sum_sq"], rel=1e-9)
        assert ours.loc[name, "f_value"] == pytest.approx(ref.loc[ref_name, "F"], rel=1e-9)
