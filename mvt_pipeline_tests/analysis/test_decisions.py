"""Guardrails per cell and the decision rules, on simulated experiments built to hit each rule.

Per-unit data are simulated with numpy; the cell sufficient statistics are aggregated here with
pandas, and every statistic is checked against statsmodels on the per-unit rows.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from mvt_pipeline.analysis.decisions import NightFacts, decide, decision_row, primary_contrasts
from mvt_pipeline.analysis.effects_table import all_effects
from mvt_pipeline.analysis.guardrails import all_guardrails
from mvt_pipeline.registry.models import Experiment, Metric, Registry
from mvt_pipeline.stats.power import required_units

AS_OF = dt.date(2026, 11, 14)

METRICS = [
    Metric(name="conv", kind="binary", source="buy", direction="higher", unit="pp"),
    Metric(name="err", kind="ratio", numerator={"source": "req_err"}, denominator={"source": "req_err", "aggregation": "count"},
           direction="lower", non_inferiority_margin=0.002, unit="pp"),
]


def experiment(**over) -> Experiment:
    spec = dict(id="exp", owner="team-x", hypothesis="h", status="running", start_date=dt.date(2026, 11, 1),
                end_date=dt.date(2026, 12, 31),
                factors=[{"name": "fa", "flag_key": "flag-a", "control": "a0", "levels": ["a0", "a1"]},
                         {"name": "fb", "flag_key": "flag-b", "control": "b0", "levels": ["b0", "b1"]}],
                metrics={"primary": ["conv"], "guardrails": ["err"]}, planned_units=40000, mde=0.01)
    spec.update(over)
    return Experiment.model_validate(spec)


def simulate(exp: Experiment, conv: dict[str, float], err: dict[str, float], n_per_cell: int, seed: int = 1,
             requests: int = 20) -> pd.DataFrame:
    """Per-unit rows: cell_id, conv (0/1), requests, errors."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in conv:
        req = rng.poisson(requests, n_per_cell) + 1
        rows.append(pd.DataFrame({"cell_id": cell, "conv": rng.binomial(1, conv[cell], n_per_cell),
                                  "requests": req, "errors": rng.binomial(req, err[cell])}))
    return pd.concat(rows, ignore_index=True)


