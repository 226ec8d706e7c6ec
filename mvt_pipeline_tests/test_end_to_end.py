"""The whole graph on simulated data with a known 2x2 effect recovers the truth.

The truth comes from the simulator's parameters (not from our engine): the main effects must lie
inside their 95% CIs, and the interaction CI must cover zero because the true interaction is zero.
"""

import shutil

import yaml

from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.simulate import ExperimentTruth, Faults, MetricTruth

from .conftest import SAMPLE_REGISTRY
from .pipeline_runner import generate, ingest_again, query, read_truth, run_graph

EXPERIMENT = {
    "id": "banner_2x2", "owner": "team-e2e", "hypothesis": "Both factors lift conversion, independently.",
    "unit": "user", "status": "running", "start_date": "2026-11-01", "end_date": "2026-12-31",
    "factors": [
        {"name": "headline", "levels": ["old", "new"], "control": "old", "flag_key": "banner-headline"},
        {"name": "image", "levels": ["none", "photo"], "control": "none", "flag_key": "banner-image"},
    ],
    "metrics": {"primary": ["checkout_conversion"], "secondary": [], "guardrails": []},
    "attribution_window_days": 7,
}
TRUE_EFFECTS = {"headline": ("new", 0.04), "image": ("photo", 0.025)}


def test_known_2x2_effects_are_recovered(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "flags").mkdir()
    (data / "registry" / "experiments.yaml").write_text(yaml.safe_dump({"experiments": [EXPERIMENT]}))
    shutil.copy(SAMPLE_REGISTRY / "metrics.yaml", data / "registry" / "metrics.yaml")
    monkeypatch.setenv("MVT_DATA_DIR", str(data))
    monkeypatch.setenv("MVT_DUCKDB_PATH", str(data / "warehouse" / "mvt.duckdb"))
    monkeypatch.setenv("MVT_REPORTS_DIR", str(data / "reports"))

    truth_spec = {"banner_2x2": ExperimentTruth(exposure_rate=0.9, metrics={"checkout_conversion": MetricTruth(
        baseline=0.10,
        main_effects={f: {lvl: d} for f, (lvl, d) in TRUE_EFFECTS.items()},
        interactions={"headline:image": {"new:photo": 0.0}},
    )})}
    # Faults that the pipeline must clean up without biasing the effects (no loss: it scales rates).
    faults = Faults(duplicate_rate=0.03, late_rate=0.02, bot_share=0.02, flip_rate=0.01,
                    malformed_rate=0.002, pii_rate=0.002)
    generate(data, users=16000, days=4, seed=2026, faults=faults, truth=truth_spec)
    truth = read_truth(data)
    true_effects = {(e["term"], e["level"]): e["estimate"]
                    for e in truth["experiments"]["banner_2x2"]["metrics"]["checkout_conversion"]["effects"]}

    # the earlier days ingested as `mvt ingest` does, then the last night through the `nightly` job
    days = dump_days(data / "raw")
    assert all(r.success for r in ingest_again(data, days=days[:-1]))
    nights = run_graph(data, days[-1:])
    assert all(r.success for r in nights)
    assert {r.dagster_run.job_name for r in nights} == {"nightly"}
    last = nights[-1].dagster_run.tags["dagster/partition"]

    effects = query(data, "select * from analysis.effects where experiment_id = 'banner_2x2'"
                          " and metric = 'checkout_conversion' and as_of = ?", [last]).set_index(["term", "level"])
    for factor, (level, delta) in TRUE_EFFECTS.items():
        row = effects.loc[(factor, level)]
        assert abs(true_effects[(factor, level)] - delta) < 1e-12  # the simulator's truth is the spec
        assert row.ci_low <= delta <= row.ci_high, (factor, row.estimate, row.ci_low, row.ci_high)
        assert row.ci_low > 0  # and the effect is detected
    inter = effects.loc[("headline:image", "new:photo")]
    assert inter.ci_low <= 0.0 <= inter.ci_high

    # Flipped and bot units were excluded, so analysed units are the clean humans of the truth.
    units = query(data, "select sum(n) n from marts.agg_cell_stats where experiment_id = 'banner_2x2'"
                        " and metric = 'checkout_conversion' and segment = 'overall'")
    human = sum(truth["experiments"]["banner_2x2"]["units_per_cell"].values())
    flipped = truth["experiments"]["banner_2x2"]["flipped_units"]
    assert int(units.n[0]) == human - flipped


def test_interaction_harm_pages_through_the_nightly_job(tmp_path, monkeypatch):
    """Breach -> guardrail row -> decision -> alert row -> webhook call, through the real `nightly`
    job: the error rate rises only where the new headline meets the photo."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "flags").mkdir()
    experiment = EXPERIMENT | {"id": "guard_2x2", "planned_units": 8000,
                               "metrics": {"primary": ["checkout_conversion"], "guardrails": ["error_rate"]}}
    (data / "registry" / "experiments.yaml").write_text(yaml.safe_dump({"experiments": [experiment]}))
    shutil.copy(SAMPLE_REGISTRY / "metrics.yaml", data / "registry" / "metrics.yaml")
    for var, value in {"MVT_DATA_DIR": data, "MVT_DUCKDB_PATH": data / "warehouse" / "mvt.duckdb",
                       "MVT_REPORTS_DIR": data / "reports",
                       "MVT_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{server.server_address[1]}/page"}.items():
        monkeypatch.setenv(var, str(value))
    truth = {"guard_2x2": ExperimentTruth(exposure_rate=0.9, metrics={
        "checkout_conversion": MetricTruth(baseline=0.10),
        "error_rate": MetricTruth(baseline=0.01, interactions={"headline:image": {"new:photo": 0.03}})})}
    generate(data, users=6000, days=2, seed=7, faults=Faults(), truth=truth)
    try:
        nights = run_graph(data)
    finally:
        server.shutdown()
    assert all(r.success for r in nights)
    last = nights[-1].dagster_run.tags["dagster/partition"]
    cell = "headline=new|image=photo"
    guard = query(data, "select * from analysis.guardrails where as_of = ? and scope = 'cell'", [last])
    assert guard.set_index("cell").loc[cell, "status"] == "harm"
    decision = query(data, "select * from analysis.decisions where as_of = ?", [last]).iloc[0]
    assert decision["decision"] == "stop_harm" and decision["cell"] == cell
    assert json.loads(decision["flags"]) == {"banner-headline": "new", "banner-image": "photo"}
    alerts = query(data, "select * from analysis.alerts where symptom = 'guardrail_harm' order by created_at")
    assert alerts["status"].iloc[0] == "delivered" and alerts["route"].iloc[0] == "page"
    pages = [r for r in received if r["alert"]["symptom"] == "guardrail_harm"]
    assert len(pages) == 1  # the second night repeats the harm inside the quiet period: suppressed
    assert cell in pages[0]["text"] and "banner-headline=new, banner-image=photo" in pages[0]["text"]
    assert "error_rate" in pages[0]["text"]
