"""analyze_cells vs independent references (statsmodels per-unit OLS, scipy t-tests, pandas).

Contrast vectors L are built here from the *definition* of each effect (equal-weight average
over the full grid of cell means) applied to statsmodels' own per-unit model rows, never from
the engine's coding.
"""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from mvt_pipeline.stats import EFFECT_COLUMNS, analyze_cells, analyze_units, unit_cell_stats

LEVELS = {"fa": ["a0", "a1"], "fb": ["b0", "b1", "b2"], "fc": ["c0", "c1"]}
FORMULA = "y ~ C(fa, Sum) * C(fb, Sum) * C(fc, Sum)"


def simulate_units(levels, seed, n_range=(15, 80)):
    rng = np.random.default_rng(seed)
    parts = []
    for cell in itertools.product(*levels.values()):
        n = int(rng.integers(*n_range))
        mu, sd = rng.normal(5, 2), rng.uniform(0.5, 4.0)
        part = pd.DataFrame(dict(zip(levels, cell)), index=range(n))
        part["y"] = rng.normal(mu, sd, n)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def definition_contrast(model, data, levels, term, level_combo, control):
    """L = sum_g c_g x_g over the full grid, c from the effect's definition, x_g statsmodels rows."""
    names = list(levels)
    others = [f for f in names if f not in term]
    n_other = int(np.prod([len(levels[f]) for f in others])) if others else 1
    L = np.zeros(model.model.exog.shape[1])
    for cell in itertools.product(*levels.values()):
        g = dict(zip(names, cell))
        w = 1.0
        for f, l in zip(term, level_combo):
            w *= 1.0 if g[f] == l else (-1.0 if g[f] == control[f] else 0.0)
        if w == 0:
            continue
        mask = np.ones(len(data), dtype=bool)
        for f in names:
            mask &= (data[f] == g[f]).to_numpy()
        L += w / n_other * model.model.exog[np.flatnonzero(mask)[0]]
    return L


@pytest.fixture(scope="module")
def unbalanced():
    data = simulate_units(LEVELS, seed=20240611)
    cells = unit_cell_stats(data, "y", list(LEVELS))
    return data, cells


@pytest.mark.parametrize("se", ["pooled", "robust"])
@pytest.mark.parametrize("control", [None, {"fa": "a1", "fb": "b1"}])
def test_effects_equal_statsmodels_contrasts(unbalanced, se, control):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se=se, control=control)
    ctrl = {f: (control or {}).get(f, lv[0]) for f, lv in LEVELS.items()}
    model = smf.ols(FORMULA, data).fit(**({"cov_type": "HC2"} if se == "robust" else {}))
    assert list(res.effects.columns) == EFFECT_COLUMNS
    assert res.n_total == len(data) and res.df_resid == int(model.df_resid)
    # one row per non-control level combination of every term: 1 + 2 + 1 + 2 + 1 + 2 + 2
    assert len(res.effects) == 11
    for row in res.effects.itertuples():
        term = row.term.split(":")
        combo = row.level.split(":")
        L = definition_contrast(model, data, LEVELS, term, combo, ctrl)
        tt = model.t_test(L)
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
        np.testing.assert_allclose(row.p_value, float(np.squeeze(tt.pvalue)), rtol=1e-9)
        lo, hi = np.squeeze(tt.conf_int(alpha=0.05))
        np.testing.assert_allclose([row.ci_low, row.ci_high], [lo, hi], rtol=1e-9)
    assert np.isinf(res.effects["df"]).all() if se == "robust" else (res.effects["df"] == model.df_resid).all()


def test_anova_equals_statsmodels_type2(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled")
    ref = sm.stats.anova_lm(smf.ols(FORMULA, data).fit(), typ=2)
    ref.index = [i.replace("C(", "").replace(", Sum)", "") for i in ref.index]
    ref = ref.rename(index={"Residual": "Residuals"})
    got = res.anova.set_index("term").loc[ref.index]
    for col_ref, col in [("sum_sq", "sum_sq"), ("df", "df"), ("F", "f_value"), ("PR(>F)", "p_value")]:
        np.testing.assert_allclose(got[col].to_numpy(dtype=float), ref[col_ref].to_numpy(dtype=float), rtol=1e-9)
    assert list(res.anova.columns) == ["term", "df", "sum_sq", "mean_sq", "f_value", "p_value"]
    assert res.anova["term"].iloc[-1] == "Residuals"


def test_relative_lift_delta_method(unbalanced):
    """rel_lift = a/b with the delta-method SE from the statsmodels covariance of (a, b)."""
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="robust")
    model = smf.ols(FORMULA, data).fit(cov_type="HC2")
    ctrl = {f: lv[0] for f, lv in LEVELS.items()}
    row = res.effects.query("term == 'fb' and level == 'b2'").iloc[0]
    L = definition_contrast(model, data, LEVELS, ["fb"], ["b2"], ctrl)
    # marginal mean at the control level: equal-weight average over the grid of fb=b0 cells
    M = np.zeros_like(L)
    grid = [c for c in itertools.product(*LEVELS.values()) if c[1] == "b0"]
    for cell in grid:
        mask = (data["fa"] == cell[0]) & (data["fb"] == cell[1]) & (data["fc"] == cell[2])
        M += model.model.exog[np.flatnonzero(mask.to_numpy())[0]] / len(grid)
    a, b = L @ model.params.to_numpy(), M @ model.params.to_numpy()
    V = model.cov_params().to_numpy()
    g = L / b - a / b**2 * M
    se = np.sqrt(g @ V @ g)
    np.testing.assert_allclose(row.control_mean, b, rtol=1e-9)
    np.testing.assert_allclose(row.rel_lift, a / b, rtol=1e-9)
    np.testing.assert_allclose([row.rel_ci_low, row.rel_ci_high], [a / b - 1.959963984540054 * se, a / b + 1.959963984540054 * se], rtol=1e-9)
    np.testing.assert_allclose(row.rel_p_value, 2 * stats.norm.sf(abs(a / b / se)), rtol=1e-9)
    inter = res.effects[res.effects["term"].str.contains(":")]
    assert inter[["control_mean", "rel_lift", "rel_p_value"]].isna().all().all()


