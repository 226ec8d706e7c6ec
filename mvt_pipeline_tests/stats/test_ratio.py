"""Ratio metrics (delta method) vs independent per-unit computations and a coverage simulation."""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from mvt_pipeline.stats import EFFECT_COLUMNS, RATIO_COLUMNS, analyze_ratio_cells

Z975 = stats.norm.ppf(0.975)


def simulate_ratio_units(levels, seed, n_range=(30, 120)):
    """Per user: D page views (1 + Poisson), N clicks ~ Binomial(D, p_cell) plus a user effect."""
    rng = np.random.default_rng(seed)
    parts = []
    for cell in itertools.product(*levels.values()):
        n = int(rng.integers(*n_range))
        part = pd.DataFrame(dict(zip(levels, cell)), index=range(n))
        part["D"] = 1 + rng.poisson(rng.uniform(1, 6), n)
        part["N"] = rng.binomial(part["D"], np.clip(rng.uniform(0.1, 0.4) + rng.normal(0, 0.05, n), 0, 1))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def ratio_sums(data, factors):
    d = data.assign(N2=data["N"] ** 2, D2=data["D"] ** 2, ND=data["N"] * data["D"])
    g = d.groupby(factors, sort=False)
    out = pd.DataFrame({
        "n": g.size(), "num_sum": g["N"].sum(), "den_sum": g["D"].sum(),
        "num_sum_sq": g["N2"].sum(), "den_sum_sq": g["D2"].sum(), "num_den_sum": g["ND"].sum(),
    })
    return out.reset_index()


def per_unit_ratio(N, D):
    """Cell ratio and its delta-method variance straight from the unit arrays."""
    R = N.sum() / D.sum()
    c = np.cov(N, D, ddof=1)
    var = (c[0, 0] - 2 * R * c[0, 1] + R**2 * c[1, 1]) / (len(N) * D.mean() ** 2)
    return R, var


def test_two_cells_match_per_unit_delta_method_and_statsmodels_linearisation():
    levels = {"arm": ["ctl", "trt"]}
    data = simulate_ratio_units(levels, seed=1)
    res = analyze_ratio_cells(ratio_sums(data, ["arm"]), levels)
    row = res.effects.iloc[0]
    assert list(res.effects.columns) == EFFECT_COLUMNS and len(res.effects) == 1
    parts = {a: data[data["arm"] == a] for a in levels["arm"]}
    (r0, v0), (r1, v1) = (per_unit_ratio(parts[a]["N"].to_numpy(float), parts[a]["D"].to_numpy(float)) for a in ["ctl", "trt"])
    # statsmodels: the SE of the mean of the linearised metric (N - R D) / mean(D)
    for arm, var in [("ctl", v0), ("trt", v1)]:
        p = parts[arm]
        R = p["N"].sum() / p["D"].sum()
        lin = (p["N"] - R * p["D"]) / p["D"].mean()
        fit = sm.OLS(lin.to_numpy(float), np.ones(len(p))).fit()
        np.testing.assert_allclose(fit.bse[0] ** 2, var, rtol=1e-9)
    se = np.sqrt(v0 + v1)
    np.testing.assert_allclose(row.estimate, r1 - r0, rtol=1e-12)
    np.testing.assert_allclose(row.std_error, se, rtol=1e-9)
    np.testing.assert_allclose([row.ci_low, row.ci_high], [r1 - r0 - Z975 * se, r1 - r0 + Z975 * se], rtol=1e-9)
    np.testing.assert_allclose(row.p_value, 2 * stats.norm.sf(abs((r1 - r0) / se)), rtol=1e-9)
    # relative lift: (r1 - r0) / r0 with gradient (1/r0, -r1/r0^2) on (r1, r0)
    rel_se = np.sqrt(v1 / r0**2 + (r1 / r0**2) ** 2 * v0)
    np.testing.assert_allclose(row.control_mean, r0, rtol=1e-12)
    np.testing.assert_allclose([row.rel_lift, row.rel_ci_low, row.rel_ci_high], [r1 / r0 - 1, r1 / r0 - 1 - Z975 * rel_se, r1 / r0 - 1 + Z975 * rel_se], rtol=1e-9)
    np.testing.assert_allclose(row.rel_p_value, 2 * stats.norm.sf(abs((r1 / r0 - 1) / rel_se)), rtol=1e-9)
    assert np.isinf(row.df) and row.n_units == len(data)
    np.testing.assert_allclose(res.cell_means["std_error"] ** 2, [v0, v1], rtol=1e-9)
    assert res.anova.empty and list(res.anova.columns) == ["term", "df", "sum_sq", "mean_sq", "f_value", "p_value"]


