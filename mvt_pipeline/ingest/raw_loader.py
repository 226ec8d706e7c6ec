"""Load one daily partition of raw dumps into `raw.events`, routing every unusable line to
`raw.quarantine` with a reason code, so that for each file: lines read = accepted + quarantined.

Files are read by DuckDB as single-column text (one row per line) so a malformed line cannot
abort the file or disappear; all parsing and validation happens in one set-based SQL pass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..registry import Registry
from .warehouse_schema import ensure_raw_schema

PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LINE_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
RAW_SNIPPET_CHARS = 4096
MAX_LINE_BYTES = 1_048_576

KNOWN_FIELDS = (
    "event_id", "event_type", "ts", "received_at", "unit_id", "device_id", "session_id", "seq",
    "experiment_id", "assignment", "cell_id", "hash_version", "metric", "value", "context",
)

# Redaction patterns (RE2 syntax), each preceded by a boundary group so that version strings such
# as "Chrome/120.0.0.0" or "3.2.1" are not mistaken for IP addresses or phone numbers.
_BOUNDARY = r"(^|[^A-Za-z0-9_./:-])"
PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "ipv4": r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}",
    "ipv6": r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    "phone": r"\+?\d[\d ()-]{7,}\d",
}
_PII_END = r"($|[^A-Za-z0-9_.@-])"


@dataclass
class FileResult:
    path: str
    source: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    pii_redactions: int
    error: str | None = None


@dataclass
class IngestSummary:
    partition: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def rows_accepted(self) -> int:
        return sum(f.rows_accepted for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    @property
    def pii_redactions(self) -> int:
        return sum(f.pii_redactions for f in self.files)

    @property
    def unreadable_files(self) -> list[FileResult]:
        return [f for f in self.files if f.error]


def list_partition_files(raw_dir: Path, partition: str) -> list[tuple[str, Path]]:
    """(source, file) pairs of `raw_dir/<source>/dt=<partition>/`, sorted for determinism."""
    if not PARTITION_RE.match(partition):
        raise ValueError(f"partition {partition!r} is not a YYYY-MM-DD date")
    found = []
    if not raw_dir.exists():
        return found
    for source_dir in sorted(p for p in raw_dir.iterdir() if p.is_dir()):
        part_dir = source_dir / f"dt={partition}"
        if not part_dir.is_dir():
            continue
        if not SOURCE_RE.match(source_dir.name):
            raise ValueError(f"source folder name {source_dir.name!r} must match {SOURCE_RE.pattern}")
        for path in sorted(part_dir.iterdir()):
            if path.is_file() and path.name.endswith(LINE_FILE_SUFFIXES):
                found.append((source_dir.name, path))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_registry_tables(conn: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    levels = [
        (e.id, f.name, level) for e in registry.experiments for f in e.factors for level in f.levels
    ]
    conn.execute("create or replace temp table _reg_levels (experiment_id varchar, factor varchar, level varchar)")
    if levels:
        conn.executemany("insert into _reg_levels values (?, ?, ?)", levels)


def _pii_sql(expr: str) -> tuple[str, str]:
    """SQL for (redacted text, number of redactions) of a JSON text expression."""
    redacted = expr
    counts = []
    for kind, core in PII_PATTERNS.items():
        pattern = f"{_BOUNDARY}({core}){_PII_END}"
        counts.append(f"len(regexp_extract_all(coalesce({expr}, ''), '{pattern}'))")
        redacted = f"regexp_replace({redacted}, '{pattern}', '\\1[redacted:{kind}]\\3', 'g')"
    return redacted, " + ".join(counts)


_PARSE_SQL = """
create or replace temp table _parsed as
with typed as (
    select
        line_number,
        line,
        strlen(line) > {max_line} as oversized,
        coalesce(try(json_valid(line)), false) and try(json_type(line)) = 'OBJECT' as ok_json
    from _lines
), fields as (
    select
        line_number, line, oversized, ok_json,
        case when ok_json then line->>'$.event_id' end as event_id,
        case when ok_json then line->>'$.event_type' end as event_type,
        case when ok_json then line->>'$.ts' end as ts_text,
        case when ok_json then line->>'$.received_at' end as received_text,
        case when ok_json then line->>'$.unit_id' end as unit_id,
        case when ok_json then line->>'$.device_id' end as device_id,
        case when ok_json then line->>'$.session_id' end as session_id,
        case when ok_json then json_type(line, '$.seq') end as seq_type,
        case when ok_json then line->>'$.seq' end as seq_text,
        case when ok_json then line->>'$.experiment_id' end as experiment_id,
        case when ok_json then json_type(line, '$.assignment') end as assignment_type,
        case when ok_json then json_extract(line, '$.assignment') end as assignment,
        case when ok_json then line->>'$.cell_id' end as cell_id,
        case when ok_json then line->>'$.hash_version' end as hash_version,
        case when ok_json then line->>'$.metric' end as metric,
        case when ok_json then json_type(line, '$.value') end as value_type,
        case when ok_json then try_cast(json_extract(line, '$.value') as double) end as value,
        case when ok_json and json_type(line, '$.context') = 'OBJECT'
             then json_extract(line, '$.context') end as context,
        case when ok_json then json_type(line, '$.context') end as context_type,
        case when ok_json then json_merge_patch(line, '{known_nulls}') end as extra_all
    from typed
)
select
    *,
    try_cast(ts_text as timestamptz)::timestamp as ts,
    try_cast(received_text as timestamptz)::timestamp as received_at