def test_q_values_are_bh_of_the_table(unbalanced):
    from statsmodels.stats.multitest import multipletests

    _, cells = unbalanced
    eff = analyze_cells(cells, LEVELS).effects
    np.testing.assert_allclose(eff["q_value"], multipletests(eff["p_value"], method="fdr_bh")[1], rtol=1e-12)


def test_main_effect_is_difference_of_marginal_means():
    levels = {"fa": ["x", "y"], "fb": ["u", "v"]}
    data = simulate_units(levels, seed=7)
    cell_means = data.groupby(["fa", "fb"])["y"].mean()
    marginal = cell_means.groupby(level="fa").mean()
    res = analyze_units(data, "y", levels)
    row = res.effects.query("term == 'fa'").iloc[0]
    np.testing.assert_allclose(row.estimate, marginal["y"] - marginal["x"], rtol=1e-12)
    np.testing.assert_allclose(row.control_mean, marginal["x"], rtol=1e-12)
    inter = res.effects.query("term == 'fa:fb'").iloc[0]
    m = cell_means
    np.testing.assert_allclose(inter.estimate, m["y", "v"] - m["y", "u"] - m["x", "v"] + m["x", "u"], rtol=1e-12)
    assert row.n_units == len(data)


def test_two_groups_welch_and_student():
    rng = np.random.default_rng(3)
    y0, y1 = rng.normal(10, 1, 40), rng.normal(10.6, 3, 75)
    data = pd.DataFrame({"arm": ["ctl"] * 40 + ["trt"] * 75, "y": np.r_[y0, y1]})
    levels = {"arm": ["ctl", "trt"]}
    robust = analyze_units(data, "y", levels, se="robust").effects.iloc[0]
    welch = stats.ttest_ind(y1, y0, equal_var=False)
    np.testing.assert_allclose(robust.std_error, (y1.mean() - y0.mean()) / welch.statistic, rtol=1e-12)
    pooled = analyze_units(data, "y", levels, se="pooled").effects.iloc[0]
    student = stats.ttest_ind(y1, y0, equal_var=True)
    np.testing.assert_allclose(pooled.p_value, student.pvalue, rtol=1e-9)
    np.testing.assert_allclose(pooled.statistic, student.statistic, rtol=1e-9)


def test_max_order_main_effects_model_equals_statsmodels(unbalanced):
    data, cells = unbalanced
    res = analyze_cells(cells, LEVELS, se="pooled", max_order=1)
    model = smf.ols("y ~ C(fa, Sum) + C(fb, Sum) + C(fc, Sum)", data).fit()
    assert set(res.effects["term"]) == {"fa", "fb", "fc"}
    ref = sm.stats.anova_lm(model, typ=2)
    np.testing.assert_allclose(res.anova["sum_sq"].to_numpy(), ref["sum_sq"].to_numpy(), rtol=1e-9)
    ctrl = {f: lv[0] for f, lv in LEVELS.items()}
    for row in res.effects.itertuples():
        L = definition_contrast(model, data, LEVELS, [row.term], [row.level], ctrl)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(model.t_test(L).sd)), rtol=1e-9)


def test_polars_and_duplicate_cell_rows(unbalanced):
    pl = pytest.importorskip("polars")
    data, cells = unbalanced
    ref = analyze_cells(cells, LEVELS)
    via_polars = analyze_units(pl.from_pandas(data), "y", LEVELS)
    pd.testing.assert_frame_equal(ref.effects, via_polars.effects, rtol=1e-10)
    halves = [unit_cell_stats(part, "y", list(LEVELS)) for part in (data.iloc[::2], data.iloc[1::2])]
    split = analyze_cells(pd.concat(halves, ignore_index=True), LEVELS)
    pd.testing.assert_frame_equal(ref.effects, split.effects, rtol=1e-9)


@pytest.mark.parametrize("se", ["pooled", "robust"])
def test_two_way_model_with_last_level_controls(unbalanced, se):
    """max_order=2 drops the 3-way term; controls on the -1 (last) coding row."""
    data, cells = unbalanced
    control = {"fb": "b2", "fc": "c1"}
    res = analyze_cells(cells, LEVELS, se=se, control=control, max_order=2)
    formula = "y ~ (C(fa, Sum) + C(fb, Sum) + C(fc, Sum)) ** 2"
    model = smf.ols(formula, data).fit(**({"cov_type": "HC2"} if se == "robust" else {}))
    ctrl = {f: control.get(f, lv[0]) for f, lv in LEVELS.items()}
    assert "fa:fb:fc" not in set(res.effects["term"])
    for row in res.effects.itertuples():
        L = definition_contrast(model, data, LEVELS, row.term.split(":"), row.level.split(":"), ctrl)
        tt = model.t_test(L)
        np.testing.assert_allclose(row.estimate, float(np.squeeze(tt.effect)), rtol=1e-9)
        np.testing.assert_allclose(row.std_error, float(np.squeeze(tt.sd)), rtol=1e-9)
    ref = sm.stats.anova_lm(smf.ols(formula, data).fit(), typ=2)
    np.testing.assert_allclose(res.anova["sum_sq"].to_numpy(), ref["sum_sq"].to_numpy(), rtol=1e-9)
