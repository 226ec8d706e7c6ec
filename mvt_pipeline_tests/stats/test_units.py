"""Per-unit / per-event entry points: `analyze_units` with a list of factor names and
`quantile_cell_stats`, checked against pandas/numpy computations of the definitions and against
the dbt model `agg_cell_quantiles` itself (its SQL run on duckdb)."""

import itertools
import math
from pathlib import Path

import duckdb
import jinja2
import numpy as np
import pandas as pd
import pytest

from mvt_pipeline.stats import QUANTILE_COLUMNS, analyze_quantile_cells, analyze_units, quantile_cell_stats

MART = Path(__file__).resolve().parents[2] / "dbt" / "models" / "marts" / "agg_cell_quantiles.sql"
Z = 1.959963984540054  # dbt_project.yml var quantile_ci_z


def units_frame(seed=5):
    rng = np.random.default_rng(seed)
    rows = []
    for a, b in itertools.product(["a1", "a0"], ["b1", "b2", "b0"]):  # data order is not level order
        n = int(rng.integers(40, 90))
        rows.append(pd.DataFrame({"A": a, "B": b, "y": rng.normal(3 + (a == "a1") + 0.5 * (b == "b2"), 2, n)}))
    return pd.concat(rows, ignore_index=True)


def test_analyze_units_accepts_a_list_of_factor_names():
    data = units_frame()
    res = analyze_units(data, "y", ["A", "B"])
    cm = data.groupby(["A", "B"])["y"].mean()
    marg_a = cm.groupby(level="A").mean()
    marg_b = cm.groupby(level="B").mean()
    eff = res.effects.set_index(["term", "level"])
    # levels from the data, sorted: control = first = a0 / b0
    assert eff.loc[("A", "a1"), "estimate"] == pytest.approx(marg_a["a1"] - marg_a["a0"], rel=1e-12)
    assert eff.loc[("B", "b2"), "estimate"] == pytest.approx(marg_b["b2"] - marg_b["b0"], rel=1e-12)
    # robust SE of a 2-level main effect: sqrt(sum_c (w_c^2 s_c^2 / n_c)), w = +-1/3 over the 6 cells
    g = data.groupby(["A", "B"])["y"]
    se = math.sqrt(((g.var(ddof=1) / g.size()) / 9).sum())
    assert eff.loc[("A", "a1"), "std_error"] == pytest.approx(se, rel=1e-10)
    # the registry's control comes first, the other levels keep the sorted order
    ctl = analyze_units(data, "y", ["A", "B"], control={"B": "b2"}).effects
    b_rows = ctl[ctl.term == "B"].set_index("level")["estimate"]
    assert list(b_rows.index) == ["b0", "b1"]
    assert b_rows["b1"] == pytest.approx(marg_b["b1"] - marg_b["b2"], rel=1e-12)
    assert analyze_units(data, "y", "A").effects.iloc[0].estimate == pytest.approx(
        data[data.A == "a1"].y.mean() - data[data.A == "a0"].y.mean(), rel=1e-12)


# --- quantile_cell_stats ------------------------------------------------------------------------


def events_frame(seed=11, tiny=True):
    """Latency events, several per user, integer milliseconds (ties), one tiny cell (clamped ranks)."""
    rng = np.random.default_rng(seed)
    parts, uid = [], 0
    for a, b in itertools.product(["a0", "a1"], ["b0", "b1"]):
        n_users = 3 if tiny and (a, b) == ("a1", "b1") else int(rng.integers(150, 250))
        m = 1 + rng.poisson(3, n_users)
        users = np.repeat(np.arange(uid, uid + n_users), m)
        uid += n_users
        u = rng.normal(0, 0.3, n_users)[users - users.min()]
        value = np.round(np.exp(5 + 0.1 * (a == "a1") + u + rng.normal(0, 0.5, len(users))))
        parts.append(pd.DataFrame({"A": a, "B": b, "unit_id": users, "value": value}))
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=1).reset_index(drop=True)


def numpy_reference(values, units, q, z=Z):
    """The mart's definition for one cell, from the sorted values."""
    x = np.sort(values)
    big_n = len(x)
    half = z * math.sqrt(big_n * q * (1 - q))
    clamp = lambda r: int(min(max(r, 1), big_n))  # noqa: E731
    point, lower, upper = clamp(math.ceil(big_n * q)), clamp(math.floor(big_n * q - half)), clamp(math.ceil(big_n * q + half))
    qv = x[point - 1]
    uniq, inv = np.unique(units, return_inverse=True)
    m = np.bincount(inv).astype(float)
    k = np.bincount(inv, weights=(values <= qv).astype(float))
    return {"n": len(uniq), "q": q, "n_events": big_n, "quantile_value": qv, "ci_lower_value": x[lower - 1],
            "ci_upper_value": x[upper - 1], "ci_z": z, "k_sum": k.sum(), "k_sum_sq": (k * k).sum(),
            "m_sum_sq": (m * m).sum(), "k_m_sum": (k * m).sum(), "rank_point": point, "rank_lower": lower,
            "rank_upper": upper}, k, m


