"""`sources.yaml` formats mapped to the contract at ingestion (issue #17, part 1): GrowthBook's
tracking shape; every bad line quarantined with all of its reasons; the accounting unchanged."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
import yaml

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.registry import RegistryError, load_registry

from .conftest import SAMPLE_REGISTRY

DAY = "2026-11-02"
EXPERIMENT = {"id": "checkout-exp", "owner": "t", "hypothesis": "h", "status": "running", "start_date": "2026-11-01",
              "factors": [{"name": "layout", "levels": ["control", "one_page"], "control": "control",
                           "sdk_key": "checkout-exp", "variations": {"0": "control", "1": "one_page"}}],
              "metrics": {"primary": ["checkout_conversion"]}}
GOOD = {"experimentId": "checkout-exp", "variationId": 1, "hashAttribute": "id", "hashValue": "user-0",
        "userId": "user-0", "timestamp": "2026-11-02T10:00:00Z", "inExperiment": True, "featureId": "checkout-layout"}


def _registry(tmp_path, sources):
    reg = tmp_path / "registry"
    reg.mkdir()
    shutil.copy(SAMPLE_REGISTRY / "metrics.yaml", reg / "metrics.yaml")
    (reg / "experiments.yaml").write_text(yaml.safe_dump({"experiments": [EXPERIMENT]}))
    if sources is not None:
        (reg / "sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return load_registry(reg)


def _ingest(tmp_path, registry, lines, source="gb_web"):
    folder = tmp_path / "raw" / source / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    conn = duckdb.connect()
    return conn, ingest_partition(conn, tmp_path / "raw", DAY, registry)


def test_growthbook_lines_map_to_exposures_and_bad_ones_list_every_reason(tmp_path):
    registry = _registry(tmp_path, [{"name": "gb_web", "format": "growthbook"}])
    lines = [
        GOOD,
        GOOD,  # the SDK retried: the same derived event id (deduplicated in staging)
        {"experiment_id": "checkout-exp", "variation_id": "0", "hash_value": "user-1", "timestamp": "2026-11-02T11:00:00Z"},
        {**GOOD, "variationId": 7},                        # no such variation
        {**GOOD, "experimentId": "not-in-the-registry"},
        {**GOOD, "inExperiment": False},                   # the SDK says: not an exposure
        {"experimentId": "checkout-exp", "hashValue": "user-2"},  # no timestamp, no variation
        "{not json",
    ]
    conn, summary = _ingest(tmp_path, registry, lines)
    assert (summary.rows_read, summary.rows_accepted, summary.rows_quarantined) == (8, 3, 5)
    events = conn.execute("select event_id, unit_id, experiment_id, assignment::varchar from raw.events "
                          "order by line_number").fetchall()
    assert events[0] == events[1] and events[0][0].startswith("gb-")
    assert [e[1:] for e in events] == [("user-0", "checkout-exp", '{"layout":"one_page"}')] * 2 + [
        ("user-1", "checkout-exp", '{"layout":"control"}')]
    got = dict((n, reasons) for n, reasons in conn.execute(
        "select line_number, reasons from raw.quarantine order by 1").fetchall())
    assert got == {4: ["unknown_level"], 5: ["unknown_experiment"], 6: ["not_in_experiment"],
                   7: ["missing_required:ts", "missing_required:assignment"], 8: ["malformed_json"]}


def test_growthbook_user_attributes_become_the_context(tmp_path):
    registry = _registry(tmp_path, [{"name": "gb_web", "format": "growthbook"}])
    lines = [{**GOOD, "attributes": {"browser": "safari", "company": {"plan": "pro"}, "sdk_key": "spoof"}},
             {**GOOD, "hashValue": "user-9", "context": {"browser": "edge"}},
             {**GOOD, "hashValue": "user-8", "attributes": "not an object"}]
    conn, summary = _ingest(tmp_path, registry, lines)
    assert summary.rows_accepted == 3
    rows = conn.execute("select context->>'browser', context->>'$.company.plan', context->>'sdk_key'"
                        " from raw.events order by line_number").fetchall()
    assert rows == [("safari", "pro", "checkout-exp"), ("edge", None, "checkout-exp"), (None, None, "checkout-exp")]


def test_a_folder_not_listed_is_the_contract(tmp_path):
    registry = _registry(tmp_path, None)
    _conn, summary = _ingest(tmp_path, registry, [GOOD])
    assert summary.rows_accepted == 0 and summary.reasons == {"missing_required:event_id": 1}


def test_the_unit_setting_picks_the_user_id(tmp_path):
    registry = _registry(tmp_path, [{"name": "gb_web", "format": "growthbook", "unit": "user_id"}])
    conn, _ = _ingest(tmp_path, registry, [{**GOOD, "hashValue": "device-9", "userId": "user-0"}])
    assert conn.execute("select unit_id from raw.events").fetchone() == ("user-0",)


@pytest.mark.parametrize("sources, fragment", [
    ([{"name": "x", "format": "csv-ish"}], "is not one of ['contract', 'growthbook', 'segment', 'otel']"),
    ([{"name": "x", "format": "segment", "unit": "hash_value"}], "unit 'hash_value' does not apply to format 'segment'"),
    ([{"name": "x", "format": "growthbook", "metrics": [{"event": "Order Completed", "metric": "checkout"}]}],
     "only segment and otel sources map events, not 'growthbook'"),
    ([{"name": "x", "format": "otel", "unit": "user_id"}], "unit 'user_id' does not apply to format 'otel'"),
    ([{"name": "x", "format": "segment", "metrics": [{"event": "A'; drop", "metric": "checkout"}]}], "metrics.0.event"),
    ([{"name": "x", "format": "segment", "metrics": [{"event": "Done", "metric": "checkout", "value": "a..b"}]}],
     "metrics.0.value"),
    ([{"name": "x"}, {"name": "x"}], "sources listed more than once: ['x']"),
    ([{"name": "../up", "format": "growthbook"}], "sources[0]"),
])
def test_bad_sources_files_name_the_entry_and_reason(tmp_path, sources, fragment):
    with pytest.raises(RegistryError) as err:
        _registry(tmp_path, sources)
    assert "sources.yaml" in str(err.value) or "registry" in str(err.value)
    assert fragment in str(err.value)


def test_changing_a_source_format_reingests(tmp_path):
    registry = _registry(tmp_path, None)
    conn, first = _ingest(tmp_path, registry, [GOOD])
    (tmp_path / "registry" / "sources.yaml").write_text(
        yaml.safe_dump({"sources": [{"name": "gb_web", "format": "growthbook"}]}))
    again = ingest_partition(conn, tmp_path / "raw", DAY, load_registry(tmp_path / "registry"))
    assert not again.skipped_unchanged and again.rows_accepted == 1 and first.rows_accepted == 0


SEGMENT_VIEW = {"type": "track", "event": "Experiment Viewed", "userId": "user-0", "anonymousId": "anon-0",
                "messageId": "m-1", "timestamp": "2026-11-02T10:00:00.250Z", "receivedAt": "2026-11-02T10:00:01Z",
                "properties": {"experimentId": "checkout-exp", "variationId": "1"},
                "context": {"library": {"name": "analytics.js"}, "ip": "108.0.78.21"}}


def test_segment_track_calls_map_to_exposures_and_metrics(tmp_path):
    registry = _registry(tmp_path, [{"name": "seg", "format": "segment", "metrics": [
        {"event": "Order Completed", "metric": "checkout", "value": "revenue"},
        {"event": "Signed Up", "metric": "signup"}]}])
    lines = [
        SEGMENT_VIEW,
        {**SEGMENT_VIEW, "messageId": "m-2", "userId": None, "properties": {"experiment_id": "checkout-exp",
                                                                            "variation_id": "0"}},
        {**SEGMENT_VIEW, "messageId": "m-3", "event": "Order Completed", "properties": {"revenue": 42.5}},
        {**SEGMENT_VIEW, "messageId": "m-4", "event": "Signed Up", "properties": {}},
        {**SEGMENT_VIEW, "messageId": "m-5", "event": "Order Completed", "properties": {"revenue": "lots"}},
        {**SEGMENT_VIEW, "messageId": "m-6", "event": "Page Scrolled"},           # not mapped
        {"type": "identify", "userId": "user-0", "messageId": "m-7", "traits": {"plan": "pro"}},
        {**SEGMENT_VIEW, "messageId": None, "properties": {"experimentId": "checkout-exp", "variationId": "9"}},
    ]
    conn, summary = _ingest(tmp_path, registry, lines, source="seg")
    assert (summary.rows_read, summary.rows_accepted, summary.rows_quarantined) == (8, 4, 4)
    events = conn.execute("select event_id, event_type, unit_id, experiment_id, assignment::varchar, metric, value "
                          "from raw.events order by line_number").fetchall()
    assert events == [
        ("m-1", "exposure", "user-0", "checkout-exp", '{"layout":"one_page"}', None, None),
        ("m-2", "exposure", "anon-0", "checkout-exp", '{"layout":"control"}', None, None),  # no userId: anonymousId
        ("m-3", "metric", "user-0", None, None, "checkout", 42.5),
        ("m-4", "metric", "user-0", None, None, "signup", 1.0),  # no value property: a count
    ]
    # the context is kept, its IP redacted like any other
    assert "108.0.78.21" not in conn.execute("select string_agg(context::varchar) from raw.events").fetchone()[0]
    got = dict(conn.execute("select line_number, reasons from raw.quarantine order by 1").fetchall())
    assert got == {5: ["bad_type:value"], 6: ["unmapped_event"], 7: ["unmapped_event"],
                   8: ["missing_required:event_id", "unknown_level"]}


def test_unmapped_segment_events_are_kept_but_not_counted_as_bad_data(tmp_path):
    from mvt_pipeline.quality.telemetry_metrics import OK, quarantine_rate

    registry = _registry(tmp_path, [{"name": "seg", "format": "segment"}])
    page_views = [{"type": "page", "userId": f"u{i}", "messageId": f"p{i}", "timestamp": "2026-11-02T10:00:00Z"}
                  for i in range(30)]
    conn, summary = _ingest(tmp_path, registry, [SEGMENT_VIEW, *page_views], source="seg")
    assert summary.rows_quarantined == 30 and summary.reasons == {"unmapped_event": 30}
    metric = quarantine_rate(conn, DAY)
    assert metric.value == 0.0 and metric.status == OK
    assert metric.per_source[0]["unmapped_events"] == 30


def _otlp(*records, service="checkout-svc") -> dict:
    """One OTLP/JSON line as a Collector's file exporter writes it."""
    return {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                              "scopeLogs": [{"scope": {"name": "mvt.flags", "version": "0.1.0"},
                                             "logRecords": list(records)}]}]}