def test_2x2_contrasts_are_differences_of_marginal_ratio_means():
    levels = {"fa": ["x", "y"], "fb": ["u", "v"]}
    data = simulate_ratio_units(levels, seed=2)
    res = analyze_ratio_cells(ratio_sums(data, list(levels)), levels)
    R, V = {}, {}
    for (a, b), g in data.groupby(["fa", "fb"]):
        R[a, b], V[a, b] = per_unit_ratio(g["N"].to_numpy(float), g["D"].to_numpy(float))
    eff = res.effects.set_index("term")
    main = (R["y", "u"] + R["y", "v"]) / 2 - (R["x", "u"] + R["x", "v"]) / 2
    np.testing.assert_allclose(eff.loc["fa", "estimate"], main, rtol=1e-12)
    np.testing.assert_allclose(eff.loc["fa", "std_error"], np.sqrt(sum(V.values())) / 2, rtol=1e-9)
    np.testing.assert_allclose(eff.loc["fa", "control_mean"], (R["x", "u"] + R["x", "v"]) / 2, rtol=1e-12)
    inter = R["y", "v"] - R["y", "u"] - R["x", "v"] + R["x", "u"]
    np.testing.assert_allclose(eff.loc["fa:fb", "estimate"], inter, rtol=1e-10)
    np.testing.assert_allclose(eff.loc["fa:fb", "std_error"], np.sqrt(sum(V.values())), rtol=1e-9)


