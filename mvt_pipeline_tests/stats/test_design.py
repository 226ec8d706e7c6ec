"""Designs vs the NIST/SEMATECH e-Handbook tables, and fractional analysis vs statsmodels OLS."""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from mvt_pipeline.stats import analyze_cells, fractional_design, full_design, unit_cell_stats


def test_full_design_lists_every_cell():
    d = full_design({"a": ["x", "y"], "b": ["1", "2", "3"]})
    assert list(d.columns) == ["a", "b"]
    assert len(d) == 6 and len(d.drop_duplicates()) == 6


def test_2_4_1_resolution_iv():
    # e-Handbook 5.3.3.4.1: I = ABCD, A = BCD, ..., AB = CD, AC = BD, AD = BC
    d = fractional_design("ABCD", ["D=ABC"])
    assert d.defining_relation == ["ABCD"]
    assert d.resolution == 4
    al = d.aliases
    assert al["A"] == ["BCD"] and al["B"] == ["ACD"] and al["C"] == ["ABD"] and al["D"] == ["ABC"]
    assert al["AB"] == ["CD"] and al["AC"] == ["BD"] and al["AD"] == ["BC"]
    runs = d.runs
    assert list(runs["A"]) == [-1, 1] * 4
    assert list(runs["B"]) == [-1, -1, 1, 1] * 2
    assert list(runs["C"]) == [-1] * 4 + [1] * 4
    assert list(runs["D"]) == [-1, 1, 1, -1, 1, -1, -1, 1]


def test_2_5_2_resolution_iii():
    # e-Handbook: D = AB, E = AC gives I = ABD = ACE = BCDE
    d = fractional_design("ABCDE", ["D=AB", "E=AC"])
    assert sorted(d.defining_relation) == sorted(["ABD", "ACE", "BCDE"])
    assert d.resolution == 3
    al = d.aliases_up_to(2)
    assert al["A"] == ["BD", "CE"]
    assert al["B"] == ["AD"] and al["C"] == ["AE"] and al["D"] == ["AB"] and al["E"] == ["AC"]
    assert al["BC"] == ["DE"] and al["BE"] == ["CD"]
    assert len(d.runs) == 8
    assert (d.runs["D"] == d.runs["A"] * d.runs["B"]).all()


def test_2_7_4_resolution_iii():
    d = fractional_design("ABCDEFG", ["D=AB", "E=AC", "F=BC", "G=ABC"])
    nist = "ABD ACE BCF ABCG BCDE ACDF CDG ABEF BEG AFG DEF ADEG BDFG CEFG ABCDEFG".split()
    assert sorted(d.defining_relation) == sorted(nist)
    assert d.resolution == 3
    al = d.aliases_up_to(2)
    expected = {
        "A": {"BD", "CE", "FG"}, "B": {"AD", "CF", "EG"}, "C": {"AE", "BF", "DG"},
        "D": {"AB", "CG", "EF"}, "E": {"AC", "BG", "DF"}, "F": {"BC", "AG", "DE"}, "G": {"CD", "BE", "AF"},
    }
    for k, v in expected.items():
        assert set(al[k]) == v
    assert len(d.alias_classes()) == 7  # 2^(7-4) - 1 estimable effects


def test_negative_generator_and_bad_generators():
    d = fractional_design("ABC", ["C=-AB"])
    assert d.defining_relation == ["-ABC"]
    assert d.aliases["A"] == ["-BC"]
    assert (d.runs["C"] == -d.runs["A"] * d.runs["B"]).all()
    for bad in (["D=AD"], ["D=A"], ["DABC"], ["D=AB", "D=AC"], ["D=AB", "E=AD"]):
        with pytest.raises(ValueError):
            fractional_design("ABCDE", bad)
    assert fractional_design("AB", []).resolution is None


FACTORS = {
    "layout": ["old", "new"],
    "color": ["blue", "green"],
    "copy": ["short", "long"],
    "badge": ["off", "on"],
}


def simulate_fraction(seed):
    """Units in the 8 runs of 2^(4-1), D = ABC (first level = -1); unequal n and variances."""
    rng = np.random.default_rng(seed)
    d = fractional_design("ABCD", ["D=ABC"])
    parts = []
    for run in d.runs.itertuples(index=False):
        x = dict(zip("ABCD", run))
        n = int(rng.integers(30, 120))
        mu = 3 + 0.4 * x["A"] - 0.2 * x["B"] + 0.1 * x["A"] * x["B"] + 0.3 * x["D"]
        part = pd.DataFrame({f: FACTORS[f][(x[l] + 1) // 2] for f, l in zip(FACTORS, "ABCD")}, index=range(n))
        part["y"] = rng.normal(mu, rng.uniform(0.5, 2.5), n)
        for l in "ABCD":
            part["x" + l] = float(x[l])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("se", ["pooled", "robust"])
def test_fractional_analysis_equals_statsmodels(se):
    data = simulate_fraction(11)
    cells = unit_cell_stats(data, "y", list(FACTORS))
    res = analyze_cells(cells, FACTORS, generators=["D=ABC"], se=se)
    # alias representatives of 2^(4-1): A, B, C, D, AB, AC, AD as +-1 columns
    formula = "y ~ xA * xB + xA * xC + xA * xD"
    model = smf.ols(formula, data).fit(**({"cov_type": "HC2"} if se == "robust" else {}))
    assert res.df_resid == int(model.df_resid)
    names = dict(zip(FACTORS, "ABCD"))
    assert list(res.effects["term"]) == [
        "layout", "color", "copy", "badge", "layout:color", "layout:copy", "layout:badge"
    ]
    for row in res.effects.itertuples():
        fs = row.term.split(":")
        # definition: contrast over the full 2^4 grid of the fitted model; x(level) - x(control) = 2
        # for each factor, so the contrast is 2^order times the coefficient of the product column
        coef = ":".join("x" + names[f] for f in fs)
        L = np.zeros(len(model.params))
        L[list(model.params.index).index(coef)] = 2.0 ** len(fs)
        tt = model.t_test(L)
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
        np.testing.assert_allclose(row.p_value, float(np.squeeze(tt.pvalue)), rtol=1e-9)
    aliases = res.effects.set_index("term")["aliases"]
    assert aliases["layout:color"] == "copy:badge"
    assert aliases["layout"] == "color:copy:badge"
    if se == "pooled":
        ref = sm.stats.anova_lm(smf.ols(formula, data).fit(), typ=2)
        got = res.anova.set_index("term")
        for term, ref_term in [("layout", "xA"), ("badge", "xD"), ("layout:color", "xA:xB"), ("Residuals", "Residual")]:
            np.testing.assert_allclose(got.loc[term, "sum_sq"], ref.loc[ref_term, "sum_sq"], rtol=1e-9)
            if term != "Residuals":
                np.testing.assert_allclose(got.loc[term, "p_value"], ref.loc[ref_term, "PR(>F)"], rtol=1e-9)


def test_fractional_rejects_cells_outside_the_fraction():
    data = simulate_fraction(2)
    cells = unit_cell_stats(data, "y", list(FACTORS))
    with pytest.raises(ValueError, match="not in the fraction"):
        analyze_cells(cells, FACTORS, generators=["D=-ABC"])
    with pytest.raises(ValueError, match="not factor codes"):
        analyze_cells(cells, FACTORS, generators=["E=ABC"])
    res = analyze_cells(cells, FACTORS, generators=["Z=XYW"], codes=dict(zip(FACTORS, "XYWZ")))
    assert res.effects["term"].iloc[4] == "layout:color"
