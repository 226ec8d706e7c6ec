"""A quantile guardrail with too few events in a cell: the flag reaches the effects table and the
cell contrasts, and every guardrail row resting on that cell is `inconclusive`, never `ok`, however
comfortably the estimate sits inside the margin. The other rows are judged as usual."""

import math

import numpy as np
import pandas as pd

from mvt_pipeline.analysis.cell_contrasts import experiment_contrasts
from mvt_pipeline.analysis.effects_table import all_effects
from mvt_pipeline.analysis.guardrails import all_guardrails
from mvt_pipeline.registry.models import Metric, Registry
from mvt_pipeline_tests.analysis.test_decisions import C00, C01, C10, C11, FLAT_CONV, FLAT_ERR, cell_stats, experiment, simulate
from mvt_pipeline_tests.stats.test_quantile import quantile_inputs

LAT = Metric(name="lat_p99", kind="quantile", source="lat", q=0.99, direction="lower", non_inferiority_margin=400.0,
             unit="ms")
CONV = Metric(name="conv", kind="binary", source="buy", direction="higher", unit="pp")


def quantile_rows(users: dict[str, int], seed: int = 3) -> pd.DataFrame:
    """`agg_cell_quantiles` rows (numpy re-typing of the SQL) of clustered latencies, same in all cells."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell, n_users in users.items():
        m = 1 + rng.poisson(4, n_users)
        units = np.repeat(np.arange(n_users), m)
        values = np.exp(math.log(180) + rng.normal(0, 0.3, n_users)[units] + rng.normal(0, 0.5, len(units)))
        st = quantile_inputs(values, units, 0.99)
        rows.append({"experiment_id": "exp", "metric": "lat_p99", "role": "guardrail", "cell_id": cell,
                     "n_units": st.pop("n"), **st})
    return pd.DataFrame(rows)


def night(roles: dict):
    exp = experiment(decision_basis="fixed", metrics=roles)
    registry = Registry(experiments=[exp], metrics=[CONV, LAT])
    stats = cell_stats(simulate(exp, FLAT_CONV, FLAT_ERR, 3000, seed=2), exp)
    quantiles = quantile_rows({C00: 1500, C10: 1500, C01: 1500, C11: 40})  # C11: ~200 events < 381
    effects = all_effects(registry, stats, agg_cell_quantiles=quantiles)
    return exp, registry, stats, quantiles, effects


def test_clamped_quantile_cell_makes_its_guardrail_rows_inconclusive():
    exp, registry, stats, quantiles, effects = night({"primary": ["conv"], "guardrails": ["lat_p99"]})
    lat = effects[effects["metric"] == "lat_p99"]
    assert (lat["status"] == "quantile_rank_clamped").all()  # 2x2: every effect uses C11
    assert (effects.loc[effects["metric"] == "conv", "status"] == "ok").all()
    contrasts = experiment_contrasts(exp, registry, stats, quantiles, roles=("guardrail",)).set_index("cell_id")
    assert contrasts["status"].to_dict() == {C10: "ok", C01: "ok", C11: "quantile_rank_clamped"}
    g = all_guardrails(registry, effects, stats, quantiles)
    status = g.set_index("cell")["status"].to_dict()
    # equal latency everywhere and a 400 ms margin: the usable rows are non-inferior...
    assert status[C10] == "ok" and status[C01] == "ok"
    # ...the rows resting on C11 are not, whatever their numbers say
    assert status[C11] == "inconclusive" and status["fa=a1"] == "inconclusive" and status["fb=b1"] == "inconclusive"
    c11 = g.set_index("cell").loc[C11]
    assert c11["p_noninferiority"] < exp.alpha  # it would have been `ok`


def test_clamped_rows_get_no_q_value_in_the_decision_family():
    """A flagged secondary quantile is left out of the secondary BH family (no valid p-value)."""
    _, _, _, _, effects = night({"primary": ["conv"], "secondary": ["lat_p99"]})
    lat = effects[effects["metric"] == "lat_p99"]
    assert lat["q_value"].isna().all() and lat["seq_q_value"].isna().all() and lat["p_value"].notna().all()
    assert effects.loc[effects["metric"] == "conv", "q_value"].notna().all()
