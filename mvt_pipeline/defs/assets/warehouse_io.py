"""Small helpers the analysis assets share to read marts and replace one night's analysis rows."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd


def as_of_date(context) -> dt.date:
    """The night being analysed: the run's partition (the nightly job's day), an explicit
    `mvt/as_of` run tag (for runs of the unpartitioned part alone), or today (UTC)."""
    tags = context.run.tags if context.run else {}
    tag = tags.get("dagster/partition") or tags.get("mvt/as_of")
    if tag:
        return dt.date.fromisoformat(tag)
    return dt.datetime.now(dt.timezone.utc).date()


def replace_rows(conn, table: str, frame: pd.DataFrame, as_of: dt.date) -> None:
    """Write `frame` as the `as_of` night of `analysis.<table>` (history of other nights is kept)."""
    if len(frame.columns) == 0:  # nothing computed tonight: clear the night, keep the table
        try:
            conn.execute(f'delete from analysis."{table}" where as_of = ?', [as_of])
        except Exception:  # noqa: BLE001 - the table does not exist yet
            pass
        return
    frame = frame.copy()
    frame.insert(0, "as_of", pd.Timestamp(as_of).date())
    frame["computed_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    conn.execute("create schema if not exists analysis")
    conn.register("_frame", frame)
    try:
        exists = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'analysis' and table_name = ?",
            [table],
        ).fetchone()[0]
        if exists:
            cols = [r[0] for r in conn.execute(f'describe analysis."{table}"').fetchall()]
            if cols != list(frame.columns):
                conn.execute(f'drop table analysis."{table}"')
                exists = 0
        if not exists:
            conn.execute(f'create table analysis."{table}" as select * from _frame where false')
        conn.execute(f'delete from analysis."{table}" where as_of = ?', [as_of])
        conn.execute(f'insert into analysis."{table}" select * from _frame')
    finally:
        conn.unregister("_frame")


def table_preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if not frame.empty else "(empty)")
