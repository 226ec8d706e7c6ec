"""Edge cases the engine used to get wrong silently: ties and impossible inputs in prob_best, one
validation path for sufficient statistics, SRM over the planned cells, Cochran's Q with one
estimate, and the FractionalDesign API. References are symmetry, scipy and closed forms."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mvt_pipeline.stats import (
    QUANTILE_COLUMNS, RATIO_COLUMNS, InvalidSufficientStatistics, analyze_cells, analyze_ratio_cells, cochran_q,
    fractional_design, prob_best, srm_margins, srm_segments, srm_test, validate_cell_stats,
)
from mvt_pipeline.stats.validation import KIND_COLUMNS

# --- prob_best: ties are shared ----------------------------------------------------------------


def test_zero_variance_cells_share_the_tie():
    # revenue before any purchase: every cell is exactly 0 with zero variance
    cells = pd.DataFrame({"cell_id": ["ctl", "t1", "t2"], "n": [500, 480, 510], "sum": 0.0, "sum_sq": 0.0})
    res = prob_best(cells, kind="mean", draws=2000)
    np.testing.assert_allclose(res["prob_best"], [1 / 3] * 3, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["expected_loss"], 0.0, atol=0)
    low = prob_best(cells, kind="mean", direction="lower", draws=2000)
    np.testing.assert_allclose(low["prob_best"], [1 / 3] * 3, atol=1e-12)


def test_tie_among_the_best_only():
    # two constant cells at 2.0 tie for best, a constant cell at 1.0 never wins and loses 1.0
    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "n": [10, 20, 30], "sum": [10.0, 40.0, 60.0],
                          "sum_sq": [10.0, 80.0, 120.0]})
    res = prob_best(cells, kind="mean", draws=2000)
    np.testing.assert_allclose(res["prob_best"], [0.0, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(res["expected_loss"], [1.0, 0.0, 0.0], atol=1e-12)
    # lower is better: the lone low cell wins outright, the tied pair lose 1.0 each
    low = prob_best(cells, kind="mean", direction="lower", draws=2000)
    np.testing.assert_allclose(low["prob_best"], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(low["expected_loss"], [0.0, 1.0, 1.0], atol=1e-12)


def test_constant_cell_against_a_noisy_cell_matches_the_normal_cdf():
    # theta_b ~ N(1.01, sd) vs a constant 1.0: P(b best) = Phi(0.01 / sd)
    n, var = 4000, 0.25
    cells = pd.DataFrame({"cell_id": ["a", "b"], "n": [n, n], "sum": [n * 1.0, n * 1.01],
                          "sum_sq": [n * 1.0, var * (n - 1) + n * 1.01**2]})
    res = prob_best(cells, kind="mean", draws=400_000, seed=2)
    p_b = stats.norm.cdf(0.01 / math.sqrt(var / n))
    np.testing.assert_allclose(res["prob_best"], [1 - p_b, p_b], atol=0.004)


# --- prob_best: impossible inputs are refused, naming the cell and the field --------------------


@pytest.mark.parametrize("kind, row, field", [
    ("mean", {"sum_sq": np.nan}, "sum_sq"),
    ("mean", {"sum_sq": 1.0}, "sum_sq"),  # below sum^2/n = 12^2/100 = 1.44
    ("mean", {"sum": np.inf}, "sum"),
    ("mean", {"n": 99.5}, "n"),
    ("mean", {"n": -100}, "n"),
    ("binary", {"sum": 101}, "sum"),
    ("binary", {"sum": -1}, "sum"),
    ("binary", {"sum": 10.5}, "sum"),
    ("binary", {"n": np.nan}, "n"),
])
def test_prob_best_refuses_impossible_cells(kind, row, field):
    cells = pd.DataFrame({"cell_id": ["ctl", "trt"], "n": [100.0, 100.0], "sum": [100.0, 12.0],
                          "sum_sq": [150.0, 30.0]})
    if kind == "binary":
        cells["sum"] = [10.0, 12.0]
    for k, v in row.items():
        cells.loc[1, k] = v
    with pytest.raises(InvalidSufficientStatistics, match=rf"{field}\b.*'trt'") as err:
        prob_best(cells, kind=kind)
    assert err.value.field == field and err.value.cells == ["trt"]


def test_prob_best_names_cells_by_their_factor_columns_without_cell_id():
    cells = pd.DataFrame({"A": ["x", "y"], "B": ["u", "u"], "n": [100, 100], "sum": [5, 500]})
    with pytest.raises(InvalidSufficientStatistics, match=r"A=y\|B=u"):
        prob_best(cells)


# --- one validation path: analyze_cells / analyze_ratio_cells / the quantile inputs -------------

LEVELS = {"fa": ["a0", "a1"], "fb": ["b0", "b1"]}


def mean_cells():
    rows = [("a0", "b0", 10, 10.0, 15.0), ("a0", "b1", 12, 13.0, 20.0),
            ("a1", "b0", 11, 12.0, 18.0), ("a1", "b1", 9, 11.0, 17.0)]
    return pd.DataFrame(rows, columns=["fa", "fb", "n", "sum", "sum_sq"])


@pytest.mark.parametrize("field, value", [("sum", np.nan), ("sum_sq", np.inf), ("n", 10.5), ("sum_sq", 1.0)])
def test_analyze_cells_names_the_cell_and_field(field, value):
    df = mean_cells().astype({"n": float})
    df.loc[2, field] = value
    with pytest.raises(InvalidSufficientStatistics, match=rf"{field}\b.*fa=a1\|fb=b0"):
        analyze_cells(df, LEVELS)


def ratio_cells():
    rng = np.random.default_rng(4)
    rows = []
    for a in LEVELS["fa"]:
        for b in LEVELS["fb"]:
            d = rng.poisson(5, 300) + 1.0
            num = rng.binomial(d.astype(int), 0.2).astype(float)
            rows.append({"fa": a, "fb": b, "n": 300, "num_sum": num.sum(), "den_sum": d.sum(),
                         "num_sum_sq": (num**2).sum(), "den_sum_sq": (d**2).sum(), "num_den_sum": (num * d).sum()})
    return pd.DataFrame(rows)


def test_negative_ratio_denominator_is_refused():
    df = ratio_cells()
    analyze_ratio_cells(df, LEVELS)  # valid as built
    # the same unit-level data with every denominator negated: sums of squares stay consistent
    df.loc[3, ["den_sum", "num_den_sum"]] = -df.loc[3, ["den_sum", "num_den_sum"]]
    with pytest.raises(InvalidSufficientStatistics, match=r"den_sum\b.*negative.*fa=a1\|fb=b1"):
        analyze_ratio_cells(df, LEVELS)


def quantile_row(**kw):
    row = {"A": "a0", "n": 5, "q": 0.5, "n_events": 10, "quantile_value": 1.0, "ci_lower_value": 0.5,
           "ci_upper_value": 1.5, "ci_z": 1.96, "k_sum": 5, "k_sum_sq": 7, "m_sum_sq": 22, "k_m_sum": 11}
    return row | kw


def test_quantile_inputs_are_validated():
    good = pd.DataFrame([quantile_row(), quantile_row(A="a1")])
    validate_cell_stats(good, "quantile", cell="A")
    cases = [
        ([quantile_row(), quantile_row(A="a1", q=0.95)], "q", r"differs between cells"),
        ([quantile_row(), quantile_row(A="a1", k_sum=11)], "k_sum", r"exceeds n_events"),
        ([quantile_row(), quantile_row(A="a1", n_events=np.nan)], "n_events", r"missing"),
        ([quantile_row(), quantile_row(A="a1", n=-2)], "n", r"negative"),
    ]
    for rows, field, text in cases:
        with pytest.raises(InvalidSufficientStatistics, match=rf"{field}\b.*{text}.*'A=a1'"):
            validate_cell_stats(pd.DataFrame(rows), "quantile", cell="A")


def test_kind_columns_match_the_engine_contracts():
    assert KIND_COLUMNS["ratio"] == tuple(RATIO_COLUMNS)
    assert KIND_COLUMNS["quantile"] == tuple(QUANTILE_COLUMNS)
    assert issubclass(InvalidSufficientStatistics, ValueError)


# --- SRM over the planned cells -----------------------------------------------------------------


def test_srm_test_counts_a_planned_cell_without_a_row_as_zero():
    res = srm_test({"a": 1000, "b": 1000}, {"a": 1, "b": 1, "c": 1})
    ref = stats.chisquare([1000, 1000, 0], [2000 / 3] * 3)
    np.testing.assert_allclose([res.chi2, res.p_value], [ref.statistic, ref.pvalue], rtol=1e-12)
    assert res.df == 2 and res.flagged and res.expected["c"] == pytest.approx(2000 / 3)


def test_srm_margins_use_the_planned_levels():
    # factor b has three planned levels; no unit reached b=w, so its rows are absent
    planned = pd.DataFrame({"a": ["x"] * 3 + ["y"] * 3, "b": ["u", "v", "w"] * 2, "weight": 1.0})
    observed = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["u", "v", "u", "v"], "n": [500, 500, 500, 500]})
    res = srm_margins(observed, ["a", "b"], planned=planned)
    ref = stats.chisquare([1000, 1000, 0])
    np.testing.assert_allclose(res["b"].p_value, ref.pvalue, rtol=1e-12)
    assert res["b"].flagged and res["b"].df == 2
    assert res["a"].p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not planned"):
        srm_margins(pd.concat([observed, pd.DataFrame({"a": ["z"], "b": ["u"], "n": [3]})]), ["a", "b"], planned=planned)


def test_srm_segments_test_every_planned_cell():
    # segment "web" has no row for cell c2 (planned 50 %): it must be flagged, not p = 1
    cells = pd.DataFrame({"seg": ["ios"] * 3 + ["web"] * 2, "cell_id": ["c0", "c1", "c2", "c0", "c1"],
                          "n": [1000, 1010, 2030, 1000, 1000], "weight": [1, 1, 2, 1, 1]})
    res = srm_segments(cells, "seg", cell="cell_id").set_index("segment")
    ref = stats.chisquare([1000, 1000, 0], np.array([1, 1, 2]) * 2000 / 4)
    np.testing.assert_allclose(res.loc["web", ["chi2", "p_value"]].to_numpy(float), [ref.statistic, ref.pvalue], rtol=1e-12)
    assert res.loc["web", "df"] == 2 and bool(res.loc["web", "flagged"])
    # an explicit plan adds cells that no segment reached
    planned = {"c0": 1, "c1": 1, "c2": 2, "c3": 4}
    res = srm_segments(cells, "seg", cell="cell_id", planned=planned).set_index("segment")
    ref = stats.chisquare([1000, 1010, 2030, 0], np.array([1, 1, 2, 4]) * 4040 / 8)
    np.testing.assert_allclose(res.loc["ios", "p_value"], ref.pvalue, rtol=1e-12)


def test_srm_segments_skip_segments_too_small_for_the_chi_square():
    # 3 units, all in one of 16 equal cells: chi2 = 45 on 15 df (p = 8e-5) although the exact
    # chance of this under the plan is 16 / 16^3 = 0.4 %: too few units to test, not a flag
    cells = pd.DataFrame({"seg": ["tiny"], "cell_id": ["c0"], "n": [3]})
    planned = {f"c{i}": 1.0 for i in range(16)}
    res = srm_segments(cells, "seg", cell="cell_id", planned=planned)
    assert np.isnan(res.loc[0, "p_value"]) and not res.loc[0, "flagged"]


# --- Cochran's Q with one estimate ----------------------------------------------------------------


def test_cochran_q_with_one_estimate_has_undefined_i2():
    # y and s where the weighted mean differs from y in the last bit: Q = 7e-32 > 0 gave I^2 = 1
    h = cochran_q([-1.9851821623742747], [0.8438676180191211])
    assert h["k"] == 1 and h["df"] == 0 and h["q_stat"] == 0.0
    assert np.isnan(h["i2"]) and np.isnan(h["p_value"])
    assert h["re_mean"] == pytest.approx(-1.9851821623742747, rel=1e-15) and h["pooled_std_error"] == pytest.approx(0.8438676180191211)
    # two identical estimates: no heterogeneity beyond noise, I^2 = 0 (Higgins & Thompson 2002)
    assert cochran_q([0.3, 0.3], [0.1, 0.2])["i2"] == 0.0


# --- FractionalDesign: aliases is a property like resolution / runs ------------------------------


def test_aliases_is_a_property():
    d = fractional_design("ABCD", ["D=ABC"])
    assert isinstance(type(d).aliases, property)
    assert d.aliases["A"] == ["BCD"] and d.aliases["AB"] == ["CD"]
    e = fractional_design("ABCDE", ["D=AB", "E=AC"])
    assert e.aliases_up_to(2)["A"] == ["BD", "CE"]
    assert e.aliases["A"] == ["BD", "CE", "ABCDE"]
