"""Each asset materializes on a small generated dataset in a tmp warehouse, and writes what the
contract says, with its checks passing on clean data."""

import dagster as dg
import pytest

from mvt_pipeline.simulate import Faults

from .pipeline_runner import generate, ingest_again, query, read_truth, run_graph


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One small faulty dataset, run once through the whole graph, shared by the tests below."""
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("assets")
    import shutil

    from .conftest import SAMPLE_FLAGS, SAMPLE_REGISTRY

    data = base / "data"
    shutil.copytree(SAMPLE_REGISTRY, data / "registry")
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    mp.setenv("MVT_DATA_DIR", str(data))
    mp.setenv("MVT_DUCKDB_PATH", str(data / "warehouse" / "mvt.duckdb"))
    mp.setenv("MVT_REPORTS_DIR", str(data / "reports"))
    # 0.5% loss: below the 1% gate (as in the demo), so every night is analysed
    generate(data, users=3000, days=3, seed=11, faults=Faults.demo().model_copy(update={"loss_rate": 0.005}))
    nights = run_graph(data)
    yield data, nights, nights[-1:]
    mp.undo()


def _materialized(results) -> set[str]:
    keys = set()
    for result in results:
        for event in result.get_asset_materialization_events():
            keys.add(event.asset_key.to_user_string())
    return keys


def _checks(results) -> dict[tuple[str, str], bool]:
    out = {}
    for result in results:
        for ev in result.get_asset_check_evaluations():
            key = (ev.asset_key.to_user_string(), ev.check_name)
            out[key] = out.get(key, True) and ev.passed  # passed on every run (every day)
    return out


def test_every_asset_materializes(pipeline):
    data, nights, _ = pipeline
    assert all(r.success for r in nights)
    assert {r.dagster_run.job_name for r in nights} == {"nightly"}
    from .test_definitions import EXPECTED_ASSETS

    for night in nights:  # every asset, every night, for that night's partition
        assert _materialized([night]) == EXPECTED_ASSETS
        assert {ev.partition for ev in night.get_asset_materialization_events()} == {night.dagster_run.tags["dagster/partition"]}


def test_ingestion_accounts_for_every_line(pipeline):
    data, ingest, _ = pipeline
    truth = read_truth(data)
    log = query(data, "select sum(rows_read) r, sum(rows_accepted) a, sum(rows_quarantined) q from raw.ingest_log")
    assert int(log.r[0]) == truth["counts"]["lines_written"]
    assert int(log.r[0]) == int(log.a[0]) + int(log.q[0])
    assert int(log.q[0]) == sum(truth["counts"]["malformed"].values())
    checks = _checks(ingest)
    assert checks[("raw_events", "row_accounting")] is True
    assert checks[("raw_events", "gx_telemetry_schema")] is True


def test_dbt_marts_dedup_and_one_exposure_per_unit(pipeline):
    data, _, rest = pipeline
    truth = read_truth(data)
    stg = query(data, "select count(*) n, sum(n_copies - 1) dups from staging.stg_events")
    assert int(stg.n[0]) == truth["counts"]["events_written"]
    assert int(stg.dups[0]) == truth["counts"]["duplicates"]
    dup_units = query(data, "select count(*) n from (select experiment_id, unit_id from marts.fct_exposures group by 1, 2 having count(*) > 1)")
    assert int(dup_units.n[0]) == 0
    bots = query(data, "select count(distinct unit_id) n from marts.fct_exposures where is_bot")
    assert int(bots.n[0]) == truth["counts"]["bot_units"]
    dbt_checks = {k: v for k, v in _checks(rest).items()
                  if k[0] not in ("factorial_effects", "experiment_decisions", "stale_flag_audit", "raw_events",
                                 "experiment_registry")}
    assert dbt_checks and all(dbt_checks.values()), dbt_checks


def test_analysis_tables_and_reports(pipeline):
    data, _, rest = pipeline
    last = rest[0].dagster_run.tags["dagster/partition"]
    effects = query(data, "select * from analysis.effects where as_of = ?", [last])
    assert set(effects.experiment_id) == {"checkout_mvt", "search_ranking_frac", "pricing_abn"}
    ok = effects[effects.status == "ok"]
    assert (ok.ci_low <= ok.estimate).all() and (ok.estimate <= ok.ci_high).all()
    decisions = query(data, "select * from analysis.decisions where as_of = ?", [last])
    assert len(decisions) == 3
    reports = data / "reports"
    assert (reports / "index.html").exists() and (reports / last / "index.html").exists()
    for exp in ("checkout_mvt", "search_ranking_frac", "pricing_abn"):
        html = (reports / last / f"{exp}.html").read_text()
        assert exp in html and "<svg" in html and f"Night {last}" in html
        assert (reports / "latest" / f"{exp}.html").read_text() == html
    meta = [ev.materialization.metadata for r in rest for ev in r.get_asset_materialization_events()
            if ev.asset_key == dg.AssetKey("decision_reports")][0]
    assert meta["index"].value.endswith("index.html")
    flags = query(data, "select * from analysis.stale_flags where as_of = ?", [last])
    assert "orphan" in set(flags.classification)


def test_rerunning_ingestion_is_idempotent(pipeline):
    data, _, _ = pipeline
    before = query(data, "select count(*) n, sum(hash(event_id)) h from raw.events")
    assert all(r.success for r in ingest_again(data))
    after = query(data, "select count(*) n, sum(hash(event_id)) h from raw.events")
    assert before.equals(after)


def test_sample_ratio_mismatch_makes_that_experiment_invalid(workdir):
    # pricing_abn's actual allocation is skewed 50/25/25 against a planned 1/3 each.
    generate(workdir, users=3000, days=2, seed=5,
             faults=Faults(srm={"pricing_abn": {"pricing_banner": [0.5, 0.25, 0.25]}}))
    rest = run_graph(workdir)[-1:]
    assert rest[0].success  # one broken experiment does not hold back the others' decisions
    last = rest[0].dagster_run.tags["dagster/partition"]
    srm = query(workdir, "select experiment_id, passed from analysis.srm where as_of = ?", [last]).set_index("experiment_id")
    assert srm.loc["pricing_abn", "passed"] == False  # noqa: E712
    assert srm.loc["checkout_mvt", "passed"] == True  # noqa: E712
    checks = _checks(rest)
    assert checks[("factorial_effects", "srm_check")] is False
    decisions = query(workdir, "select * from analysis.decisions where as_of = ?", [last]).set_index("experiment_id")
    assert decisions.loc["pricing_abn", "decision"] == "invalid" and decisions.loc["pricing_abn", "rule"] == "srm"
    assert decisions.loc["checkout_mvt", "decision"] != "invalid"
    alerts = query(workdir, "select experiment_id, route, status from analysis.alerts where symptom = 'srm'")
    assert set(map(tuple, alerts[["experiment_id", "route"]].values.tolist())) == {("pricing_abn", "ticket")}
    assert (alerts["status"] != "suppressed").sum() == 1, alerts  # later nights within the quiet period: suppressed


def test_reports_keep_every_night_and_show_the_stored_numbers(pipeline):
    """Every night stays in reports/<as_of>/; the index and the page show the same decision row,
    every effect and guardrail row of the night, and a quantile metric's cells read as its P95."""
    import html as html_lib
    import re

    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.reports.decision_view import primary_lift_text, primary_share
    from mvt_pipeline.reports.formatting import fmt_effect, fmt_number, is_share_scale

    data, nights, rest = pipeline
    last = rest[0].dagster_run.tags["dagster/partition"]
    reports = data / "reports"
    kept = [r.dagster_run.tags["dagster/partition"] for r in nights]
    root = (reports / "index.html").read_text()
    for night in kept:
        assert (reports / night / "index.html").exists() and f'href="{night}/index.html"' in root
    registry = load_registry(data / "registry")
    metrics = {m.name: m for m in registry.metrics}
    index = html_lib.unescape((reports / last / "index.html").read_text())
    assert f"Night {last}" in index
    decisions = query(data, "select * from analysis.decisions where as_of = ?", [last])
    effects = query(data, "select * from analysis.effects where as_of = ? and status = 'ok'", [last])
    guardrails = query(data, "select * from analysis.guardrails where as_of = ?", [last])
    metadata = [ev.materialization.metadata for r in rest for ev in r.get_asset_materialization_events()
                if ev.asset_key == dg.AssetKey("experiment_decisions")][0]["decisions"].value
    for row in decisions.to_dict("records"):
        page_html = (reports / last / f"{row['experiment_id']}.html").read_text()
        page = html_lib.unescape(page_html)
        assert f"Night {last}" in page and row["report_path"] == str(reports / last / f"{row['experiment_id']}.html")
        metric = metrics[row["primary_metric"]]
        lift = primary_lift_text(row, metric, primary_share(row, metric))
        assert row["label"] in page and row["label"] in index
        assert lift in page and lift in index and lift in metadata  # one row, one text, three surfaces
        assert row["primary_estimate"] is None or lift != "\u2013"
        for e in effects[effects.experiment_id == row["experiment_id"]].itertuples():
            levels = effects.loc[(effects.experiment_id == row["experiment_id"]) & (effects.metric == e.metric),
                                 "control_mean"]
            share = is_share_scale(metrics[e.metric].kind, levels)  # a rate reads in pp
            assert fmt_effect(e.estimate, share) in page, (e.metric, e.term, e.estimate)
        g = guardrails[guardrails.experiment_id == row["experiment_id"]]
        table = re.search(r'<table class="effects guardrails">.*?</table>', page_html, re.S)
        assert (table is None and g.empty) or table.group(0).count("<tr>") - 1 == len(g)
    # the cells table of a quantile metric: its P95 per cell (what the guardrail compares), not a mean
    q = query(data, "select cell_id, quantile_value from marts.agg_cell_quantiles"
                    " where experiment_id = 'checkout_mvt' and metric = 'latency_p95'")
    page = html_lib.unescape((reports / last / "checkout_mvt.html").read_text())
    assert "latency_p95 P95" in page and "latency_p95 mean" not in page
    for r in q.itertuples():
        assert fmt_number(r.quantile_value) in page


