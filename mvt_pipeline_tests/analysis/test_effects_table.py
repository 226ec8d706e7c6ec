"""The glue between cell stats and the engine: right contrasts, right families, right statuses."""


import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from mvt_pipeline.analysis.cells import planned_cells, split_cell_ids
from mvt_pipeline.analysis.effects_table import experiment_effects
from mvt_pipeline.analysis.srm_table import all_srm
from mvt_pipeline.registry import load_registry

from ..conftest import SAMPLE_REGISTRY


@pytest.fixture(scope="module")
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _units(experiment, rng, n=6000, base=0.1, lift=None):
    """Per-unit rows of one experiment: random cells, binary outcome, revenue, error counts."""
    lift = lift or {}
    rows = {f.name: rng.choice(f.levels, size=n) for f in experiment.factors}
    df = pd.DataFrame(rows)
    p = np.full(n, base)
    for (factor, level), delta in lift.items():
        p += np.where(df[factor] == level, delta, 0.0)
    df["conv"] = (rng.random(n) < p).astype(float)
    df["pre"] = (rng.random(n) < 0.5 * p + 0.05).astype(float)
    df["rev"] = df["conv"] * rng.gamma(2.0, 20.0, n)
    df["req"] = 1 + rng.poisson(3, n)
    df["err"] = rng.binomial(df["req"], 0.02)
    df["cell_id"] = df[[f.name for f in experiment.factors]].apply(
        lambda r: "|".join(f"{k}={v}" for k, v in r.items()), axis=1)
    return df


def _agg(df, experiment, registry):
    """agg_cell_stats rows (overall) computed with pandas, as dbt would."""
    out = []
    for metric, role in experiment.metrics.by_role():
        kind = registry.metric(metric).kind
        g = df.groupby("cell_id")
        y = {"binary": "conv", "continuous": "rev"}.get(kind)
        frame = pd.DataFrame({"n_units": g.size()})
        if y:
            frame["n"] = g.size()
            frame["sum"] = g[y].sum()
            frame["sum_sq"] = g[y].apply(lambda s: (s ** 2).sum())
            frame["cov_sum"] = g["pre"].sum()
            frame["cov_sum_sq"] = g["pre"].apply(lambda s: (s ** 2).sum())
            frame["cross_sum"] = (df["pre"] * df[y]).groupby(df["cell_id"]).sum()
        else:
            frame["n"] = 0
            for c in ("sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum"):
                frame[c] = np.nan
        frame["num_sum"] = g["err"].sum()
        frame["den_sum"] = g["req"].sum()
        frame["num_sum_sq"] = (df["err"] ** 2).groupby(df["cell_id"]).sum()
        frame["den_sum_sq"] = (df["req"] ** 2).groupby(df["cell_id"]).sum()
        frame["num_den_sum"] = (df["err"] * df["req"]).groupby(df["cell_id"]).sum()
        frame = frame.reset_index()
        frame["metric"], frame["role"], frame["kind"], frame["segment"] = metric, role, kind, "overall"
        frame["experiment_id"] = experiment.id
        out.append(frame)
    return pd.concat(out, ignore_index=True)


@pytest.fixture(scope="module")
def pricing(registry):
    """pricing_abn units with a +3 pp discount lift, and the effects computed from their cell sums."""
    exp = registry.experiment("pricing_abn")
    units = _units(exp, np.random.default_rng(5), lift={("pricing_banner", "discount"): 0.03})
    return exp, units, experiment_effects(exp, registry, _agg(units, exp, registry))


def test_pricing_effects_match_marginal_differences_and_families(pricing):
    exp, units, effects = pricing
    ok = effects[effects.status == "ok"]
    # The primary family's q-values are BH over exactly its rows (statsmodels' fdr_bh).
    primary = ok[ok.metric_role == "primary"]
    assert set(primary.level) == {"discount", "social_proof"}
    expected_q = multipletests(primary.p_value, method="fdr_bh")[1]
    assert np.allclose(primary.q_value, expected_q, rtol=1e-12)
    # Ratio guardrail: estimate = difference of pooled cell ratios (one factor: cell = margin).
    guard = ok[(ok.metric == "error_rate")].set_index("level")
    ratios = units.groupby("pricing_banner").apply(lambda d: d.err.sum() / d.req.sum(), include_groups=False)
    assert guard.loc["discount", "estimate"] == pytest.approx(ratios["discount"] - ratios["control"], rel=1e-10)
    assert (guard.q_value == guard.p_value).all()  # guardrails judged on their own


def test_unadjusted_estimate_equals_pandas_marginal_means_without_covariate(registry):
    exp = registry.experiment("checkout_mvt")
    rng = np.random.default_rng(9)
    units = _units(exp, rng, n=12000, lift={("cta_color", "green"): 0.02})
    units["pre"] = 0.0  # no pre-period data: the plain analysis is used
    effects = experiment_effects(exp, registry, _agg(units, exp, registry))
    row = effects[(effects.metric == "checkout_conversion") & (effects.term == "cta_color")].iloc[0]
    assert not row.cuped
    cell_means = units.groupby(["cta_color", "validation", "copy"])["conv"].mean().unstack("cta_color")
    expected = (cell_means["green"] - cell_means["blue"]).mean()
    assert row.estimate == pytest.approx(expected, rel=1e-10)