def run_mart(events: pd.DataFrame, q: float) -> pd.DataFrame:
    """agg_cell_quantiles.sql rendered against in-memory tables and run on duckdb."""
    sql = jinja2.Template(MART.read_text()).render(
        source=lambda _schema, table: table, ref=lambda model: model,
        var=lambda name: {"quantile_ci_z": Z}[name])
    outcomes = events.assign(experiment_id="e", source_metric="latency", period="post",
                             cell_id="A=" + events["A"] + "|B=" + events["B"])
    with duckdb.connect() as conn:
        conn.register("fct_outcomes", outcomes)
        conn.register("registry_experiment_metrics", pd.DataFrame({"experiment_id": ["e"], "metric": ["lat_p95"],
                                                                   "role": ["guardrail"]}))
        conn.register("registry_metrics", pd.DataFrame({"metric": ["lat_p95"], "source_metric": ["latency"],
                                                        "q": [q], "kind": ["quantile"]}))
        return conn.execute(sql).df()


@pytest.mark.parametrize("q", [0.95, 0.5])
def test_quantile_cell_stats_equal_the_mart_and_numpy(q):
    events = events_frame()
    ours = quantile_cell_stats(events, "value", ["A", "B"], q=q, unit="unit_id")
    assert list(ours.columns[:2]) == ["A", "B"] and set(QUANTILE_COLUMNS) <= set(ours.columns)
    ours = ours.assign(cell_id="A=" + ours["A"] + "|B=" + ours["B"]).set_index("cell_id").sort_index()
    mart = run_mart(events, q).set_index("cell_id").sort_index()
    shared = [c for c in mart.columns if c in ours.columns]
    assert set(QUANTILE_COLUMNS) - {"n"} <= set(shared) and "n_units" in shared
    pd.testing.assert_frame_equal(ours[shared].astype(float), mart[shared].astype(float), check_exact=True)
    assert (ours["n"] == mart["n_units"]).all()
    for (a, b), cell in events.groupby(["A", "B"]):
        ref, _, _ = numpy_reference(cell["value"].to_numpy(), cell["unit_id"].to_numpy(), q)
        got = ours.loc[f"A={a}|B={b}"]
        for key, value in ref.items():
            assert got[key] == value, (a, b, key)


def test_quantile_cell_stats_round_trip_through_analyze_quantile_cells():
    events = events_frame(tiny=False)
    q = 0.95
    cells = quantile_cell_stats(events, "value", ["A", "B"], q=q, unit="unit_id")
    res = analyze_quantile_cells(cells, {"A": ["a0", "a1"], "B": ["b0", "b1"]})
    ref, qv, se = {}, {}, {}
    for (a, b), cell in events.groupby(["A", "B"]):
        r, k, mm = numpy_reference(cell["value"].to_numpy(), cell["unit_id"].to_numpy(), q)
        n, big_n = len(k), mm.sum()
        p_hat = k.sum() / big_n
        var_cluster = ((k - p_hat * mm) ** 2).sum() / ((n - 1) * n * (big_n / n) ** 2)  # delta method, ratio K/M
        deff = var_cluster / (q * (1 - q) / big_n)
        qv[a, b] = r["quantile_value"]
        se[a, b] = (r["ci_upper_value"] - r["ci_lower_value"]) / (2 * Z) * math.sqrt(deff)
        ref[a, b] = deff
    cm = res.cell_means.set_index(["A", "B"])
    for key in ref:
        assert cm.loc[key, "design_effect"] == pytest.approx(ref[key], rel=1e-10)
        assert cm.loc[key, "std_error"] == pytest.approx(se[key], rel=1e-10)
    main_a = res.effects.set_index("term").loc["A"]
    est = (qv["a1", "b0"] + qv["a1", "b1"] - qv["a0", "b0"] - qv["a0", "b1"]) / 2
    assert main_a.estimate == pytest.approx(est, rel=1e-12)
    assert main_a.std_error == pytest.approx(math.sqrt(sum(s**2 for s in se.values())) / 2, rel=1e-10)


def test_quantile_cell_stats_without_unit_treats_rows_as_units():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"A": np.repeat(["a0", "a1"], 500), "y": rng.exponential(100, 1000)})
    cells = quantile_cell_stats(data, "y", ["A"], q=0.9)
    assert (cells["n"] == cells["n_events"]).all() and (cells["m_sum_sq"] == cells["n_events"]).all()
    assert (cells["k_sum"] == cells["k_sum_sq"]).all()
    for a, part in data.groupby("A"):
        x = np.sort(part["y"].to_numpy())
        assert cells.set_index("A").loc[a, "quantile_value"] == x[math.ceil(500 * 0.9) - 1]
    with pytest.raises(ValueError, match="q must be"):
        quantile_cell_stats(data, "y", ["A"], q=1.0)
