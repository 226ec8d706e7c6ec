"""Telemetry data-quality metrics as pure functions over SQL aggregates of the `raw` tables.

Each function pushes the work into DuckDB and returns a small `QualityMetric`: the headline value,
one row per source (the frame the GX suites in `metric_suites` validate), a status against
configurable thresholds (OK / WARN / ERROR) and details a person can act on. Nothing here pulls
per-event rows into Python, so the checks cost the same at 1M or 100M events. No Dagster imports.

The rate metrics (loss, duplicates, bots, quarantine) are judged with a sample size (`rate_bounds`):
a source is WARN / ERROR only with at least `Thresholds.min_sample` trials and a lower one-sided
bound of its rate above the threshold; smaller sources are listed in `details["too_few_to_judge"]`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from ..ingest.source_formats import UNMAPPED_EVENT
from ..ingest.warehouse_schema import PII_KINDS
from .rate_bounds import TOO_FEW, graded

OK, WARN, ERROR = "OK", "WARN", "ERROR"
BOT_UA_PATTERN = "(bot|crawler|spider|headless|slurp)"  # the same pattern as dbt's fct_exposures


@dataclass(frozen=True)
class Thresholds:
    """Every data-quality threshold, defined once (the Launchpad config of ingestion overrides them)."""

    loss_error: float = 0.01
    lag_p95_warn_s: float = 300.0
    lag_p95_error_s: float = 3600.0
    duplicate_warn: float = 0.05
    bot_share_warn: float = 0.05
    bot_events_per_day: int = 500  # dbt var `bot_events_per_day`
    quarantine_warn: float = 0.01
    quarantine_error: float = 0.10
    volume_change_warn: float = 0.50
    pii_warn_above: int = 0  # PII is redacted, but any occurrence means an SDK is sending it
    # Gates on the marts (dq_daily, dq_assignment), checked after dbt:
    late_window_days: int = 2  # loss of a day is judged once it is this many days older than the night
    flip_warn: float = 0.01
    flip_error: float = 0.10
    # Every rate gate above (loss, flips, quarantine, duplicates, bots) judges with a sample size
    # (docs/statistics.md, "Gates with a sample size"): it fails only with at least `min_sample`
    # trials (sequenced events, units, lines) AND when the lower one-sided `confidence` bound of the
    # rate (`bound_method`: Clopper-Pearson "exact" or "wilson") exceeds the threshold. Fewer trials
    # are reported as "too few events to judge".
    min_sample: int = 1000
    confidence: float = 0.95
    bound_method: str = "exact"


def sample_size_rule(t: Thresholds) -> str:
    """How every rate gate judges, in words (check descriptions, docs/statistics.md §11a)."""
    return (f"with at least {t.min_sample} trials and a lower one-sided {t.confidence:.0%} bound "
            f"({t.bound_method}) above the threshold; smaller samples are reported as too few to judge")


def check_descriptions(t: Thresholds) -> dict[str, str]:
    """Metric name -> the description of its ingestion check, from the thresholds themselves."""
    rule = sample_size_rule(t)
    return {
        "loss_rate": "Provisional event loss from seq gaps per source (late events of the day may still "
                     "arrive, so it only warns); the blocking gate is dq_daily's loss_rate_matured.",
        "lag_p95": f"P95 of received_at - ts; WARN above {t.lag_p95_warn_s:g} s, ERROR above {t.lag_p95_error_s:g} s.",
        "quarantine_rate": f"Share of lines quarantined; WARN above {t.quarantine_warn:.0%}, "
                           f"ERROR above {t.quarantine_error:.0%}, {rule}.",
        "duplicate_rate": f"Share of accepted rows that repeat an event_id; WARN above {t.duplicate_warn:.0%}, {rule}.",
        "bot_share": f"Share of units that look like bots; WARN above {t.bot_share_warn:.0%}, {rule}.",
        "volume_change": f"Accepted rows vs the trailing 7-day mean; WARN beyond +-{t.volume_change_warn:.0%}.",
        "pii_found": "PII values found (and redacted) by kind; WARN when any.",
    }


# Loss is measured from per-device `seq` gaps; without them it cannot be, and the check says so.
NOT_MEASURABLE = "not measurable"
LOSS_NO_SEQ = "no event carries both seq and device_id: loss cannot be measured from sequence gaps"


@dataclass
class QualityMetric:
    name: str
    value: float | int | None
    status: str
    per_source: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.per_source)


def _status(value, warn=None, error=None) -> str:
    if value is None:
        return OK
    if error is not None and value > error:
        return ERROR
    if warn is not None and value > warn:
        return WARN
    return OK


def _judge_rates(rows: list[dict], hits: str, trials: str, column: str, t: Thresholds, warn=None,
                 error=None) -> tuple[str, dict]:
    """Judge each source's rate `hits / trials` with a sample size (`rate_bounds.graded`): adds
    `<column>_lower` (the lower one-sided bound, None below `min_sample`) and `verdict` to each row;
    returns (the worst status, the details naming the sources too small to judge)."""
    worst = OK
    for r in rows:
        k = r[hits] or 0
        n = max(r[trials] or 0, k)
        status, v = graded(k, n, warn, error, min_sample=t.min_sample, confidence=t.confidence,
                           method=t.bound_method)
        r[f"{column}_lower"] = v.lower
        r["verdict"] = TOO_FEW if v.verdict == TOO_FEW else status
        worst = status if (status == ERROR or (status == WARN and worst == OK)) else worst
    return worst, {"too_few_to_judge": [r["source"] for r in rows if r["verdict"] == TOO_FEW],
                   "min_sample": t.min_sample, "confidence": t.confidence, "bound_method": t.bound_method}


def _rows(conn, sql: str, params) -> list[dict]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def loss_rate(conn: duckdb.DuckDBPyConnection, partition: str | None, t: Thresholds = Thresholds()) -> QualityMetric:
    """Share of events lost in transport, from gaps in the per-device `seq`, per source.

    For each device seen in the partition take lo = min(seq), hi = max(seq) of its events in the
    partition; seen = distinct seqs in [lo, hi] found in *any* partition; lost = hi - lo + 1 - seen.
    The rate is sum(lost) / sum(hi - lo - 1): the denominator counts only the *interior* positions,
    because the two endpoints are delivered by construction (that is how lo and hi were found);
    dividing by hi - lo + 1 would bias the rate low by 2 / range (about 15 % relative here). A
    device with one sequenced event has no interior (0, not -1).
    - Duplicates (retries) repeat a seq, and distinct seqs count it once: no bias.
    - Late events land in a later `dt` folder; looking them up in every partition fills their gap
      once they are ingested (re-run after the late window; until then they count as lost).
    - Losses before a device's first or after its last delivered event leave no gap and are
      invisible, so this is the loss *rate* inside observed ranges; under random loss that is the
      overall rate, but a device that dies mid-stream is not seen as losing anything.
    - A source whose events carry no `seq` (or no `device_id`), as most SDKs send, cannot show
      loss: it is listed as `not measurable` with the reason and the metric is WARN, never OK.
    `partition=None` measures all ingested data.
    """
    where = "dt = ?::date and " if partition else ""
    params = [partition] if partition else []
    rows = _rows(conn, f"""
        with ranges as (
            select source, device_id, min(seq) lo, max(seq) hi
            from raw.events where {where}device_id is not null and seq is not null
            group by 1, 2
        ), seen as (
            select r.source, r.device_id, r.hi - r.lo + 1 as expected, greatest(r.hi - r.lo - 1, 0) as interior,
                   count(distinct e.seq) as seen
            from ranges r join raw.events e
              on e.device_id = r.device_id and e.seq between r.lo and r.hi
            group by 1, 2, 3, 4
        )
        select source, count(*) as devices, sum(expected)::bigint as expected, sum(seen)::bigint as seen,
               (sum(expected) - sum(seen))::bigint as lost,
               sum(interior)::bigint as interior,
               (sum(expected) - sum(seen)) / nullif(sum(interior), 0)::double as loss_rate
        from seen group by 1 order by 1""", params)
    expected = sum(r["expected"] for r in rows)
    interior = sum(r["interior"] for r in rows)
    lost = sum(r["lost"] for r in rows)
    value = lost / interior if interior else None
    status, judged = _judge_rates(rows, "lost", "interior", "loss_rate", t, error=t.loss_error)
    # a source whose events carry no usable seq cannot show loss: say so (WARN), never a green pass
    coverage = {r["source"]: r for r in _rows(conn, f"""
        select source, count(*)::bigint as events,
               count(*) filter (where device_id is not null and seq is not null)::bigint as sequenced_events
        from raw.events where {where}true group by 1 order by 1""", params)}
    measured = {r["source"]: r for r in rows}
    unmeasurable = {}
    for source, c in coverage.items():
        m = measured.get(source)
        if not c["sequenced_events"]:
            unmeasurable[source] = LOSS_NO_SEQ
        if m:
            m["events"], m["sequenced_events"] = c["events"], c["sequenced_events"]
        if source in unmeasurable:
            row = m or {"source": source, "devices": 0, "expected": 0, "seen": 0, "lost": 0, "interior": 0,
                        "loss_rate": None, "loss_rate_lower": None, "events": c["events"],
                        "sequenced_events": c["sequenced_events"]}
            row.update(verdict=NOT_MEASURABLE, loss_rate=None, loss_rate_lower=None,
                       not_measurable_reason=unmeasurable[source])
            if not m:
                rows.append(row)
    rows.sort(key=lambda r: r["source"])
    if unmeasurable and status == OK:
        status = WARN
    judged["too_few_to_judge"] = [x for x in judged["too_few_to_judge"] if x not in unmeasurable]
    return QualityMetric("loss_rate", value, status, rows,
                         {"lost": lost, "expected": expected, "error_above": t.loss_error, **judged,
                          "not_measurable": unmeasurable,
                          "note": "trailing/leading losses per device are invisible to seq gaps"})


def lag_p95(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """P95 of `received_at - ts` (seconds) per source; negative lags (client clock ahead) are
    counted separately because they are clock skew, not transport delay."""
    rows = _rows(conn, """
        select source, count(*) as events,
               quantile_cont(epoch(received_at) - epoch(ts), 0.95) as lag_p95_s,
               quantile_cont(epoch(received_at) - epoch(ts), 0.5) as lag_p50_s,
               avg(case when received_at < ts - interval 5 minute then 1 else 0 end) as clock_skew_share
        from raw.events where dt = ?::date and received_at is not null group by 1 order by 1""", [partition])
    worst = max((r["lag_p95_s"] for r in rows if r["lag_p95_s"] is not None), default=None)
    return QualityMetric("lag_p95", worst, _status(worst, t.lag_p95_warn_s, t.lag_p95_error_s), rows,
                         {"warn_above_s": t.lag_p95_warn_s, "error_above_s": t.lag_p95_error_s})


def duplicate_rate(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """Extra copies of an `event_id` within the partition / rows, per source; ids whose copies carry
    different payloads are counted too (they are not retries but id collisions or SDK bugs)."""
    rows = _rows(conn, """
        with ids as (
            select source, event_id, count(*) n, count(distinct payload_hash) payloads
            from raw.events where dt = ?::date group by 1, 2
        )
        select source, sum(n)::bigint as events, (sum(n) - count(*))::bigint as duplicates,
               (sum(n) - count(*)) / sum(n)::double as duplicate_rate,
               count(*) filter (where payloads > 1) as conflicting_ids
        from ids group by 1 order by 1""", [partition])
    events = sum(r["events"] for r in rows)
    value = sum(r["duplicates"] for r in rows) / events if events else None
    status, judged = _judge_rates(rows, "duplicates", "events", "duplicate_rate", t, warn=t.duplicate_warn)
    return QualityMetric("duplicate_rate", value, status, rows,
                         {"warn_above": t.duplicate_warn, **judged, "events": events,
                          "unique_ids": events - sum(r["duplicates"] for r in rows),
                          "conflicting_ids": sum(r["conflicting_ids"] for r in rows)})


def bot_share(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """Share of units that look like bots: a bot user agent, or more events in the day than a human
    produces (`bot_events_per_day`, the same rule dbt uses to exclude them)."""
    rows = _rows(conn, f"""
        with units as (
            select source, unit_id, count(*) n,
                   bool_or(regexp_matches(lower(coalesce(context->>'$.user_agent', '')), '{BOT_UA_PATTERN}')) ua_bot
            from raw.events where dt = ?::date group by 1, 2
        )
        select source, count(*) as units,
               count(*) filter (where ua_bot or n > ?) as bot_units,
               count(*) filter (where ua_bot or n > ?) / count(*)::double as bot_share
        from units group by 1 order by 1""", [partition, t.bot_events_per_day, t.bot_events_per_day])
    units = sum(r["units"] for r in rows)
    value = sum(r["bot_units"] for r in rows) / units if units else None
    status, judged = _judge_rates(rows, "bot_units", "units", "bot_share", t, warn=t.bot_share_warn)
    return QualityMetric("bot_share", value, status, rows, {"warn_above": t.bot_share_warn, **judged})


def quarantine_rate(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """Quarantined / read lines per source (from the manifest), with the top reasons and examples;
    records an SDK source does not map (`unmapped_event`) are left out of both counts."""
    # `unmapped_event` rows (an SDK source's page views, identifies, other track events) are kept but
    # are not bad data: they count neither as read nor as quarantined here
    rows = _rows(conn, f"""
        with unmapped as (
            select source, count(*) as n from raw.quarantine where dt = ?::date and reason = '{UNMAPPED_EVENT}'
            group by 1
        ), logged as (
            select source, sum(rows_read)::bigint as rows_read, sum(rows_quarantined)::bigint as rows_quarantined
            from raw.ingest_log where dt = ?::date group by 1
        )
        select l.source, l.rows_read - coalesce(u.n, 0) as rows_read,
               l.rows_quarantined - coalesce(u.n, 0) as rows_quarantined, coalesce(u.n, 0)::bigint as unmapped_events,
               (l.rows_quarantined - coalesce(u.n, 0)) / nullif(l.rows_read - coalesce(u.n, 0), 0)::double
                   as quarantine_rate
        from logged l left join unmapped u using (source) order by 1""", [partition, partition])
    read = sum(r["rows_read"] for r in rows)
    value = sum(r["rows_quarantined"] for r in rows) / read if read else None
    reasons = dict(conn.execute("select reason, count(*) from raw.quarantine where dt = ?::date and reason <> ? "
                                "group by 1 order by 2 desc limit 10", [partition, UNMAPPED_EVENT]).fetchall())
    # every problem, not only the primary: lines with each code anywhere in `reasons`
    problems = dict(conn.execute("""select r, count(*) from (select unnest(coalesce(reasons, [reason])) as r
            from raw.quarantine where dt = ?::date) group by 1 order by 2 desc, 1 limit 20""", [partition]).fetchall())
    examples = _rows(conn, """select reason, array_to_string(coalesce(reasons, [reason]), ', ') as all_reasons,
            source_file, line_number, left(raw, 200) as raw from (
            select *, row_number() over (partition by reason order by source_file, line_number) k
            from raw.quarantine where dt = ?::date) where k = 1 order by reason limit 10""", [partition])
    status, judged = _judge_rates(rows, "rows_quarantined", "rows_read", "quarantine_rate", t,
                                  warn=t.quarantine_warn, error=t.quarantine_error)
    return QualityMetric("quarantine_rate", value, status, rows,
                         {"reasons": reasons, "problems": problems, "examples": examples, "warn_above": t.quarantine_warn,
                          "error_above": t.quarantine_error, **judged})


def volume_change_vs_trailing_7d(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """Accepted rows in the partition vs the mean of the 7 previous days that have data, per source.
    WARN beyond +/- `volume_change_warn`; no history means OK with a note (first week)."""
    day = dt.date.fromisoformat(partition)
    rows = _rows(conn, """
        with daily as (
            select source, dt, sum(rows_accepted) n from raw.ingest_log
            where dt between ?::date - 7 and ?::date group by 1, 2
        )
        select source,
               coalesce(sum(n) filter (where dt = ?::date), 0)::bigint as rows_today,
               avg(n) filter (where dt < ?::date) as trailing_mean,
               count(*) filter (where dt < ?::date) as trailing_days,
               coalesce(sum(n) filter (where dt = ?::date), 0) / nullif(avg(n) filter (where dt < ?::date), 0) - 1
                   as volume_change
        from daily group by 1 order by 1""", [day, day, day, day, day, day, day])
    changes = [abs(r["volume_change"]) for r in rows if r["volume_change"] is not None]
    worst = max(changes, default=None)
    total_today = sum(r["rows_today"] for r in rows)
    trailing = sum(r["trailing_mean"] or 0 for r in rows)
    value = total_today / trailing - 1 if trailing else None
    return QualityMetric("volume_change", value, _status(worst, t.volume_change_warn), rows,
                         {"warn_beyond": t.volume_change_warn,
                          "note": None if changes else "no trailing history yet"})


def pii_counts_by_kind(conn, partition: str, t: Thresholds = Thresholds()) -> QualityMetric:
    """PII values found and redacted in accepted rows, by kind and source (from `raw.events`)."""
    sums = ", ".join(f"coalesce(sum(pii_{k}), 0)::bigint as {k}" for k in PII_KINDS)
    rows = _rows(conn, f"""select source, {sums}, count(*) filter (where pii_redactions > 0) as rows_with_pii
                           from raw.events where dt = ?::date group by 1 order by 1""", [partition])
    by_kind = {k: sum(r[k] for r in rows) for k in PII_KINDS}
    total = sum(by_kind.values())
    return QualityMetric("pii_found", total, _status(total, t.pii_warn_above), rows,
                         {"by_kind": by_kind, "redacted": True})


def all_metrics(conn, partition: str, t: Thresholds = Thresholds()) -> dict[str, QualityMetric]:
    fns = (loss_rate, lag_p95, duplicate_rate, bot_share, quarantine_rate, volume_change_vs_trailing_7d,
           pii_counts_by_kind)
    out = {}
    for fn in fns:
        m = fn(conn, partition, t)
        out[m.name] = m
    return out