def test_unsupported_and_empty_metrics_get_a_status_row(registry):
    exp = registry.experiment("checkout_mvt")
    effects = experiment_effects(exp, registry, pd.DataFrame(columns=[
        "cell_id", "metric", "n_units", "n", "sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum",
        "num_sum", "den_sum", "num_sum_sq", "den_sum_sq", "num_den_sum"]))
    assert set(effects.metric) == {"checkout_conversion", "revenue_per_user", "error_rate", "latency_p95"}
    assert effects.status.str.startswith("not analysed").all()


def test_srm_matches_scipy_chisquare(registry):
    exp = registry.experiment("checkout_mvt")
    planned = planned_cells(exp)
    counts = {c: 1000 + 7 * i for i, c in enumerate(sorted(planned))}
    dq = pd.DataFrame({"experiment_id": exp.id, "cell_id": list(counts), "n_srm_units": list(counts.values())})
    srm = all_srm(registry, dq).set_index("experiment_id").loc[exp.id]
    obs = np.array([counts[c] for c in sorted(planned)])
    exp_counts = np.array([planned[c] for c in sorted(planned)]) * obs.sum()
    chi2, p = sps.chisquare(obs, exp_counts)
    assert srm.chi2 == pytest.approx(chi2, rel=1e-12) and srm.p_value == pytest.approx(p, rel=1e-12)


def test_fractional_planned_cells_follow_the_generator(registry):
    exp = registry.experiment("search_ranking_frac")
    cells = planned_cells(exp)
    assert len(cells) == 8 and sum(cells.values()) == pytest.approx(1.0)
    levels = split_cell_ids(pd.Series(list(cells)), exp)
    sign = {f.name: {f.levels[0]: -1, f.levels[1]: 1} for f in exp.factors}
    coded = pd.DataFrame({f: levels[f].map(sign[f]) for f in sign})
    # D = ABC on every run of the half fraction.
    assert (coded["snippet_length"] == coded["recency_boost"] * coded["typo_tolerance"] * coded["personalization"]).all()


def test_sequential_columns_are_wider_and_have_their_own_family(pricing):
    exp, _units_frame, effects = pricing
    ok = effects[effects.status == "ok"]
    assert (ok.seq_ci_low <= ok.ci_low).all() and (ok.seq_ci_high >= ok.ci_high).all()
    assert (ok.n_star == exp.planned_units).all()
    primary = ok[ok.metric_role == "primary"]
    assert np.allclose(primary.seq_q_value, multipletests(primary.seq_p_value, method="fdr_bh")[1], rtol=1e-12)


def test_srm_margins_catch_a_one_factor_imbalance(registry):
    exp = registry.experiment("checkout_mvt")
    planned = planned_cells(exp)
    # cta_color=green gets 8% fewer units in every cell: each margin test sees it.
    counts = {c: (920 if "cta_color=green" in c else 1000) for c in sorted(planned)}
    dq = pd.DataFrame({"experiment_id": exp.id, "cell_id": list(counts), "n_srm_units": list(counts.values())})
    row = all_srm(registry, dq).set_index("experiment_id").loc[exp.id]
    import json as _json

    margins = _json.loads(row.margin_p_values)
    green = sum(v for c, v in counts.items() if "cta_color=green" in c)
    expected_p = sps.chisquare([sum(counts.values()) - green, green])[1]
    assert margins["cta_color"] == pytest.approx(expected_p, rel=1e-10)
    assert not row.passed


def test_bayes_table_for_primary_metrics(registry):
    from mvt_pipeline.analysis.bayes_table import all_bayes

    exp = registry.experiment("pricing_abn")
    rng = np.random.default_rng(2)
    units = _units(exp, rng, n=30000, lift={("pricing_banner", "discount"): 0.04})
    agg = _agg(units, exp, registry)
    bayes = all_bayes(registry, agg)
    assert set(bayes.metric) == {"signup_conversion"}
    assert bayes.prob_best.sum() == pytest.approx(1.0, abs=1e-9)
    best = bayes.sort_values("prob_best").iloc[-1]
    assert best.cell_id == "pricing_banner=discount"


def test_srm_per_segment_flags_a_broken_segment(registry):
    exp = registry.experiment("pricing_abn")
    planned = planned_cells(exp)
    cells = sorted(planned)
    dq = pd.DataFrame({"experiment_id": exp.id, "cell_id": cells, "n_srm_units": [3000, 3000, 3000]})
    seg = []
    for country, counts in {"US": [1000, 1000, 1000], "DE": [1000, 1000, 1000], "FR": [1300, 850, 850]}.items():
        seg += [{"experiment_id": exp.id, "metric": "signup_conversion", "cell_id": c, "segment": "country",
                 "segment_value": country, "n_units": n} for c, n in zip(cells, counts)]
    row = all_srm(registry, dq, pd.DataFrame(seg)).set_index("experiment_id").loc[exp.id]
    import json as _json

    assert _json.loads(row.segments_flagged) == {"country": ["FR"]}
    fr_p = sps.chisquare([1300, 850, 850])[1]
    assert fr_p < 0.001 / 3  # the Bonferroni level the flag uses
    assert row.p_value > 0.99 and not row.passed
