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


# --- writes ---------------------------------------------------------------------------------
#
# A night's analysis tables are written by several assets, one after the other. So that a reader
# never sees a mix (tonight's effects beside last night's decisions), a run that ends by publishing
# the night (the reports asset) *stages* every table's rows under its key in `analysis_staging`, and
# `publish_night` moves all of them into `analysis` in one transaction. A run that crashed leaves
# only staged rows behind, never read by anyone and dropped by the next publish. Runs that write the
# warehouse never overlap (the writer lock), so what another key staged is a dead run's garbage.

STAGING_SCHEMA = "analysis_staging"
STAGED_NIGHTS = f"{STAGING_SCHEMA}.staged_nights"  # (stage_key, as_of, name, row_count, staged_at)
_STAGE_KEY = "_stage_key"


def _prepared(frames: dict[str, pd.DataFrame], night: dt.date) -> dict[str, pd.DataFrame]:
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
    return prepared


def _insert_frame(conn, target: str, frame: pd.DataFrame, stage_key: str | None = None) -> None:
    if not (len(frame) and len(frame.columns)):
        return
    conn.register("_night_frame", frame)
    try:
        if stage_key is None:
            conn.execute(f"insert into {target} by name select * from _night_frame")
        else:
            conn.execute(f'insert into {target} by name select *, ?::varchar as "{_STAGE_KEY}" from _night_frame',
                         [stage_key])
    finally:
        conn.unregister("_night_frame")


def _staged_table(conn: duckdb.DuckDBPyConnection, name: str) -> str:
    """`analysis_staging.<name>`: the analysis table's columns plus the stage key, recreated when an
    upgrade changed the analysis table (staged rows are transient: nothing of value is dropped)."""
    t = ensure_table(conn, name)
    conn.execute(f"create schema if not exists {STAGING_SCHEMA}")
    conn.execute(f"create table if not exists {STAGED_NIGHTS} (stage_key varchar, as_of date, name varchar, "
                 "row_count bigint, staged_at timestamp)")
    staged = f'{STAGING_SCHEMA}."{t.name}"'
    cols = [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_catalog = current_database()"
        " and table_schema = ? and table_name = ? order by ordinal_position", [STAGING_SCHEMA, t.name]).fetchall()]
    published = [r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_catalog = current_database()"
        " and table_schema = ? and table_name = ? order by ordinal_position", ["analysis", t.name]).fetchall()]
    if cols != [*published, _STAGE_KEY]:
        conn.execute(f"drop table if exists {staged}")
        conn.execute(f'create table {staged} as select *, null::varchar as "{_STAGE_KEY}" from {t.qualified} limit 0')
    return staged


def replace_nights(conn: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame], as_of: dt.date | str,
                   stage_key: str | None = None) -> dict[str, int]:
    """Write each frame as the `as_of` night of its table (other nights are kept), all tables in one
    transaction. A frame with no rows clears that night. With `stage_key`, the rows are staged
    instead, for `publish_night(conn, stage_key, as_of)` to put in place with the rest of the night.
    Returns rows written per table."""
    night = _as_date(as_of)
    prepared = _prepared(frames, night)
    staged = {name: _staged_table(conn, name) if stage_key else ensure_table(conn, name).qualified
              for name in prepared}
    written = {}
    conn.execute("begin transaction")
    try:
        for name, frame in prepared.items():
            t = table(name)
            if stage_key is None:
                conn.execute(f'delete from {t.qualified} where "{t.night_column}" = ?', [night])
                _insert_frame(conn, t.qualified, frame)
            else:
                conn.execute(f'delete from {staged[name]} where "{_STAGE_KEY}" = ? and "{t.night_column}" = ?',
                             [stage_key, night])
                _insert_frame(conn, staged[name], frame, stage_key)
                conn.execute(f"delete from {STAGED_NIGHTS} where stage_key = ? and as_of = ? and name = ?",
                             [stage_key, night, name])
                conn.execute(f"insert into {STAGED_NIGHTS} values (?, ?, ?, ?, now()::timestamp)",
                             [stage_key, night, name, len(frame)])
            written[name] = len(frame)
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return written


def staged_tables(conn: duckdb.DuckDBPyConnection, stage_key: str | None, as_of: dt.date | str) -> list[str]:
    """The tables `stage_key` has staged for the night (none without a key or a staging schema)."""
    if stage_key is None or not conn.execute(
            "select count(*) from information_schema.tables where table_catalog = current_database()"
            " and table_schema = ? and table_name = 'staged_nights'", [STAGING_SCHEMA]).fetchone()[0]:
        return []
    return [r[0] for r in conn.execute(f"select name from {STAGED_NIGHTS} where stage_key = ? and as_of = ? "
                                       "order by name", [stage_key, _as_date(as_of)]).fetchall()]