def cell_stats(units: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """`agg_cell_stats` overall rows from per-unit rows (what dbt would build)."""
    g = units.groupby("cell_id")
    conv = pd.DataFrame({"n_units": g.size(), "n": g.size(), "sum": g["conv"].sum(),
                         "sum_sq": g["conv"].apply(lambda s: (s**2).sum())}).reset_index()
    conv["metric"] = "conv"
    err = pd.DataFrame({"n_units": g.size(), "n": g.size(), "num_sum": g["errors"].sum(),
                        "den_sum": g["requests"].sum(),
                        "num_sum_sq": g["errors"].apply(lambda s: (s**2).sum()),
                        "den_sum_sq": g["requests"].apply(lambda s: (s**2).sum()),
                        "num_den_sum": g.apply(lambda d: (d["errors"] * d["requests"]).sum(), include_groups=False)}
                       ).reset_index()
    err["metric"] = "err"
    out = pd.concat([conv, err], ignore_index=True)
    out["experiment_id"], out["segment"], out["segment_value"] = exp.id, "overall", "all"
    for col in ("cov_sum", "cov_sum_sq", "cross_sum"):
        out[col] = 0.0
    return out


def cells_of(exp: Experiment) -> list[str]:
    return ["|".join(f"{f.name}={lv}" for f, lv in zip(exp.factors, combo))
            for combo in itertools.product(*[f.levels for f in exp.factors])]


def night(exp: Experiment, units: pd.DataFrame, facts: NightFacts | None = None, burn: pd.DataFrame | None = None):
    registry = Registry(experiments=[exp], metrics=METRICS)
    stats = cell_stats(units, exp)
    effects = all_effects(registry, stats)
    guardrails = all_guardrails(registry, effects, stats, None)
    facts = facts or NightFacts(min_cell_units=int(units.groupby("cell_id").size().min()))
    decision = decide(exp, registry, guardrails=guardrails, burn=burn if burn is not None else pd.DataFrame(),
                      cell_stats=stats, cell_quantiles=None, facts=facts, as_of=AS_OF)
    return guardrails, decision, registry, stats


C00, C10, C01, C11 = "fa=a0|fb=b0", "fa=a1|fb=b0", "fa=a0|fb=b1", "fa=a1|fb=b1"
FLAT_CONV = {C00: 0.10, C10: 0.10, C01: 0.10, C11: 0.10}
FLAT_ERR = {C00: 0.01, C10: 0.01, C01: 0.01, C11: 0.01}


def test_cell_rows_match_statsmodels_on_per_unit_data():
    """Fixed basis: the cell contrast of a binary guardrail is Welch's z (statsmodels on the units),
    the harm p is its one-sided test, the non-inferiority p the test shifted by the margin; the
    ratio contrast's SE is the delta method computed from per-unit linearised values; Holm as in
    statsmodels."""
    exp = experiment(decision_basis="fixed", metrics={"primary": ["conv"], "guardrails": ["err", "conv"]})
    metrics = [METRICS[0].model_copy(update={"non_inferiority_margin": 0.01}), METRICS[1]]
    units = simulate(exp, {C00: 0.10, C10: 0.09, C01: 0.11, C11: 0.08}, {C00: 0.01, C10: 0.012, C01: 0.01, C11: 0.011},
                     3000, seed=7)
    registry = Registry(experiments=[exp], metrics=metrics)
    stats = cell_stats(units, exp)
    g = all_guardrails(registry, all_effects(registry, stats), stats, None)
    ctrl = units[units["cell_id"] == C00]
    for cell in (C10, C01, C11):
        row = g[(g["scope"] == "cell") & (g["cell"] == cell) & (g["metric"] == "conv")].iloc[0]
        treat = units[units["cell_id"] == cell]
        cm = CompareMeans(DescrStatsW(treat["conv"].astype(float)), DescrStatsW(ctrl["conv"].astype(float)))
        assert row["estimate"] == pytest.approx(treat["conv"].mean() - ctrl["conv"].mean(), abs=1e-12)
        assert row["std_error"] == pytest.approx(cm.std_meandiff_separatevar, rel=1e-9)
        # conv is higher-is-better: harm is a drop; H1 of harm: treat - ctrl < 0
        _, p_harm = cm.ztest_ind(alternative="smaller", usevar="unequal")
        _, p_ni = cm.ztest_ind(alternative="larger", usevar="unequal", value=-0.01)
        assert row["p_harm"] == pytest.approx(p_harm, rel=1e-9)
        assert row["p_noninferiority"] == pytest.approx(p_ni, rel=1e-9)
        # ratio: delta method from the per-unit linearised values (N_i - R D_i) / mean(D)
        err_row = g[(g["scope"] == "cell") & (g["cell"] == cell) & (g["metric"] == "err")].iloc[0]

        def lin_var(d):
            r = d["errors"].sum() / d["requests"].sum()
            lin = (d["errors"] - r * d["requests"]) / d["requests"].mean()
            return r, lin.var(ddof=1) / len(d)

        (rt, vt), (rc, vc) = lin_var(treat), lin_var(ctrl)
        assert err_row["estimate"] == pytest.approx(rt - rc, abs=1e-12)
        assert err_row["std_error"] == pytest.approx(np.sqrt(vt + vc), rel=1e-9)
    assert np.allclose(g["p_harm_adjusted"], multipletests(g["p_harm"], method="holm")[1])
    # the level rows are the engine's main effects (one per factor level x guardrail)
    assert set(g.loc[g["scope"] == "level", "cell"]) == {"fa=a1", "fb=b1"}


def test_interaction_only_harm_stops_naming_the_combination():
    """Error rate rises only where the two new variants meet; the main effects alone are not
    judged harmful, the cell is, and the decision names that combination with both flags."""
    exp = experiment()
    units = simulate(exp, FLAT_CONV, {C00: 0.01, C10: 0.01, C01: 0.01, C11: 0.016}, 6000, seed=3)
    guardrails, decision, _, _ = night(exp, units)
    harm = guardrails[guardrails["status"] == "harm"]
    assert set(harm.loc[harm["scope"] == "cell", "cell"]) == {C11}
    assert decision["decision"] == "stop_harm" and decision["rule"] == "guardrail_harm"
    assert decision["cell"] == C11
    assert decision["flags"] == {"flag-a": "a1", "flag-b": "b1"}
    assert decision["flag_key"] == "flag-a,flag-b" and decision["variant"] == "a1,b1"
    assert decision["inputs"]["margin"] == 0.002 and decision["inputs"]["metric"] == "err"
    assert any("margin 0.2 pp" in r for r in decision["reasons"])  # 0.002 of a proportion
    row = decision_row(decision, "r.html")
    assert row["decision"] == "stop_harm" and '"flag-b": "b1"' in row["flags"]


def test_harm_shared_by_cells_names_the_level_to_turn_off():
    exp = experiment()
    units = simulate(exp, FLAT_CONV, {C00: 0.01, C10: 0.01, C01: 0.017, C11: 0.017}, 6000, seed=4)
    _, decision, _, _ = night(exp, units)
    assert decision["decision"] == "stop_harm"
    assert decision["cell"] == "fb=b1" and decision["flag_key"] == "flag-b" and decision["variant"] == "b1"


def test_ship_picks_the_best_combination_not_the_best_level_of_each_factor():
    """a1 and b1 are each the better level on average, but together they clash: the best cell is
    a1|b0, and that is what ships."""
    exp = experiment()
    conv = {C00: 0.10, C10: 0.13, C01: 0.125, C11: 0.11}
    units = simulate(exp, conv, FLAT_ERR, 8000, seed=5)
    guardrails, decision, registry, stats = night(exp, units)
    effects = all_effects(registry, stats)
    mains = effects[(effects["metric"] == "conv") & (effects["term"].isin(["fa", "fb"]))]
    assert (mains["estimate"] > 0).all()  # per factor, a1 and b1 look best
    assert decision["decision"] == "ship", decision
    assert decision["cell"] == C10 and decision["flags"] == {"flag-a": "a1", "flag-b": "b0"}
    assert (guardrails.loc[(guardrails["scope"] == "cell") & (guardrails["cell"] == C10), "status"] == "ok").all()


def test_ship_skips_the_best_cell_when_its_guardrail_is_not_non_inferior():
    exp = experiment()
    conv = {C00: 0.10, C10: 0.13, C01: 0.125, C11: 0.11}
    units = simulate(exp, conv, {C00: 0.01, C10: 0.0135, C01: 0.01, C11: 0.01}, 8000, seed=6)
    guardrails, decision, _, _ = night(exp, units.assign())
    if decision["decision"] == "stop_harm":  # a harmful best cell stops the experiment: also right
        assert decision["cell"] == C10
    else:
        assert decision["decision"] == "ship" and decision["cell"] == C01
        assert any("gains more" in r for r in decision["reasons"])


def test_futility_when_the_mde_is_ruled_out():
    exp = experiment(mde=0.05)
    units = simulate(exp, FLAT_CONV, FLAT_ERR, 8000, seed=8)
    _, decision, _, _ = night(exp, units)
    assert decision["decision"] == "stop_futility"
    assert decision["inputs"]["max_gain_high"] < 0.05


def test_keep_running_says_how_many_days_are_needed():
    """days_needed against the power module with the true variance: units for the MDE on a
    cell-vs-control contrast (2 cells' variances) at the traffic so far (14 days)."""
    exp = experiment(mde=0.01)
    n_cell = 1500
    units = simulate(exp, FLAT_CONV, FLAT_ERR, n_cell, seed=9)
    _, decision, _, _ = night(exp, units)
    assert decision["decision"] == "keep_running" and decision["rule"] == "not_yet_conclusive"
    # independent: a two-cell contrast is a 2-level "main effect" on 2 cells' units
    per_two_cells = required_units({"x": 2}, effect=0.01, sd=np.sqrt(0.1 * 0.9), alpha=exp.alpha, power=exp.power,
                                   sequential=True)
    n_now = 4 * n_cell
    expected = (per_two_cells / 2 * 4 - n_now) / (n_now / 14)
    assert decision["days_needed"] == pytest.approx(expected, rel=0.15)


def test_srm_makes_the_night_invalid():
    exp = experiment()
    units = simulate(exp, {C00: 0.10, C10: 0.13, C01: 0.125, C11: 0.11}, FLAT_ERR, 8000, seed=10)
    facts = NightFacts(srm={"p_value": 1e-9, "passed": False}, min_cell_units=8000)
    _, decision, _, _ = night(exp, units, facts=facts)
    assert decision["decision"] == "invalid" and decision["rule"] == "srm"
    lag = NightFacts(lag_p95_seconds=30 * 3600, min_cell_units=8000)
    _, decision, _, _ = night(exp, units, facts=lag)
    assert decision["decision"] == "invalid" and decision["rule"] == "telemetry_lag"


def test_pause_on_budget_burn_comes_before_the_statistics():
    exp = experiment()
    units = simulate(exp, {C00: 0.10, C10: 0.13, C01: 0.125, C11: 0.11}, FLAT_ERR, 8000, seed=11)
    burn = pd.DataFrame([{"experiment_id": "exp", "metric": "err", "cell_id": C01, "is_control": False,
                          "window_hours": 1, "short_window": True, "events": 5000, "bad_events": 2500,
                          "bad_ratio": 0.5, "objective": 0.999, "period_days": 1, "burn_rate": 500.0,
                          "budget_consumed": 0.64, "control_burn_rate": 10.0, "status": "pause"}])
    _, decision, _, _ = night(exp, units, burn=burn)
    assert decision["decision"] == "pause" and decision["cell"] == C01
    assert decision["flag_key"] == "flag-b" and decision["variant"] == "b1"
    assert any("64%" in r for r in decision["reasons"])


def test_primary_contrasts_one_sided_holm():
    exp = experiment(decision_basis="fixed")
    units = simulate(exp, {C00: 0.10, C10: 0.12, C01: 0.10, C11: 0.09}, FLAT_ERR, 4000, seed=12)
    registry = Registry(experiments=[exp], metrics=METRICS)
    c = primary_contrasts(exp, registry, cell_stats(units, exp), None)
    ctrl = units[units["cell_id"] == C00]["conv"].astype(float)
    p = []
    for cell in c["cell_id"]:
        cm = CompareMeans(DescrStatsW(units[units["cell_id"] == cell]["conv"].astype(float)), DescrStatsW(ctrl))
        p.append(cm.ztest_ind(alternative="larger", usevar="unequal")[1])
    assert np.allclose(c["p_gain"], p, rtol=1e-9)
    assert np.allclose(c["p_gain_adjusted"], multipletests(p, method="holm")[1])


def test_decisions_use_always_valid_p_values_unless_fixed():
    """A lift that a single fixed-horizon look calls significant but the confidence sequence does
    not: fixed ships, the default (always-valid) keeps running."""
    conv = {C00: 0.10, C10: 0.112, C01: 0.10, C11: 0.10}
    units = simulate(experiment(), conv, FLAT_ERR, 9000, seed=36)
    registry = Registry(experiments=[experiment()], metrics=METRICS)
    c = primary_contrasts(experiment(decision_basis="fixed"), registry, cell_stats(units, experiment()), None)
    p_fixed = c.set_index("cell_id").loc[C10, "p_gain_adjusted"]
    c_seq = primary_contrasts(experiment(), registry, cell_stats(units, experiment()), None)
    p_seq = c_seq.set_index("cell_id").loc[C10, "p_gain_adjusted"]
    assert p_fixed < 0.05 < p_seq, (p_fixed, p_seq)
    _, fixed, _, _ = night(experiment(decision_basis="fixed", mde=None), units)
    _, sequential, _, _ = night(experiment(mde=None), units)
    assert fixed["decision"] == "ship" and fixed["cell"] == C10
    assert sequential["decision"] == "keep_running"
