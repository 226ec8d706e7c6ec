"""CUPED / ANCOVA from cell sums vs per-unit references (statsmodels OLS, scipy, numpy).

Pooled SEs, the Type II ANCOVA table and theta must equal statsmodels ``... + x`` exactly.
The robust SE is the cell-wise HC2 documented in ``cuped.py`` (statsmodels' HC0-HC3 are not
computable from per-cell sums); it is checked against a per-unit numpy computation of that
formula, and only loosely against statsmodels HC2.
"""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from mvt_pipeline.stats import COVARIATE_COLUMNS, analyze_cells, analyze_units, unit_cell_stats

from .test_factorial import definition_contrast

LEVELS = {"fa": ["a0", "a1"], "fb": ["b0", "b1", "b2"], "fc": ["c0", "c1"]}
FACTORS = "C(fa, Sum) * C(fb, Sum) * C(fc, Sum)"


def simulate_cuped(levels, seed, shift=None, n_range=(15, 80)):
    """Cells with their own mean, noise SD and covariate spread; y = mu_c + 0.4 x + noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for cell in itertools.product(*levels.values()):
        n = int(rng.integers(*n_range))
        part = pd.DataFrame(dict(zip(levels, cell)), index=range(n))
        x = rng.normal(50.0 + (shift or {}).get(cell, 0.0), rng.uniform(5, 12), n)
        part["x"] = x
        part["y"] = rng.normal(5, 2) + 0.4 * x + rng.normal(0, rng.uniform(1.0, 4.0), n)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def ancova_contrast(model, data, levels, term, combo, control):
    """Definition contrast on statsmodels rows with the covariate column zeroed (same x)."""
    L = definition_contrast(model, data, levels, term, combo, control)
    L[model.model.exog_names.index("x")] = 0.0
    return L


@pytest.fixture(scope="module")
def unbalanced():
    data = simulate_cuped(LEVELS, seed=99)
    return data, unit_cell_stats(data, "y", list(LEVELS), covariate="x")


@pytest.mark.parametrize("control", [None, {"fa": "a1", "fb": "b1"}])
def test_pooled_effects_equal_statsmodels_ancova(unbalanced, control):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled", covariate=True, control=control)
    model = smf.ols(f"y ~ {FACTORS} + x", data).fit()
    ctrl = {f: (control or {}).get(f, lv[0]) for f, lv in LEVELS.items()}
    assert res.df_resid == int(model.df_resid) and len(res.effects) == 11
    np.testing.assert_allclose(res.cuped["theta"], model.params["x"], rtol=1e-9)
    np.testing.assert_allclose(res.params["covariate"], model.params["x"], rtol=1e-9)
    np.testing.assert_allclose(res.cov.loc["covariate", "covariate"], model.cov_params().loc["x", "x"], rtol=1e-9)
    for row in res.effects.itertuples():
        L = ancova_contrast(model, data, LEVELS, row.term.split(":"), row.level.split(":"), ctrl)
        tt = model.t_test(L)
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
        np.testing.assert_allclose(row.p_value, float(np.squeeze(tt.pvalue)), rtol=1e-9)
        np.testing.assert_allclose([row.ci_low, row.ci_high], np.squeeze(tt.conf_int(alpha=0.05)), rtol=1e-9)
    assert (res.effects["df"] == model.df_resid).all()


def test_relative_lift_uses_control_mean_adjusted_to_grand_mean_of_x(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled", covariate=True)
    model = smf.ols(f"y ~ {FACTORS} + x", data).fit()
    ctrl = {f: lv[0] for f, lv in LEVELS.items()}
    row = res.effects.query("term == 'fb' and level == 'b1'").iloc[0]
    L = ancova_contrast(model, data, LEVELS, ["fb"], ["b1"], ctrl)
    grid = [c for c in itertools.product(*LEVELS.values()) if c[1] == "b0"]
    M = np.zeros_like(L)
    for cell in grid:
        mask = (data["fa"] == cell[0]) & (data["fb"] == cell[1]) & (data["fc"] == cell[2])
        M += model.model.exog[np.flatnonzero(mask.to_numpy())[0]] / len(grid)
    M[model.model.exog_names.index("x")] = data["x"].mean()
    beta, V = model.params.to_numpy(), model.cov_params().to_numpy()
    a, b = L @ beta, M @ beta
    g = L / b - a / b**2 * M
    se, crit = np.sqrt(g @ V @ g), stats.t.ppf(0.975, model.df_resid)
    np.testing.assert_allclose(row.control_mean, b, rtol=1e-9)
    np.testing.assert_allclose([row.rel_lift, row.rel_ci_low, row.rel_ci_high], [a / b, a / b - crit * se, a / b + crit * se], rtol=1e-9)
    np.testing.assert_allclose(row.rel_p_value, 2 * stats.t.sf(abs(a / b / se), model.df_resid), rtol=1e-9)


def test_ancova_type2_equals_statsmodels(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled", covariate=True)
    ref = sm.stats.anova_lm(smf.ols(f"y ~ {FACTORS} + x", data).fit(), typ=2)
    ref.index = [i.replace("C(", "").replace(", Sum)", "") for i in ref.index]
    ref = ref.rename(index={"Residual": "Residuals", "x": "covariate"})
    got = res.anova.set_index("term").loc[ref.index]
    assert len(got) == len(res.anova)
    for col_ref, col in [("sum_sq", "sum_sq"), ("df", "df"), ("F", "f_value"), ("PR(>F)", "p_value")]:
        np.testing.assert_allclose(got[col].to_numpy(dtype=float), ref[col_ref].to_numpy(dtype=float), rtol=1e-9)


def test_non_saturated_model_solves_the_normal_equations(unbalanced):
    """max_order=1: theta is no longer the pooled within-cell slope; still exact OLS."""
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled", covariate=True, max_order=1)
    model = smf.ols("y ~ C(fa, Sum) + C(fb, Sum) + C(fc, Sum) + x", data).fit()
    np.testing.assert_allclose(res.cuped["theta"], model.params["x"], rtol=1e-9)
    ctrl = {f: lv[0] for f, lv in LEVELS.items()}
    for row in res.effects.itertuples():
        tt = model.t_test(ancova_contrast(model, data, LEVELS, [row.term], [row.level], ctrl))
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
    ref = sm.stats.anova_lm(model, typ=2)
    np.testing.assert_allclose(res.anova["sum_sq"].to_numpy(), ref["sum_sq"].to_numpy(), rtol=1e-9)


def test_fractional_design_with_covariate():
    levels = {"fa": ["lo", "hi"], "fb": ["lo", "hi"], "fc": ["lo", "hi"]}
    data = simulate_cuped(levels, seed=5)
    sign = {"lo": -1, "hi": 1}
    keep = data["fa"].map(sign) * data["fb"].map(sign) == data["fc"].map(sign)  # C = AB
    data = data[keep].reset_index(drop=True)
    res = analyze_units(data, "y", levels, generators=["C=AB"], se="pooled", covariate="x")
    model = smf.ols("y ~ C(fa, Sum) + C(fb, Sum) + C(fc, Sum) + x", data).fit()
    for row in res.effects.itertuples():
        # patsy sorts levels ("hi" < "lo"): "hi" is the +1 row, "lo" the -1 row, hi - lo = 2 coef
        L = np.zeros(len(model.params))
        L[model.model.exog_names.index(f"C({row.term}, Sum)[S.hi]")] = 2.0
        tt = model.t_test(L)
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
    assert res.effects.set_index("term").loc["fa", "aliases"] == "fb:fc"


def cellwise_hc2_per_unit(model, data, factors):
    """The documented robust estimator computed unit by unit with numpy (uncentred x)."""
    W, e = model.model.exog, model.resid.to_numpy()
    B = np.linalg.inv(W.T @ W)
    h = np.einsum("ij,jk,ik->i", W, B, W)
    cell = data[factors].astype(str).agg("|".join, axis=1).to_numpy()
    s2 = np.empty(len(e))
    for c in np.unique(cell):
        m = cell == c
        s2[m] = np.sum(e[m] ** 2) / np.sum(1.0 - h[m])
    return B @ ((W * s2[:, None]).T @ W) @ B


def test_robust_is_cellwise_hc2_and_close_to_statsmodels_hc2(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="robust", covariate=True)
    model = smf.ols(f"y ~ {FACTORS} + x", data).fit()
    V = cellwise_hc2_per_unit(model, data, list(LEVELS))
    V_hc2 = smf.ols(f"y ~ {FACTORS} + x", data).fit(cov_type="HC2").cov_params().to_numpy()
    ctrl = {f: lv[0] for f, lv in LEVELS.items()}
    assert np.isinf(res.effects["df"]).all()
    for row in res.effects.itertuples():
        L = ancova_contrast(model, data, LEVELS, row.term.split(":"), row.level.split(":"), ctrl)
        se = np.sqrt(L @ V @ L)
        np.testing.assert_allclose(row.estimate, L @ model.params.to_numpy(), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, se, rtol=1e-9)
        np.testing.assert_allclose(row.p_value, 2 * stats.norm.sf(abs(row.estimate / se)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, np.sqrt(L @ V_hc2 @ L), rtol=0.05)  # approximation only
    np.testing.assert_allclose(res.cov.loc["covariate", "covariate"], V[-1, -1], rtol=1e-9)


def test_cuped_summary_against_per_unit_computation(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, covariate=True)
    keys = list(LEVELS)
    dm = data[["x", "y"]] - data.groupby(keys)[["x", "y"]].transform("mean")
    theta = float((dm["x"] * dm["y"]).sum() / (dm["x"] ** 2).sum())
    adj = dm["y"] - theta * dm["x"]
    f_ref = stats.f_oneway(*[g["x"].to_numpy() for _, g in data.groupby(keys)])
    np.testing.assert_allclose(res.cuped["theta"], theta, rtol=1e-9)
    np.testing.assert_allclose(res.cuped["variance_reduction"], 1 - (adj**2).sum() / (dm["y"] ** 2).sum(), rtol=1e-9)
    np.testing.assert_allclose(res.cuped["pre_imbalance_f"], f_ref.statistic, rtol=1e-9)
    np.testing.assert_allclose(res.cuped["pre_imbalance_p"], f_ref.pvalue, rtol=1e-9)
    assert res.cuped["pre_imbalance_flag"] is False
    np.testing.assert_allclose(res.cuped["covariate_mean"], data["x"].mean(), rtol=1e-12)
    adjusted = data["y"] - theta * (data["x"] - data["x"].mean())
    ref_adj = adjusted.groupby([data[k] for k in keys]).mean()
    got = res.cell_means.set_index(keys)["adjusted_mean"]
    np.testing.assert_allclose(got.loc[ref_adj.index].to_numpy(), ref_adj.to_numpy(), rtol=1e-9)
    plain = analyze_cells(cells, LEVELS)
    assert (res.effects["std_error"] < plain.effects["std_error"]).all()  # x explains ~half of y


def test_pre_period_imbalance_is_flagged():
    data = simulate_cuped(LEVELS, seed=99, shift={("a1", "b2", "c0"): 20.0})
    res = analyze_units(data, "y", LEVELS, covariate="x")
    f_ref = stats.f_oneway(*[g["x"].to_numpy() for _, g in data.groupby(list(LEVELS))])
    np.testing.assert_allclose(res.cuped["pre_imbalance_p"], f_ref.pvalue, rtol=1e-9)
    assert res.cuped["pre_imbalance_p"] < 0.001 and res.cuped["pre_imbalance_flag"] is True


def test_split_rows_and_polars_give_the_same_result(unbalanced):
    data, cells = unbalanced
    ref = analyze_cells(cells, LEVELS, covariate=True)
    halves = [unit_cell_stats(p, "y", list(LEVELS), covariate="x") for p in (data.iloc[::2], data.iloc[1::2])]
    split = analyze_cells(pd.concat(halves, ignore_index=True), LEVELS, covariate=True)
    pd.testing.assert_frame_equal(ref.effects, split.effects, rtol=1e-9)
    pl = pytest.importorskip("polars")
    via_polars = analyze_units(pl.from_pandas(data), "y", LEVELS, covariate="x")
    pd.testing.assert_frame_equal(ref.effects, via_polars.effects, rtol=1e-10)


def test_covariate_errors(unbalanced):
    data, cells = unbalanced
    with pytest.raises(ValueError, match="missing column"):
        analyze_cells(cells.drop(columns="cross_sum"), LEVELS, covariate=True)
    const = data.assign(x=3.0)
    with pytest.raises(ValueError, match="not estimable"):
        analyze_units(const, "y", LEVELS, covariate="x")
    bad = cells.copy()
    bad.loc[0, "cross_sum"] += 1e6
    with pytest.raises(ValueError, match="cross_sum is inconsistent"):
        analyze_cells(bad, LEVELS, covariate=True)
    assert set(COVARIATE_COLUMNS) <= set(cells.columns)
