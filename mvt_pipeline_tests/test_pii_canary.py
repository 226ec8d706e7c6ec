"""PII canaries (#19 part 6): every PII form the redaction must know, sent in every place a string
can land (context, unknown fields, user agent, each id, metric name, segment value), added to a
generated day and run through a whole night. Afterwards no string column of any table in any
schema, and no report file, holds a canary; units with a PII id still join under their hashed id."""

from __future__ import annotations

import hashlib
import json

import duckdb

from .pipeline_runner import generate, run_graph

KEY = "canary-test-key"
CANARIES = {
    "email": "canary.ann@example.com",
    "ipv6": "2001:db8::7334",
    "ipv6_full": "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "ipv4_mapped": "::ffff:198.51.100.9",
    "ipv4": "198.51.100.77",
    "visa": "4111 1111 1111 1111",
    "mastercard": "5500-0000-0000-0004",
    "amex": "378282246310005",
    "phone": "+1 (415) 555-0199",
}
UNIT = CANARIES["email"]  # a unit id that is an email


def hashed(value: str) -> str:
    return "pii_" + hashlib.sha256(f"{KEY}\x1f{value}".encode()).hexdigest()[:24]


def canary_lines() -> list[str]:
    base = {"ts": "2026-11-02T09:00:00Z", "received_at": "2026-11-02T09:00:01Z"}
    exposure = {**base, "event_type": "exposure", "experiment_id": "pricing_abn",
                "assignment": {"pricing_banner": "discount"}, "hash_version": "v1"}
    values = list(CANARIES.values())
    lines = []
    for i, value in enumerate(values):
        ctx = {"device": "mobile", "platform": "web", "country": value, "note": f"reach me at {value}",
               "user_agent": f"ShopApp/1.0 ({value})", "is_new_user": False}
        lines.append({**exposure, "event_id": f"canary-x{i}", "unit_id": value, "device_id": value,
                      "session_id": value, "context": ctx, "client_ip": value})
        lines.append({**base, "event_type": "metric", "event_id": f"canary-m{i}", "unit_id": value,
                      "device_id": value, "metric": "signup", "value": 1, "context": ctx,
                      "ts": "2026-11-02T10:00:00Z", "received_at": "2026-11-02T10:00:01Z"})
        lines.append({**base, "event_type": "metric", "event_id": f"canary-n{i}", "unit_id": "u-plain",
                      "metric": value, "value": 1})  # PII as a metric name: quarantined (redacted)
        lines.append({**base, "event_type": "metric", "event_id": value, "unit_id": "u-plain", "metric": "checkout",
                      "value": 1, "ts": "not a time"})  # a quarantined line full of PII
    return [json.dumps(x) for x in lines]


def _strings_in_warehouse(path) -> list[str]:
    with duckdb.connect(str(path), read_only=True) as conn:
        cols = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON') or data_type like '%[]' or data_type like 'STRUCT%' "
            "or data_type like 'MAP%'").fetchall()
        assert {s for s, _t, _c in cols} >= {"raw", "staging", "marts", "analysis"}
        found = []
        for schema, table, column in cols:
            texts = conn.execute(f'select distinct "{column}"::varchar from "{schema}"."{table}"').fetchall()
            found += [f"{schema}.{table}.{column}: {t}" for (t,) in texts if t is not None and _canary_in(t)]
        return found


def _canary_in(text: str) -> bool:
    return any(c in text or c.replace(" ", "") in text.replace(" ", "") for c in CANARIES.values())


def test_no_canary_reaches_any_table_or_report(workdir, monkeypatch):
    monkeypatch.setenv("MVT_PII_KEY", KEY)
    generate(workdir, users=300, days=1, seed=19)
    folder = next((workdir / "raw").glob("*/dt=2026-11-02"))
    (folder / "canary.jsonl").write_text("\n".join(canary_lines()) + "\n")
    nights = run_graph(workdir)
    assert all(r.success for r in nights)
    warehouse = workdir / "warehouse" / "mvt.duckdb"
    assert _strings_in_warehouse(warehouse) == []
    reports = [p for p in (workdir / "reports").rglob("*") if p.is_file()]
    assert reports
    leaks = [str(p) for p in reports if _canary_in(p.read_bytes().decode("utf-8", "replace"))]
    assert leaks == []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        # the PII unit still joins: its exposure and its outcome, counted under the hashed id
        assert conn.execute("select count(*) from marts.fct_exposures where unit_id = ?", [hashed(UNIT)]).fetchone()[0] == 1
        assert conn.execute("select count(*) from marts.fct_outcomes where unit_id = ?", [hashed(UNIT)]).fetchone()[0] >= 1
        assert conn.execute("select count(*) from staging.stg_events where unit_id like 'pii_%'").fetchone()[0] \
            == 2 * len(CANARIES)
        # a segment value that was PII is one 'redacted' segment
        assert conn.execute("select count(*) from staging.stg_events where country = 'redacted'").fetchone()[0] \
            == 2 * len(CANARIES)
        reasons = dict(conn.execute("select reason, count(*) from raw.quarantine where source_file like "
                                    "'%canary.jsonl' group by 1").fetchall())
        assert reasons == {"pii_in_metric_name": len(CANARIES), "bad_timestamp": len(CANARIES)}
        by_kind = conn.execute("select sum(pii_email), sum(pii_ipv6), sum(pii_ipv4), sum(pii_card), sum(pii_phone) "
                               "from raw.events where event_id like 'canary-%'").fetchone()
        assert all(n > 0 for n in by_kind)