from fields
"""

_REASON_SQL = """
create or replace temp table _checked as
with bad_levels as (
    select p.line_number
    from _parsed p, json_each(p.assignment) j
    left join _reg_levels r
      on r.experiment_id = p.experiment_id and r.factor = j.key and r.level = (j.value->>'$')
    where p.event_type = 'exposure' and p.assignment_type = 'OBJECT'
      and (r.level is null or json_type(j.value) <> 'VARCHAR')
    group by p.line_number
), known_experiments as (
    select distinct experiment_id from _reg_levels
)
select
    p.*,
    case
        when p.oversized then 'oversized_line'
        when not p.ok_json then 'malformed_json'
        when p.event_id is null or p.event_id = '' then 'missing_required:event_id'
        when p.event_type is null then 'missing_required:event_type'
        when p.event_type not in ('exposure', 'metric') then 'bad_type:event_type'
        when p.ts_text is null then 'missing_required:ts'
        when p.ts is null then 'bad_timestamp'
        when p.received_text is not null and p.received_at is null then 'bad_timestamp'
        when p.unit_id is null or p.unit_id = '' then 'missing_required:unit_id'
        when p.seq_type is not null and p.seq_type not in ('UBIGINT', 'BIGINT', 'NULL') then 'bad_type:seq'
        when p.context_type is not null and p.context_type not in ('OBJECT', 'NULL') then 'bad_type:context'
        when p.event_type = 'exposure' and (p.experiment_id is null or p.experiment_id = '')
            then 'missing_required:experiment_id'
        when p.event_type = 'exposure' and (p.assignment_type is null or p.assignment_type = 'NULL')
            then 'missing_required:assignment'
        when p.event_type = 'exposure' and p.assignment_type <> 'OBJECT' then 'bad_type:assignment'
        when p.event_type = 'exposure' and k.experiment_id is null then 'unknown_experiment'
        when p.event_type = 'exposure' and b.line_number is not null then 'unknown_level'
        when p.event_type = 'metric' and (p.metric is null or p.metric = '') then 'missing_required:metric'
        when p.event_type = 'metric' and (p.value_type is null or p.value_type = 'NULL')
            then 'missing_required:value'
        when p.event_type = 'metric' and p.value_type not in ('UBIGINT', 'BIGINT', 'DOUBLE')
            then 'bad_type:value'
        when p.event_type = 'metric' and (p.value is null or not isfinite(p.value)) then 'non_finite_value'
    end as reason
