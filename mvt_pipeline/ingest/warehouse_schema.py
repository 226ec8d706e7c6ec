"""DDL of the `raw` schema: the contract between ingestion and the dbt sources."""

from __future__ import annotations

import duckdb

RAW_EVENTS_DDL = """
create table if not exists raw.events (
    event_id varchar not null,
    event_type varchar not null,
    ts timestamp not null,
    received_at timestamp,
    unit_id varchar not null,
    device_id varchar,
    session_id varchar,
    seq bigint,
    experiment_id varchar,
    assignment json,
    cell_id varchar,
    hash_version varchar,
    metric varchar,
    value double,
    context json,
    extra json,
    pii_redactions integer not null,
    payload_hash varchar not null,
    source varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    dt date not null,
    ingested_at timestamp not null
)
"""

RAW_QUARANTINE_DDL = """
create table if not exists raw.quarantine (
    source varchar not null,
    source_file varchar not null,
    line_number bigint,
    reason varchar not null,
    raw varchar,
    dt date not null,
    ingested_at timestamp not null
)
"""

RAW_INGEST_LOG_DDL = """
create table if not exists raw.ingest_log (
    path varchar not null,
    source varchar not null,
    dt date not null,
    size_bytes bigint not null,
    sha256 varchar not null,
    rows_read bigint not null,
    rows_accepted bigint not null,
    rows_quarantined bigint not null,
    pii_redactions bigint not null,
    ingested_at timestamp not null
)
"""


def ensure_raw_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists raw")
    for ddl in (RAW_EVENTS_DDL, RAW_QUARANTINE_DDL, RAW_INGEST_LOG_DDL):
        conn.execute(ddl)