@pytest.mark.parametrize("control", [None, {"fb": "b2"}])
def test_2x3_every_row_equals_its_definition_on_cell_ratios(control):
    levels = {"fa": ["a0", "a1"], "fb": ["b0", "b1", "b2"]}
    data = simulate_ratio_units(levels, seed=3)
    res = analyze_ratio_cells(ratio_sums(data, list(levels)), levels, control=control)
    ctrl = {f: (control or {}).get(f, lv[0]) for f, lv in levels.items()}
    grid = list(itertools.product(*levels.values()))
    R, V = np.empty(len(grid)), np.empty(len(grid))
    for i, (a, b) in enumerate(grid):
        g = data[(data["fa"] == a) & (data["fb"] == b)]
        R[i], V[i] = per_unit_ratio(g["N"].to_numpy(float), g["D"].to_numpy(float))
    assert len(res.effects) == 1 + 2 + 2
    for row in res.effects.itertuples():
        term, combo = row.term.split(":"), row.level.split(":")
        n_other = np.prod([len(levels[f]) for f in levels if f not in term])
        w = np.array([
            np.prod([1.0 if dict(zip(levels, c))[f] == l else (-1.0 if dict(zip(levels, c))[f] == ctrl[f] else 0.0) for f, l in zip(term, combo)])
            for c in grid
        ]) / n_other
        np.testing.assert_allclose(row.estimate, w @ R, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(row.std_error, np.sqrt(np.sum(w**2 * V)), rtol=1e-9)


def test_fractional_design_uses_the_alias_machinery():
    levels = {"fa": ["lo", "hi"], "fb": ["lo", "hi"], "fc": ["lo", "hi"]}
    data = simulate_ratio_units(levels, seed=4)
    sign = {"lo": -1, "hi": 1}
    data = data[data["fa"].map(sign) * data["fb"].map(sign) == data["fc"].map(sign)]  # C = AB
    res = analyze_ratio_cells(ratio_sums(data, list(levels)), levels, generators=["C=AB"])
    assert res.design is not None and res.design.resolution == 3
    runs = {k: per_unit_ratio(g["N"].to_numpy(float), g["D"].to_numpy(float)) for k, g in data.groupby(list(levels))}
    for row in res.effects.itertuples():
        f = list(levels).index(row.term)
        hi = [r for k, (r, _) in runs.items() if k[f] == "hi"]
        lo = [r for k, (r, _) in runs.items() if k[f] == "lo"]
        np.testing.assert_allclose(row.estimate, np.mean(hi) - np.mean(lo), rtol=1e-10)
        np.testing.assert_allclose(row.std_error, np.sqrt(sum(v for _, v in runs.values())) / 2, rtol=1e-9)
    assert res.effects.set_index("term").loc["fa", "aliases"] == "fb:fc"


def test_ci_coverage_over_2000_simulated_experiments():
    """2x2, 250 users per cell; true ratios known: 95% CIs of the main effect, the
    interaction and the relative lift must cover the truth 93.5%-96.5% of the time."""
    rng = np.random.default_rng(20240612)
    levels = {"fa": ["x", "y"], "fb": ["u", "v"]}
    cells = list(itertools.product(*levels.values()))
    p = {("x", "u"): 0.20, ("x", "v"): 0.22, ("y", "u"): 0.25, ("y", "v"): 0.24}
    lam = {("x", "u"): 2.0, ("x", "v"): 3.0, ("y", "u"): 2.5, ("y", "v"): 4.0}
    true_main = (p["y", "u"] + p["y", "v"]) / 2 - (p["x", "u"] + p["x", "v"]) / 2
    true_inter = p["y", "v"] - p["y", "u"] - p["x", "v"] + p["x", "u"]
    true_rel = true_main / ((p["x", "u"] + p["x", "v"]) / 2)
    n, reps = 250, 2000
    hits = np.zeros(3)
    for _ in range(reps):
        rows = []
        for c in cells:
            D = 1 + rng.poisson(lam[c], n)
            N = rng.binomial(D, np.clip(p[c] + rng.normal(0, 0.08, n), 0, 1))  # user heterogeneity
            rows.append((*c, n, N.sum(), D.sum(), (N * N).sum(), (D * D).sum(), (N * D).sum()))
        eff = analyze_ratio_cells(pd.DataFrame(rows, columns=["fa", "fb", *RATIO_COLUMNS]), levels).effects
        m, i = eff.iloc[0], eff.iloc[2]
        hits += [m.ci_low <= true_main <= m.ci_high, i.ci_low <= true_inter <= i.ci_high, m.rel_ci_low <= true_rel <= m.rel_ci_high]
    coverage = hits / reps
    assert np.all((coverage >= 0.935) & (coverage <= 0.965)), coverage


def test_ratio_errors():
    levels = {"arm": ["ctl", "trt"]}
    good = ratio_sums(simulate_ratio_units(levels, seed=5), ["arm"])
    one = good.copy()
    one.loc[0, ["n", "num_sum", "den_sum", "num_sum_sq", "den_sum_sq", "num_den_sum"]] = [1, 1, 2, 1, 4, 2]
    with pytest.raises(ValueError, match="n >= 2"):
        analyze_ratio_cells(one, levels)
    zero = good.copy()
    zero.loc[1, ["den_sum", "den_sum_sq", "num_den_sum"]] = 0
    with pytest.raises(ValueError, match="denominator sums to 0"):
        analyze_ratio_cells(zero, levels)
    with pytest.raises(ValueError, match="missing column"):
        analyze_ratio_cells(good.drop(columns="num_den_sum"), levels)
    with pytest.raises(ValueError, match="not estimable"):
        analyze_ratio_cells(good.iloc[:1], levels)
    bad = good.copy()
    bad.loc[0, "num_den_sum"] += 1e7
    with pytest.raises(ValueError, match="num_den_sum is inconsistent"):
        analyze_ratio_cells(bad, levels)