def test_nights_keep_one_dbt_target_and_parse_only_what_changed(pipeline):
    """dbt's artifacts of every night sit in the warehouse's one dbt target folder, and the night is
    handed over in the environment (MVT_AS_OF), not --vars: after the first night dbt parses
    partially (a --vars that changes each night would make it parse the whole project each time)."""
    import json

    data, nights, _ = pipeline
    target = data / "warehouse" / "dbt_target"
    results = json.loads((target / "run_results.json").read_text())
    assert results["args"].get("vars") in (None, {}, "{}")
    assert results["args"]["which"] == "build"
    log = sorted((json.loads(line) for path in target.glob("dbt.log*")  # dbt rotates its log
                  for line in path.read_text().splitlines() if line.startswith("{")), key=lambda e: e["info"]["ts"])
    starts = [i for i, e in enumerate(log) if e["info"]["name"] == "MainReportVersion"]
    assert len(starts) == len(nights) >= 3
    full_parses = [i for i, e in enumerate(log) if e["info"]["name"] == "UnableToPartialParse"]
    assert all(i < starts[1] for i in full_parses), [log[i]["info"]["msg"] for i in full_parses]
    # and the marts were built for the last night, not for "every ingested day"
    last = nights[-1].dagster_run.tags["dagster/partition"]
    assert str(query(data, "select max(as_of) as a from staging.stg_events__as_of").a[0])[:10] == last
