"""DDL of the `raw` schema: the contract between ingestion and the dbt sources.

`raw.events` keeps the columns dbt reads; later additions (per-kind PII counts, the manifest's rules
fingerprint) are applied with `add column if not exists` so an older warehouse file upgrades in place
instead of failing or needing a rebuild.
"""

from __future__ import annotations

import duckdb

# `card` came later (#19): its columns are added after the others (`_ADDED_COLUMNS`), also in a new file
PII_KINDS = ("email", "phone", "ipv4", "ipv6", "card")
_FIRST_PII_KINDS = PII_KINDS[:4]

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
    payload_hash ubigint not null,
    source varchar not null,
    source_file varchar not null,
    line_number bigint not null,
    dt date not null,
    ingested_at timestamp not null
)
"""

# `dt` is the partition key (the `dt=YYYY-MM-DD` folder) in all three tables.
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

# Columns added after the first release (name, type, default); appended at the end of the table.
_ADDED_COLUMNS = {
    "raw.events": [(f"pii_{k}", "integer", "0") for k in _FIRST_PII_KINDS] + [("pii_card", "integer", "0")],
    "raw.ingest_log": [(f"pii_{k}", "bigint", "0") for k in _FIRST_PII_KINDS]
    + [("file_format", "varchar", "null"), ("file_error", "varchar", "null"), ("file_warning", "varchar", "null"),
       ("rules_fingerprint", "varchar", "null"), ("pii_card", "bigint", "0")],
    # every problem of the line, the primary `reason` first (NULL on rows written before it existed)
    "raw.quarantine": [("reasons", "varchar[]", "null")],
}


def ensure_raw_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists raw")
    for ddl in (RAW_EVENTS_DDL, RAW_QUARANTINE_DDL, RAW_INGEST_LOG_DDL):
        conn.execute(ddl)
    # payload_hash was stored as the text of the same 64-bit hash before; a number is cheaper to write
    old_hash = conn.execute("select data_type from information_schema.columns where table_schema = 'raw' "
                            "and table_name = 'events' and column_name = 'payload_hash'").fetchone()
    if old_hash and old_hash[0] == "VARCHAR":
        conn.execute("alter table raw.events alter payload_hash set data type ubigint")
    for table, columns in _ADDED_COLUMNS.items():
        for name, sql_type, default in columns:
            conn.execute(f"alter table {table} add column if not exists {name} {sql_type} default {default}")


def raw_events_columns() -> list[tuple[str, str]]:
    """(name, type) of every `raw.events` column, added ones included (for the asset catalogue)."""
    base = [tuple(line.strip().rstrip(",").split()[:2]) for line in RAW_EVENTS_DDL.strip().splitlines()[1:-1]]
    return base + [(name, col_type) for name, col_type, _default in _ADDED_COLUMNS["raw.events"]]
