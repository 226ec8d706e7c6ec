"""Segments from any context attribute the registry names (`segments: [browser, os.name, ...]`):
the first exposure's value, the top-K per segment and `other`, `unknown` for a missing value and
`redacted` for PII, checked against a pandas computation on the lines as written; then HTE and
per-segment SRM read the new segments. The registry refuses names that could escape a JSON path."""

from __future__ import annotations

import random

import duckdb
import pandas as pd
import pytest
from pydantic import ValidationError

from mvt_pipeline.analysis.hte_table import all_hte
from mvt_pipeline.registry import load_registry
from mvt_pipeline.registry.models import Experiment
from mvt_pipeline.warehouse.store import cell_stats

from .test_dbt_marts import REGISTRY_METRICS, Events, dbt, ingest, query

TOP_K = 3
SEGMENTS = ["browser", "os.name", "plan", "user_agent", "fa", "note"]  # `fa`: also a factor's name
MAX_CHARS = 200  # dbt var segment_value_max_chars
REGISTRY = f"""
experiments:
  - id: exp-seg.v2
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {{name: fa, flag_key: a, control: a0, levels: [a0, a1]}}
    metrics: {{primary: [conv]}}
    segments: [{", ".join(SEGMENTS)}]
    segment_top_k: {TOP_K}
    min_units_per_cell: 20
"""
BROWSERS = ["chrome"] * 9 + ["safari"] * 5 + ["firefox"] * 3 + ["edge", "opera", "brave"] * 1
PLANS = ["free", "pro", "team", "enterprise", "", None, "ada@example.com"]


def _context(rng: random.Random, i: int) -> dict:
    ctx = {"browser": rng.choice(BROWSERS), "os": {"name": rng.choice(["ios", "android", "linux"])},
           "user_agent": f"Agent/{i % 7}", "fa": rng.choice(["x", "y"]),
           "note": rng.choice(["n" * 300, "n" * 250 + "m"])}  # one value once cut
    plan = rng.choice(PLANS)
    if plan is not None:
        ctx["plan"] = plan
    if i % 2 == 0:
        ctx["os.name"] = "flat-key"  # a flat key holding dots wins over the nested path
    if i % 13 == 0:
        ctx["browser"] = 3.5  # not a string: its text is the value
    return ctx


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data = tmp_path_factory.mktemp("segments")
    reg = data / "registry"
    reg.mkdir()
    (reg / "experiments.yaml").write_text(REGISTRY)
    (reg / "metrics.yaml").write_text(REGISTRY_METRICS)
    rng = random.Random(7)
    ev, units = Events(), []
    for i in range(400):
        unit, level = f"u{i}", rng.choice(["a0", "a1"])
        first = _context(rng, i)
        day = 10 + i % 3
        ev.exposure(unit, f"2026-01-{day}T09:00:00", experiment="exp-seg.v2", fa=level, context=first)
        # a later exposure with another context: the first one decides the segments
        ev.exposure(unit, f"2026-01-{day}T15:00:00", experiment="exp-seg.v2", fa=level,
                    context={"browser": "later", "plan": "later", "os": {"name": "later"}})
        converts = rng.random() < (0.3 if level == "a0" else 0.4)
        if converts:
            ev.metric(unit, f"2026-01-{day}T16:00:00", "buy", 1, context={})
        units.append({"unit_id": unit, "cell_id": f"fa={level}", "conv": int(converts), "ctx": first})
    ev.write(data / "raw")
    ingest(data)
    dbt(data, "build")
    return data, pd.DataFrame(units)


def _expected_values(units: pd.DataFrame, segment: str) -> pd.Series:
    """The segment value of each unit, computed from the contexts as written."""
    def raw(ctx):
        if segment in ctx:
            value = ctx[segment]
        else:
            value = ctx
            for part in segment.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if value is None or str(value).strip() == "":
            return "unknown"
        text = str(value)[:MAX_CHARS]
        return "redacted" if "@" in text else text

    values = units["ctx"].map(raw)
    real = values[~values.isin(["unknown", "redacted"])]
    counts = real.value_counts().reset_index()
    counts.columns = ["value", "n"]
    kept = set(counts.sort_values(["n", "value"], ascending=[False, True])["value"].head(TOP_K))
    return values.where(values.isin(kept | {"unknown", "redacted"}), "other")


@pytest.mark.parametrize("segment", SEGMENTS)
def test_segment_cells_equal_an_independent_count(built, segment):
    data, units = built
    units = units.assign(value=_expected_values(units, segment))
    expected = (units.groupby(["cell_id", "value"]).agg(n_units=("conv", "size"), conv=("conv", "sum"))
                .reset_index().sort_values(["cell_id", "value"]).values.tolist())
    with duckdb.connect(str(data / "wh.duckdb"), read_only=True) as conn:
        got = conn.execute("select cell_id, segment_value, n_units, sum from marts.agg_cell_stats"
                           " where experiment_id = 'exp-seg.v2' and metric = 'conv' and segment = ?"
                           " order by cell_id, segment_value", [segment]).fetchall()
    assert [list(r[:3]) + [int(r[3])] for r in got] == expected


def test_values_are_bounded_redacted_and_first_exposure_only(built):
    data, _ = built
    rows = dict(query(data, "select segment, list(distinct segment_value order by segment_value)"
                            " from marts.fct_unit_segments group by segment"))
    assert {"other", "redacted", "unknown"} <= set(rows["plan"])
    assert "other" in rows["browser"] and "other" in rows["user_agent"]
    assert all(len(set(v) - {"other", "unknown", "redacted"}) <= TOP_K for v in rows.values())
    assert "flat-key" in rows["os.name"]
    assert rows["note"] == ["n" * MAX_CHARS]
    assert not any("later" in v for v in rows.values())
    assert not any("@" in x for v in rows.values() for x in v)
    # the whole context is kept for exposures only
    assert query(data, "select count(*) from staging.stg_events"
                       " where event_type = 'metric' and exposure_context is not null") == [(0,)]


def test_hte_and_srm_read_the_attribute_segments(built):
    data, _ = built
    registry = load_registry(data / "registry")
    with duckdb.connect(str(data / "wh.duckdb"), read_only=True) as conn:
        segment_rows = cell_stats(conn, overall=False)
    seg, hetero, _ = all_hte(registry, segment_rows)
    # `note` has one value once cut: nothing to compare
    assert set(hetero["segment_variable"]) == set(SEGMENTS) - {"note"}
    assert "other" in set(seg.loc[seg["segment_variable"] == "browser", "segment"])

    from mvt_pipeline.analysis.srm_table import _segment_flags
    planned = {"fa=a0": 0.5, "fa=a1": 0.5}
    flags = _segment_flags(registry.experiments[0], planned, segment_rows)
    assert set(flags) == set(SEGMENTS)


@pytest.mark.parametrize("name", ['a"b', "a b", "$.x", "a..b", ".a", "a.", "overall", "x" * 64,
                                  "a'b", "a[0]", "a\\b"])
def test_segment_names_that_could_escape_a_json_path_are_refused(name):
    base = {"id": "e", "owner": "t", "hypothesis": "h", "status": "running", "start_date": "2026-01-01",
            "factors": [{"name": "fa", "flag_key": "a", "control": "a0", "levels": ["a0", "a1"]}],
            "metrics": {"primary": ["conv"]}}
    Experiment.model_validate({**base, "segments": ["browser", "os.name", "plan-tier"]})
    with pytest.raises(ValidationError):
        Experiment.model_validate({**base, "segments": [name]})
    with pytest.raises(ValidationError):
        Experiment.model_validate({**base, "segments": ["browser", "browser"]})
