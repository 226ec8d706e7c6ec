"""The warehouse's shifted sums at mean/sd = 1e8: effects from `agg_cell_stats` equal statsmodels
(means) and a numpy delta method (ratios) on the generated per-unit values.

The reference translates the values by the exact constant 1e8 (exact by Sterbenz' lemma), which
changes no effect or SE, so it is free of the cancellation under test. Plain sums
(`sum_sq - sum^2/n`) give SEs with no correct digit here.
"""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from mvt_pipeline.analysis.effects_table import all_effects
from mvt_pipeline.registry import load_registry
from mvt_pipeline.warehouse import store

from .test_dbt_marts import Events, dbt, ingest

BIG = 1e8
EXPERIMENTS = """
experiments:
  - id: exp_big
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fa, flag_key: a, control: a0, levels: [a0, a1]}
      - {name: fb, flag_key: b, control: b0, levels: [b0, b1]}
    metrics: {primary: [rev], guardrails: [per_req]}
    attribution_window_days: 7
"""
METRICS = """
metrics:
  - {name: rev, kind: continuous, source: amount, aggregation: sum}
  - name: per_req
    kind: ratio
    numerator: {source: req, aggregation: sum}
    denominator: {source: req, aggregation: count}
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    data = tmp_path_factory.mktemp("dbt_big")
    (data / "registry").mkdir()
    (data / "registry" / "experiments.yaml").write_text(EXPERIMENTS)
    (data / "registry" / "metrics.yaml").write_text(METRICS)
    rng = np.random.default_rng(7)
    ev, units, reqs = Events(), [], []
    for c, (a, b) in enumerate(itertools.product(["a0", "a1"], ["b0", "b1"])):
        for i in range(int(rng.integers(25, 45))):
            unit = f"u{c}_{i}"
            ev.exposure(unit, "2026-01-10T10:00:00", experiment="exp_big", fa=a, fb=b)
            y = float(BIG + 0.3 * c + rng.normal(0, 1))
            ev.metric(unit, "2026-01-10T11:00:00", "amount", y)
            units.append({"fa": a, "fb": b, "y": y})
            for k in range(int(rng.integers(1, 4))):
                v = float(BIG + 0.1 * c + rng.normal(0, 2))
                ev.metric(unit, f"2026-01-10T12:0{k}:00", "req", v)
                reqs.append({"unit": unit, "fa": a, "fb": b, "v": v})
    ev.write(data / "raw")
    ingest(data)
    dbt(data, "build", "--select", "+agg_cell_stats", "--indirect-selection", "cautious")
    with duckdb.connect(str(data / "wh.duckdb"), read_only=True) as conn:
        cells = store.cell_stats(conn, overall=True)
    effects = all_effects(load_registry(data / "registry"), cells)
    return effects, pd.DataFrame(units), pd.DataFrame(reqs)


def test_mean_effects_equal_statsmodels_at_mean_over_sd_1e8(big):
    effects, units, _ = big
    ref = smf.ols("y ~ C(fa, Sum) * C(fb, Sum)", units.assign(y=units["y"] - BIG)).fit(cov_type="HC2")
    eff = effects[effects["metric"] == "rev"].set_index("term")
    for term, name, scale in (("fa", "C(fa, Sum)[S.a0]", -2.0), ("fb", "C(fb, Sum)[S.b0]", -2.0),
                              ("fa:fb", "C(fa, Sum)[S.a0]:C(fb, Sum)[S.b0]", 4.0)):
        np.testing.assert_allclose(eff.loc[term, "std_error"], abs(scale) * ref.bse[name], rtol=1e-7)
        np.testing.assert_allclose(eff.loc[term, "estimate"], scale * ref.params[name], rtol=0,
                                   atol=1e-6 * eff.loc[term, "std_error"])
        np.testing.assert_allclose(eff.loc[term, "p_value"], ref.pvalues[name], rtol=1e-5)
    fa = eff.loc["fa"]
    ctrl = units[units["fa"] == "a0"].groupby("fb")["y"].apply(lambda v: (v - BIG).mean()).mean()
    assert abs(fa["control_mean"] - BIG - ctrl) < 1e-6  # the level, with its shift added back


def test_ratio_effects_equal_the_delta_method_at_ratio_1e8(big):
    effects, _, reqs = big
    per_unit = reqs.assign(v=reqs["v"] - BIG).groupby(["unit", "fa", "fb"])["v"].agg(["sum", "count"]).reset_index()
    var = {}
    ratio = {}
    for (a, b), part in per_unit.groupby(["fa", "fb"]):
        r = part["sum"].sum() / part["count"].sum()  # R - 1e8 (every event shifted by 1e8)
        lin = part["sum"] - r * part["count"]
        ratio[a, b] = r
        var[a, b] = lin.var(ddof=1) / (len(part) * part["count"].mean() ** 2)
    eff = effects[effects["metric"] == "per_req"].set_index("term")
    se_fa = np.sqrt(sum(var.values())) / 2  # (R_a1b0 + R_a1b1)/2 - (R_a0b0 + R_a0b1)/2
    np.testing.assert_allclose(eff.loc["fa", "std_error"], se_fa, rtol=1e-7)
    est = (ratio["a1", "b0"] + ratio["a1", "b1"] - ratio["a0", "b0"] - ratio["a0", "b1"]) / 2
    np.testing.assert_allclose(eff.loc["fa", "estimate"], est, rtol=0, atol=1e-6 * se_fa)
