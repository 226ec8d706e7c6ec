"""Every read of the marts and every write of an `analysis.*` table that the Dagster assets do.

Why one module: the assets stay thin (read here, compute in pure code, write here), the SQL is in one
place to review, and a night is written in one transaction, so a reader sees the previous night or
the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from .analysis_schema import ensure_table, table

NO_AS_OF = dt.date(9999, 12, 31)  # what dbt records when it was built without a night (all data)


class StaleMartsError(RuntimeError):
    """The marts hold another night than the one being analysed."""


def _as_date(as_of: dt.date | str) -> dt.date:
    return as_of if isinstance(as_of, dt.date) else dt.date.fromisoformat(as_of)


# --- writes -----------------------------------------------------------------------------------

def replace_nights(conn: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame], as_of: dt.date | str) -> dict[str, int]:
    """Write each frame as the `as_of` night of its table (other nights are kept), all tables in one
    transaction. A frame with no rows clears that night. Returns rows written per table."""
    night = _as_date(as_of)
    computed_at = pd.Timestamp.now(tz="UTC").tz_localize(None)
    prepared = {}
    for name, frame in frames.items():
        t = table(name)
        unknown = [c for c in frame.columns if c not in t.column_names]
        if unknown:
            raise ValueError(f"analysis.{name} has no column(s) {unknown}: add them to "
                             "mvt_pipeline/warehouse/analysis_schema.py (a migration adds them to old warehouses)")
        out = frame.copy()
        out[t.night_column] = night
        if "computed_at" in t.column_names:
            out["computed_at"] = computed_at
        prepared[name] = out
    for name in prepared:
        ensure_table(conn, name)
    written = {}
    conn.execute("begin transaction")
    try:
        for name, frame in prepared.items():
            t = table(name)
            conn.execute(f'delete from {t.qualified} where "{t.night_column}" = ?', [night])
            if len(frame) and len(frame.columns):
                conn.register("_night_frame", frame)
                try:
                    conn.execute(f"insert into {t.qualified} by name select * from _night_frame")
                finally:
                    conn.unregister("_night_frame")
            written[name] = len(frame)
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return written


def night(conn: duckdb.DuckDBPyConnection, name: str, as_of: dt.date | str) -> pd.DataFrame:
    """One night of an analysis table (an empty frame with the table's columns when none)."""
    t = ensure_table(conn, name)
    return conn.execute(f'select * from {t.qualified} where "{t.night_column}" = ?', [_as_date(as_of)]).df()


def table_row_count(conn: duckdb.DuckDBPyConnection, name: str) -> int:
    t = ensure_table(conn, name)
    return int(conn.execute(f"select count(*) from {t.qualified}").fetchone()[0])


# --- the night the marts were built for -------------------------------------------------------

def marts_as_of(conn: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The `as_of` dbt last built the marts for (recorded by stg_events), None before any build."""
    exists = conn.execute("select count(*) from information_schema.tables where table_schema = 'staging'"
                          " and table_name = 'stg_events__as_of'").fetchone()[0]
    if not exists:
        return None
    return conn.execute("select max(as_of) from staging.stg_events__as_of").fetchone()[0]


def require_marts_for(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str) -> None:
    """Refuse to analyse night N from marts built for another night (a re-run of one analysis asset
    after the marts moved on would otherwise file another night's numbers under N)."""
    built = marts_as_of(conn)
    wanted = _as_date(as_of)
    if built is not None and built != NO_AS_OF and built != wanted:
        raise StaleMartsError(
            f"the marts were last built for {built}, not {wanted}: run the whole night "
            f"(`mvt nightly --date {wanted}`) or materialize the dbt models for partition {wanted} first")


# --- reads of the marts -----------------------------------------------------------------------

SHIFTED_SUMS = ("sum", "sum_sq", "cov_sum", "cov_sum_sq", "cross_sum",
                "num_sum", "den_sum", "num_sum_sq", "den_sum_sq", "num_den_sum")


def cell_stats(conn: duckdb.DuckDBPyConnection, overall: bool) -> pd.DataFrame:
    """Per-cell sufficient statistics as the engine reads them: the overall rows, or the
    per-segment rows, with the shifted sums (`<sum>_shifted`) under the plain names beside their
    shift columns (stats/shifts.py), so every variance keeps its digits at large means."""
    op = "=" if overall else "<>"
    df = conn.execute(f"select * from marts.agg_cell_stats where segment {op} 'overall'"
                      " order by experiment_id, metric, segment, segment_value, cell_id").df()
    for c in SHIFTED_SUMS:
        df[c] = df.pop(f"{c}_shifted")
    return df


def segment_unit_counts(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        "select experiment_id, metric, cell_id, segment, segment_value, n_units from marts.agg_cell_stats"
        " where segment <> 'overall'").df()


def assignment_quality(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute("select * from marts.dq_assignment").df()


def cell_quantiles(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute("select * from marts.agg_cell_quantiles").df()


def last_exposures(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per experiment: the last exposure and how many units were exposed (the flag audit's activity)."""
    return conn.execute(
        "select experiment_id, max(ts) as last_exposure_at, count(distinct unit_id) as units"
        " from staging.stg_events where event_type = 'exposure' group by 1").df()


def daily_loss(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        "select day as dt, n_sequenced, n_lost, loss_rate from marts.dq_daily order by day").df()


def flip_rates(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        "select experiment_id, sum(n_flipped) as flipped, sum(n_exposed) - sum(n_bots) as units,"
        " sum(n_flipped) / nullif(sum(n_exposed) - sum(n_bots), 0) as flip_rate"
        " from marts.dq_assignment group by 1 order by 1").df()


def report_cells(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per cell and metric: n and mean for the report (ratio metrics: the cell ratio over units)."""
    cells = conn.execute(
        "select experiment_id, cell_id, metric, n, case when n > 0 then sum / n end as mean,"
        " n_units, num_sum, den_sum from marts.agg_cell_stats where segment = 'overall'").df()
    ratio = cells["mean"].isna() & (cells["den_sum"] > 0)
    cells.loc[ratio, "mean"] = cells.loc[ratio, "num_sum"] / cells.loc[ratio, "den_sum"]
    cells["n"] = cells["n"].where(~ratio, cells["n_units"])
    return cells


def assignment_summary(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        "select experiment_id, sum(n_exposed) exposed, sum(n_bots) bots, sum(n_flipped) flipped,"
        " sum(n_incomplete) incomplete, sum(n_analysable) analysable from marts.dq_assignment group by 1"
    ).df().set_index("experiment_id")


def ingestion_totals(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str) -> dict[str, int]:
    """Lines read / quarantined / PII redacted over the days the night covers (dt <= as_of)."""
    row = conn.execute(
        "select coalesce(sum(rows_read), 0), coalesce(sum(rows_accepted), 0), coalesce(sum(rows_quarantined), 0),"
        " coalesce(sum(pii_redactions), 0) from raw.ingest_log where dt <= ?", [_as_date(as_of)]).fetchone()
    return dict(zip(("rows_read", "rows_accepted", "rows_quarantined", "pii_redactions"), map(int, row)))


def night_lag_p95_seconds(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str) -> float | None:
    """Collector lag (p95 of received_at - ts) of the night's own dump, or None without one."""
    row = conn.execute("select max(lag_p95_seconds) from marts.dq_daily where day = ?", [_as_date(as_of)]).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def failed_blocking_suites(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str) -> list[str]:
    """Blocking Great Expectations suites that failed on the night's dump (a replayed night keeps its
    verdict; the non-blocking loss and lag suites do not invalidate a night)."""
    from ..quality.metric_suites import blocks_the_night
    from ..quality.telemetry_suite import SUITE_NAME

    ensure_table(conn, "gx_validations")
    failed = [r[0] for r in conn.execute(
        "select distinct suite from analysis.gx_validations where dt = ? and not success order by 1",
        [_as_date(as_of)]).fetchall()]
    return [s for s in failed if s == SUITE_NAME or blocks_the_night(s.removeprefix("telemetry_"))]


def decision_inputs(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str):
    """Everything the night's guardrails and decisions read (`analysis/decision_night.py`)."""
    from ..analysis.decision_night import DecisionInputs

    return DecisionInputs(
        effects=night(conn, "effects", as_of), srm=night(conn, "srm", as_of), cell_stats=cell_stats(conn, overall=True),
        cell_quantiles=cell_quantiles(conn), slo_hourly=slo_hourly(conn),
        lag_p95_seconds=night_lag_p95_seconds(conn, as_of), failed_blocking_checks=failed_blocking_suites(conn, as_of))


def telemetry_sample(conn: duckdb.DuckDBPyConnection, sample_sql: str, partition: str) -> pd.DataFrame:
    return conn.execute(sample_sql, [partition]).df()


SLO_HOURLY_COLUMNS = {  # marts.agg_cell_slo_hourly: column -> dtype of the empty frame
    "experiment_id": "object", "metric": "object", "cell_id": "object", "hour": "datetime64[us]",
    "slo_key": "object", "events": "int64", "bad_events": "int64", "slo_objective": "float64",
    "slo_good_below": "float64", "slo_period_days": "int64",
}


def slo_hourly(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """SLO events / bad events per (experiment, metric, cell, hour), the input of analysis.budget_burn
    (an empty frame with the columns when the mart was never built)."""
    exists = conn.execute("select count(*) from information_schema.tables where table_schema = 'marts'"
                          " and table_name = 'agg_cell_slo_hourly'").fetchone()[0]
    if not exists:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SLO_HOURLY_COLUMNS.items()})
    return conn.execute("select * from marts.agg_cell_slo_hourly"
                        " order by experiment_id, metric, cell_id, hour").df()


# --- reads across kept nights and days (the reports' time series) ------------------------------

def nights_until(conn: duckdb.DuckDBPyConnection, name: str, as_of: dt.date | str) -> pd.DataFrame:
    """Every kept night of an `analysis.*` table up to `as_of` (a backfilled page shows its past only)."""
    t = ensure_table(conn, name)
    return conn.execute(f'select * from {t.qualified} where "{t.night_column}" <= ? order by "{t.night_column}"',
                        [_as_date(as_of)]).df()


def exposures_per_day(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Analysable units per experiment, cell and day of first exposure (the marts' night)."""
    return conn.execute(
        "select experiment_id, cell_id, cast(first_exposure_at as date) as day, count(*) as units"
        " from marts.fct_exposures where is_analysable group by all order by all").df()


def source_quality_daily(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str) -> pd.DataFrame:
    """Per dump day and source up to `as_of`: lines accepted and quarantined, quarantine reasons
    (JSON object reason -> lines), duplicate lines (accepted lines that were not the kept copy of
    their event) and collector lag of the kept events."""
    return conn.execute("""
        with lines as (
            select dt as day, source, count(*) as n_lines from raw.events where dt <= ? group by all
        ), reasons as (
            select dt as day, source, reason, count(*) as n from raw.quarantine where dt <= ? group by all
        ), quarantined as (
            select day, source, sum(n) as n_quarantined,
                   to_json(map(list(reason order by reason), list(n order by reason))) as quarantine_reasons
            from reasons group by all
        ), kept as (
            select dt as day, source, count(*) as n_events,
                   quantile_cont(epoch(received_at) - epoch(ts), 0.95) as lag_p95_seconds
            from staging.stg_events group by all
        ), days as (select day, source from lines union select day, source from quarantined)
        select d.day, d.source, coalesce(l.n_lines, 0) as n_lines, coalesce(q.n_quarantined, 0) as n_quarantined,
               coalesce(q.quarantine_reasons, '{}') as quarantine_reasons,
               coalesce(l.n_lines, 0) - coalesce(k.n_events, 0) as n_duplicate_lines, k.lag_p95_seconds
        from days d left join lines l using (day, source) left join quarantined q using (day, source)
        left join kept k using (day, source) order by d.day, d.source
    """, [_as_date(as_of), _as_date(as_of)]).df()


def source_contents(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Which source carries which experiment's exposures and which metric events (to give each
    experiment the quality of its own sources)."""
    return conn.execute(
        "select distinct source, event_type, experiment_id, metric from staging.stg_events").df()