def publish_night(conn: duckdb.DuckDBPyConnection, stage_key: str, as_of: dt.date | str) -> dict[str, int]:
    """Put every table `stage_key` staged for the night in place, in one transaction, and empty the
    staging schema (a dead run's leftovers included). Returns rows published per table."""
    night = _as_date(as_of)
    names = staged_tables(conn, stage_key, night)
    leftovers = [r[0] for r in conn.execute(
        "select table_name from information_schema.tables where table_catalog = current_database()"
        " and table_schema = ? and table_name <> 'staged_nights'", [STAGING_SCHEMA]).fetchall()]
    published = {}
    conn.execute("begin transaction")
    try:
        for name in names:
            t = table(name)
            staged = f'{STAGING_SCHEMA}."{t.name}"'
            conn.execute(f'delete from {t.qualified} where "{t.night_column}" = ?', [night])
            conn.execute(f'insert into {t.qualified} by name select * exclude ("{_STAGE_KEY}") from {staged} '
                         f'where "{_STAGE_KEY}" = ? and "{t.night_column}" = ?', [stage_key, night])
            published[name] = int(conn.execute(f"select row_count from {STAGED_NIGHTS} where stage_key = ? "
                                               "and as_of = ? and name = ?", [stage_key, night, name]).fetchone()[0])
        for name in leftovers:
            conn.execute(f'delete from {STAGING_SCHEMA}."{name}"')
        if leftovers or names:
            conn.execute(f"delete from {STAGED_NIGHTS}")
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return published


def night(conn: duckdb.DuckDBPyConnection, name: str, as_of: dt.date | str, stage_key: str | None = None) -> pd.DataFrame:
    """One night of an analysis table (an empty frame with the table's columns when none): the rows
    `stage_key` staged for it, if it did, else the published ones."""
    t = ensure_table(conn, name)
    if name in staged_tables(conn, stage_key, as_of):
        return conn.execute(f'select * exclude ("{_STAGE_KEY}") from {STAGING_SCHEMA}."{t.name}" '
                            f'where "{_STAGE_KEY}" = ? and "{t.night_column}" = ?', [stage_key, _as_date(as_of)]).df()
    return conn.execute(f'select * from {t.qualified} where "{t.night_column}" = ?', [_as_date(as_of)]).df()


def table_row_count(conn: duckdb.DuckDBPyConnection, name: str, as_of: dt.date | str | None = None,
                    stage_key: str | None = None) -> int:
    """Rows of the table, as it will read once the staged night (if any) is published."""
    t = ensure_table(conn, name)
    total = int(conn.execute(f"select count(*) from {t.qualified}").fetchone()[0])
    if as_of is not None and name in staged_tables(conn, stage_key, as_of):
        night_rows = conn.execute(f'select count(*) from {t.qualified} where "{t.night_column}" = ?',
                                  [_as_date(as_of)]).fetchone()[0]
        staged = conn.execute(f"select row_count from {STAGED_NIGHTS} where stage_key = ? and as_of = ? and name = ?",
                              [stage_key, _as_date(as_of), name]).fetchone()[0]
        total += int(staged) - int(night_rows)
    return total


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
        "select experiment_id, last_exposure_at, units from marts.agg_experiment_exposures").df()


def daily_loss(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return conn.execute(
        "select day as dt, n_sequenced, n_lost, loss_rate, n_events from marts.dq_daily order by day").df()


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


def decision_inputs(conn: duckdb.DuckDBPyConnection, as_of: dt.date | str, stage_key: str | None = None):
    """Everything the night's guardrails and decisions read (`analysis/decision_night.py`)."""
    from ..analysis.decision_night import DecisionInputs

    return DecisionInputs(
        effects=night(conn, "effects", as_of, stage_key), srm=night(conn, "srm", as_of, stage_key), cell_stats=cell_stats(conn, overall=True),
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

def nights_until(conn: duckdb.DuckDBPyConnection, name: str, as_of: dt.date | str,
                 stage_key: str | None = None) -> pd.DataFrame:
    """Every kept night of an `analysis.*` table up to `as_of` (a backfilled page shows its past only),
    the night itself as `night` reads it (staged rows when `stage_key` staged them)."""
    t = ensure_table(conn, name)
    earlier = conn.execute(f'select * from {t.qualified} where "{t.night_column}" < ? order by "{t.night_column}"',
                           [_as_date(as_of)]).df()
    tonight = night(conn, name, as_of, stage_key)
    if earlier.empty:
        return tonight.reset_index(drop=True)
    if tonight.empty:
        return earlier
    return pd.concat([earlier, tonight], ignore_index=True)


def exposures_per_day(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Analysable units per experiment, cell and day of first exposure (the marts' night)."""
    return conn.execute(
        "select experiment_id, cell_id, day, units from marts.agg_cell_exposures_daily order by all").df()


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
            select day, source, n_events, lag_p95_seconds from marts.dq_source_daily
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
        "select source, event_type, experiment_id, metric from marts.dq_source_contents").df()