def _record(name, attrs, ns="1793613600000000000", name_as_attribute=False):
    kv = [{"key": k, "value": ({"intValue": str(v)} if isinstance(v, int) else {"doubleValue": v}
                               if isinstance(v, float) else {"stringValue": v})} for k, v in attrs.items()]
    rec = {"timeUnixNano": ns, "observedTimeUnixNano": ns, "body": {}, "attributes": kv}
    if name_as_attribute:  # older SDKs and Collectors: the name as an attribute
        rec["attributes"].append({"key": "event.name", "value": {"stringValue": name}})
    else:
        rec["eventName"] = name
    return rec


def test_otel_feature_flag_events_map_to_exposures_one_row_per_record(tmp_path):
    registry = _registry(tmp_path, [{"name": "otel_logs", "format": "otel", "metrics": [
        {"event": "checkout.completed", "metric": "checkout", "value": "order.amount"}]}])
    ev = {"feature_flag.key": "checkout-exp", "feature_flag.result.variant": "1", "feature_flag.context.id": "user-0",
          "feature_flag.provider.name": "FlagdProvider"}
    lines = [
        _otlp(_record("feature_flag.evaluation", {**ev, "browser.name": "firefox", "app.build": 512}),
              _record("feature_flag.evaluation", {**ev, "feature_flag.context.id": "user-1",
                                                   "feature_flag.result.variant": "0"}, name_as_attribute=True)),
        _otlp(_record("feature_flag.evaluation", {k: v for k, v in ev.items() if k != "feature_flag.result.variant"}
                      | {"feature_flag.variant": "0", "feature_flag.context.id": "user-2"}),  # deprecated name
              _record("checkout.completed", {"user.id": "user-0", "order.amount": 42.5}),
              _record("page.view", {"user.id": "user-0"}),
              _record("feature_flag.evaluation", {**ev, "feature_flag.result.variant": "9"})),
        _otlp(),  # an empty batch
        "{broken",
    ]
    conn, summary = _ingest(tmp_path, registry, lines, source="otel_logs")
    assert (summary.rows_read, summary.rows_accepted, summary.rows_quarantined) == (8, 4, 4)  # records, not lines
    events = conn.execute("select line_number, event_type, unit_id, assignment::varchar, metric, value, ts::varchar, "
                          "context->>'otel_line', context->>'otel_record' from raw.events order by 1").fetchall()
    assert events == [
        (1, "exposure", "user-0", '{"layout":"one_page"}', None, None, "2026-11-02 10:00:00", "1", "1"),
        (2, "exposure", "user-1", '{"layout":"control"}', None, None, "2026-11-02 10:00:00", "1", "2"),
        (3, "exposure", "user-2", '{"layout":"control"}', None, None, "2026-11-02 10:00:00", "2", "1"),
        (4, "metric", "user-0", None, "checkout", 42.5, "2026-11-02 10:00:00", "2", "2"),
    ]
    got = dict(conn.execute("select line_number, reasons from raw.quarantine order by 1").fetchall())
    assert got == {5: ["unmapped_event"], 6: ["unknown_level"], 7: ["no_log_records"], 8: ["malformed_json"]}
    # the other attributes of an evaluation are its context, by their flat keys (segments can name them)
    ctx = conn.execute("""select context->>'$."browser.name"', context->>'$."app.build"', context->>'provider'"""
                       " from raw.events where line_number = 1").fetchone()
    assert ctx == ("firefox", "512", "FlagdProvider")