from _parsed p
left join known_experiments k on k.experiment_id = p.experiment_id
left join bad_levels b on b.line_number = p.line_number
"""


def _read_lines(conn: duckdb.DuckDBPyConnection, path: Path, table: str) -> None:
    conn.execute(
        f"""
        create or replace temp table {table} as
        select row_number() over () as line_number, line
        from read_csv(?, columns = {{'line': 'VARCHAR'}}, header = false, delim = '\x1f', quote = '',
                      escape = '', auto_detect = false, compression = 'auto', strict_mode = false,
                      max_line_size = 16777216, null_padding = true)
        """,
        [str(path)],
    )


def _quarantine_file(conn, source: str, path: Path, exc: Exception, partition: str, now) -> FileResult:
    """A file that cannot be read at all becomes one quarantine row; the partition goes on."""
    text = str(exc).lower()
    reason = "encoding" if ("unicode" in text or "utf" in text) else "unreadable_file"
    conn.execute(
        "insert into raw.quarantine values (?, ?, null, ?, ?, ?, ?)",
        [source, str(path), reason, str(exc)[:RAW_SNIPPET_CHARS], partition, now],
    )
    return FileResult(str(path), source, 1, 0, 1, 0, error=f"{reason}: {exc}")


def _ingest_file(conn, source: str, path: Path, table: str, partition: str, now: dt.datetime) -> FileResult:
    conn.execute(f"create or replace temp view _lines as select * from {table}")
    known_nulls = "{" + ", ".join(f'"{f}": null' for f in KNOWN_FIELDS) + "}"
    conn.execute(_PARSE_SQL.format(max_line=MAX_LINE_BYTES, known_nulls=known_nulls))
    conn.execute(_REASON_SQL)
    ctx_redacted, ctx_count = _pii_sql("context::varchar")
    extra_redacted, extra_count = _pii_sql("extra_all::varchar")
    conn.execute(
        f"""
        insert into raw.events
        select
            event_id, event_type, ts, received_at, unit_id, device_id, session_id,
            case when seq_type in ('UBIGINT', 'BIGINT') then try_cast(seq_text as bigint) end,
            experiment_id,
            case when event_type = 'exposure' then assignment end,
            cell_id, hash_version,
            case when event_type = 'metric' then metric end,
            case when event_type = 'metric' then value end,
            {ctx_redacted}::json,
            case when extra_all::varchar <> '{{}}' then ({extra_redacted})::json end,
            ({ctx_count}) + (case when extra_all::varchar <> '{{}}' then {extra_count} else 0 end),
            md5(concat_ws('|', event_type, ts_text, unit_id, device_id, session_id, seq_text,
                          experiment_id, assignment::varchar, metric, value::varchar, context::varchar)),
            ?, ?, line_number, ?::date, ?
        from _checked where reason is null
        """,
        [source, str(path), partition, now],
    )
    conn.execute(
        """
        insert into raw.quarantine
        select ?, ?, line_number, reason, left(line, ?), ?::date, ? from _checked where reason is not null
        """,
        [source, str(path), RAW_SNIPPET_CHARS, partition, now],
    )
    read, accepted, pii = conn.execute(
        f"""select count(*), count(*) filter (where reason is null),
                   coalesce(sum(case when reason is null then ({ctx_count}) + (case when extra_all::varchar <> '{{}}' then {extra_count} else 0 end) end), 0)
            from _checked"""
    ).fetchone()
    return FileResult(str(path), source, read, accepted, read - accepted, int(pii))


def ingest_partition(
    conn: duckdb.DuckDBPyConnection, raw_dir: Path, partition: str, registry: Registry
) -> IngestSummary:
    """Replace partition `partition` of the raw tables with the contents of its dump folders.

    Idempotent: the partition's previous rows are deleted in the same transaction.
    """
    ensure_raw_schema(conn)
    conn.execute("set TimeZone = 'UTC'")
    _load_registry_tables(conn, registry)
    files = list_partition_files(raw_dir, partition)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    summary = IngestSummary(partition=partition)
    # Read every file before the transaction: a read error must not abort the partition's writes.
    staged: list[tuple[str, Path, str | None, Exception | None]] = []
    for i, (source, path) in enumerate(files):
        table = f"_file_lines_{i}"
        try:
            _read_lines(conn, path, table)
            staged.append((source, path, table, None))
        except duckdb.Error as exc:
            staged.append((source, path, None, exc))
    conn.execute("begin transaction")
    try:
        for table in ("raw.events", "raw.quarantine", "raw.ingest_log"):
            conn.execute(f"delete from {table} where dt = ?::date", [partition])
        for source, path, table, exc in staged:
            if exc is not None:
                result = _quarantine_file(conn, source, path, exc, partition, now)
            else:
                result = _ingest_file(conn, source, path, table, partition, now)
            summary.files.append(result)
            conn.execute(
                "insert into raw.ingest_log values (?, ?, ?::date, ?, ?, ?, ?, ?, ?, ?)",
                [result.path, source, partition, path.stat().st_size, _sha256(path), result.rows_read,
                 result.rows_accepted, result.rows_quarantined, result.pii_redactions, now],
            )
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    finally:
        for _source, _path, table, _exc in staged:
            if table:
                conn.execute(f"drop table if exists {table}")
    return summary
