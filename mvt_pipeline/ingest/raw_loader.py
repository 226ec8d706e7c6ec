"""Load one daily partition of raw dumps into `raw.events`, routing every unusable line to
`raw.quarantine` with a reason code, so that for each file: lines read = accepted + quarantined.

Steps, and why in this order:
1. fingerprint the partition's files and compare with `raw.ingest_log` (manifest): unchanged means
   a no-op (`skipped_unchanged=True`) unless `force=True`;
2. stage the CSV / Parquet files with DuckDB's readers *before* the write transaction: reading is
   where errors happen, and a failed statement inside a DuckDB transaction aborts the whole of it;
3. in one transaction: delete the partition's rows from the three raw tables, then for each chunk of
   JSON-lines files (read by polars, which cannot abort the transaction: `file_readers`), and last for
   the staged CSV / Parquet rows: the fast path inserts the canonical, valid, PII-free lines
   straight into `raw.events` (`fast_path_sql`); the other lines (an anti-join on the keys just
   inserted) go through the general path into a small temp table (`validation_sql`), where PII is
   looked for once per distinct `context` / `extra` text and the hits are joined back (view
   `_ingest_rows`), and from there into `raw.events` or `raw.quarantine`; count per file; then
   write the manifest rows and commit. Re-materializing replaces the partition atomically (no
   duplicates, ever), and memory stays bounded by one chunk however big the day.

Accounting: a line is one non-blank physical line (JSON lines), one record (CSV) or one row
(Parquet). A file quarantined whole (empty, unreadable, binary) counts as one line read and one
quarantined, so `rows_read = rows_accepted + rows_quarantined` holds for every file. A truncated
gzip keeps its complete lines and adds one `truncated_file` line.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from ..registry import Registry
from ..registry.models import Source
from .file_readers import (ALL_SUFFIXES, OTHER_TABLE, StagedFile, drop_staging, file_format, jsonl_chunks,
                           read_jsonl_chunk, stage_other_files, staged_files)
from .dump_folders import is_real_dir
from .manifest import fingerprint_files, partition_unchanged, registry_cell_texts, registry_levels, rules_fingerprint
from .fast_path_sql import SHAPE_SAMPLE_LINES, fast_select_sql, observed_shapes, pending_lines_sql
from .validation_sql import (PII_HITS_TABLE, PII_TEXTS_TABLE, checked_select_sql, pii_applied_sql, pii_file_sums_sql,
                             pii_hits_sql)
from .pii_sql import DEFAULT_PII_KEY, PII_KEY_VARIABLE
from .source_formats import create_mapping, drop_mapping, mapped_sql
from .warehouse_schema import PII_KINDS, ensure_raw_schema
from ..config import settings

_log = logging.getLogger(__name__)

PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_EVENT_COLUMNS = (
    "event_id, event_type, ts, received_at, unit_id, device_id, session_id, seq, experiment_id, assignment, "
    "cell_id, hash_version, metric, value, context, extra, pii_redactions, payload_hash, source, source_file, "
    "line_number, dt, ingested_at, " + ", ".join(f"pii_{k}" for k in PII_KINDS)
)
_LOG_COLUMNS = (
    "path, source, dt, size_bytes, sha256, rows_read, rows_accepted, rows_quarantined, pii_redactions, "
    "ingested_at, " + ", ".join(f"pii_{k}" for k in PII_KINDS) + ", file_format, file_error, file_warning, rules_fingerprint"
)


@dataclass
class FileResult:
    path: str
    source: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    pii_redactions: int
    error: str | None = None  # content was lost: quarantined whole (one row, no line number) or truncated
    warning: str | None = None  # any file-level problem, also recovered ones (e.g. some non-UTF-8 lines)
    file_format: str = "jsonl"
    pii_by_kind: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0
    sha256: str = ""


@dataclass
class IngestSummary:
    partition: str
    files: list[FileResult] = field(default_factory=list)
    skipped_unchanged: bool = False  # manifest matched: nothing was read or written
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reason -> rows, this partition

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
    def pii_by_kind(self) -> dict[str, int]:
        return {k: sum(f.pii_by_kind.get(k, 0) for f in self.files) for k in PII_KINDS}

    @property
    def unreadable_files(self) -> list[FileResult]:
        return [f for f in self.files if f.error]

    @property
    def warnings(self) -> list[str]:
        return [f"{f.path}: {f.warning}" for f in self.files if f.warning]

    @property
    def mismatched_files(self) -> list[str]:
        return [f.path for f in self.files if f.rows_read != f.rows_accepted + f.rows_quarantined]


def list_partition_files(raw_dir: Path, partition: str) -> list[tuple[str, Path]]:
    """(source, file) pairs of `raw_dir/<source>/dt=<partition>/`, sorted for determinism.

    Links are never followed (`raw_dir` itself is the operator's choice and may be one): a source or
    `dt=` folder that is a symbolic link is skipped with a logged warning; a dump file (by its name)
    that is a link, a FIFO, a device or a socket is listed but never opened or followed (the manifest
    fingerprints it with `lstat`, the readers check `file_readers.refusal`), so it becomes one quarantine row (`symlink_refused`, or
    `unreadable_file` for special files) and an operator sees it in `raw.quarantine`."""
    if not PARTITION_RE.match(partition):
        raise ValueError(f"partition {partition!r} is not a YYYY-MM-DD date")
    try:
        dt.date.fromisoformat(partition)
    except ValueError:
        raise ValueError(f"partition {partition!r} is not a valid date") from None
    found: list[tuple[str, Path]] = []
    if not raw_dir.exists():
        return found
    for source_dir in sorted(raw_dir.iterdir()):
        part_dir = source_dir / f"dt={partition}"
        if not (is_real_dir(source_dir) and is_real_dir(part_dir)):
            continue
        if not SOURCE_RE.match(source_dir.name):
            raise ValueError(f"source folder name {source_dir.name!r} must match {SOURCE_RE.pattern}")
        for path in sorted(part_dir.iterdir()):
            if not path.name.lower().endswith(ALL_SUFFIXES):
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                found.append((source_dir.name, path))
            elif not stat.S_ISDIR(mode):  # link, FIFO, device, socket: one quarantine row, never opened
                _log.warning("%s: not a regular file (%s), quarantined without being read", path,
                             "symbolic link" if stat.S_ISLNK(mode) else "FIFO, device or socket")
                found.append((source_dir.name, path))
    return found


GENERAL_TABLE = "_ingest_general"  # the general path's rows: the lines the fast path did not accept
ROWS_VIEW = "_ingest_rows"  # GENERAL_TABLE with the PII redactions applied
# The partition's constants and the chunk's files, as session variables: the fast path's insert
# reads the chunk's Arrow lines through the relation API, which takes no query parameters.
# The PII key too (`pii_sql.PII_KEY_VARIABLE`): a variable keeps it out of every statement's text.
_VARS = {"sources": "mvt_ingest_sources", "paths": "mvt_ingest_paths", "dt": "mvt_ingest_dt",
         "now": "mvt_ingest_now", "chunk_idx": "mvt_ingest_chunk_idx", "chunk_paths": "mvt_ingest_chunk_paths",
         "pii_key": PII_KEY_VARIABLE}
# (file_idx, line_number) of the chunk's rows in `raw.events` so far: the fast path's, when read
# before the general path's are inserted
_CHUNK_KEYS = (
    f"(select f.file_idx, e.line_number from raw.events e join (select unnest(getvariable('{_VARS['chunk_idx']}')) "
    f"as file_idx, unnest(getvariable('{_VARS['chunk_paths']}')) as path) f on e.source_file = f.path "
    f"where e.dt = getvariable('{_VARS['dt']}'))")


def _file_results(conn, staged: list[StagedFile], fingerprints, fast_accepted: dict[int, int]) -> list[FileResult]:
    """Per-file counts of one chunk (`staged`): the fast path's accepted rows (`fast_accepted`) plus
    the general path's rows (no PII join), PII from the per-file text counts."""
    rows = conn.execute(
        f"select file_idx, count(*), count(*) filter (where reason is null), "
        f"count(*) filter (where line_number is null or reason = 'truncated_file') > 0 "
        f"from {GENERAL_TABLE} group by 1").fetchall()
    by_file = {r[0]: r[1:] for r in rows}
    pii_by_file = {r[0]: r[1:] for r in conn.execute(pii_file_sums_sql()).fetchall()}
    results = []
    for s in staged:
        fp = fingerprints[s.index]
        read, accepted, lost = by_file.get(s.index, (0, 0, False))
        read, accepted = read + fast_accepted.get(s.index, 0), accepted + fast_accepted.get(s.index, 0)
        pii = [int(x) for x in pii_by_file.get(s.index, (0,) * len(PII_KINDS))]
        results.append(FileResult(
            path=str(fp.path), source=fp.source, rows_read=int(read), rows_accepted=int(accepted),
            rows_quarantined=int(read) - int(accepted), pii_redactions=sum(pii),
            error=s.warning if lost else None, warning=s.warning, file_format=s.file_format,
            pii_by_kind=dict(zip(PII_KINDS, pii)), size_bytes=fp.size_bytes, sha256=fp.sha256))
    return results


def _summary_from_log(conn, partition: str) -> list[FileResult]:
    rows = conn.execute(
        f"select path, source, rows_read, rows_accepted, rows_quarantined, pii_redactions, file_error, file_format, "
        f"size_bytes, sha256, {', '.join(f'pii_{k}' for k in PII_KINDS)}, file_warning from raw.ingest_log where dt = ?::date "
        f"order by path", [partition]).fetchall()
    return [FileResult(r[0], r[1], r[2], r[3], r[4], r[5], error=r[6],
                       warning=r[10 + len(PII_KINDS)], file_format=r[7] or "jsonl", pii_by_kind=dict(zip(PII_KINDS, r[10:])),
                       size_bytes=r[8], sha256=r[9]) for r in rows]


def _reasons(conn, partition: str) -> dict[str, int]:
    rows = conn.execute("select reason, count(*) from raw.quarantine where dt = ?::date group by 1 order by 2 desc, 1",
                        [partition]).fetchall()
    return {r: int(n) for r, n in rows}


def ingest_partition(
    conn: duckdb.DuckDBPyConnection, raw_dir: Path, partition: str, registry: Registry, *, force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IngestSummary:
    """Replace partition `partition` of the raw tables with the contents of its dump folders.

    Idempotent: the partition's previous rows are deleted in the same transaction. When every file's
    (path, size, sha256) and the rules fingerprint match `raw.ingest_log` and no file was added or
    removed, nothing is read or written and the summary says `skipped_unchanged=True` (its counts
    come from the log); `force=True` re-ingests anyway.
    """
    ensure_raw_schema(conn)
    conn.execute("set TimeZone = 'UTC'")
    files = list_partition_files(Path(raw_dir), partition)
    fingerprints = fingerprint_files(files)
    rules = rules_fingerprint(registry)
    if not force and partition_unchanged(conn, partition, fingerprints, rules):
        return IngestSummary(partition, _summary_from_log(conn, partition), skipped_unchanged=True,
                             reasons=_reasons(conn, partition))
    levels = registry_levels(registry)
    cells = registry_cell_texts(registry)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    summary = IngestSummary(partition=partition)
    staged = staged_files([(fp.source, fp.path) for fp in fingerprints])
    chunks = jsonl_chunks(staged)
    ctx = _WriteContext(partition, now, [fp.source for fp in fingerprints], [str(fp.path) for fp in fingerprints])
    # files of sources in an SDK's own format (sources.yaml), rewritten into contract lines first
    for i, source in enumerate(ctx.sources):
        fmt = registry.source_format(source)
        if fmt.format != "contract":
            ctx.formats[i] = fmt
    preserve = conn.execute("select current_setting('preserve_insertion_order')").fetchone()[0]
    try:
        _set_variables(conn, ctx)
        create_mapping(conn, registry, ctx.formats)
        others = stage_other_files(conn, staged)
        mapped = mapped_sql(OTHER_TABLE, ctx.formats, [o.index for o in others])
        if mapped:  # CSV / Parquet rows of an SDK's format
            conn.execute(f"create or replace temp table _mapped_other as {mapped}")
            conn.execute(f"drop table {OTHER_TABLE}")
            conn.execute(f"alter table _mapped_other rename to {OTHER_TABLE}")
        # every row carries its file and line number, so row order is free: lets DuckDB write in parallel
        conn.execute("set preserve_insertion_order = false")
        conn.execute("begin transaction")
        try:
            for table in ("raw.events", "raw.quarantine", "raw.ingest_log"):
                conn.execute(f"delete from {table} where dt = ?::date", [partition])
            for n, chunk in enumerate(chunks, start=1):
                def read(chunk=chunk, n=n) -> pl.DataFrame:
                    frame = read_jsonl_chunk(chunk)
                    if progress:
                        progress(f"{partition}: chunk {n}/{len(chunks)}: {len(chunk)} JSON-lines file(s), "
                                 f"{frame.height:,} lines")
                    return frame

                summary.files += _load_chunk(conn, read, chunk, fingerprints, levels, cells, ctx)
            if others:
                summary.files += _load_chunk(conn, None, others, fingerprints, levels, cells, ctx)
            order = {str(fp.path): i for i, fp in enumerate(fingerprints)}
            summary.files.sort(key=lambda f: order[f.path])
            _write_log(conn, summary.files, partition, now, rules)
            conn.execute("commit")
        except Exception:
            conn.execute("rollback")
            raise
    finally:
        conn.execute(f"set preserve_insertion_order = {'true' if str(preserve).lower() == 'true' else 'false'}")
        _drop_temps(conn)
        drop_staging(conn)
        drop_mapping(conn)
        _reset_variables(conn)
    summary.reasons = _reasons(conn, partition)
    return summary


SCAN_BATCH_ROWS = 65_536
LINES_VIEW = "_ingest_lines"  # name of the chunk's lines in the validation statements


@dataclass
class _WriteContext:
    partition: str
    now: dt.datetime
    sources: list[str]  # by file_idx
    paths: list[str]
    formats: dict[int, Source] = field(default_factory=dict)  # file_idx -> its source, when not the contract


def _set_variables(conn, ctx: _WriteContext) -> None:
    """The partition's constants and the PII key (MVT_PII_KEY; unset: the documented default key,
    with one warning per ingestion) as session variables, bound as parameters."""
    key = settings().pii.key
    if not key:
        _log.warning("MVT_PII_KEY is not set: ids that hold PII are hashed with the public default key")
    values = {"sources": ctx.sources, "paths": ctx.paths, "dt": ctx.partition, "now": ctx.now,
              "pii_key": key or DEFAULT_PII_KEY}
    casts = {"dt": "::date", "now": "::timestamp", "pii_key": "::varchar"}
    for key, value in values.items():
        conn.execute(f"set variable {_VARS[key]} = $v{casts.get(key, '')}", {"v": value})


def _reset_variables(conn) -> None:
    for name in _VARS.values():
        conn.execute(f"reset variable {name}")


def _drop_temps(conn) -> None:
    conn.execute(f"drop view if exists {ROWS_VIEW}")
    for table in (GENERAL_TABLE, PII_HITS_TABLE, PII_TEXTS_TABLE):
        conn.execute(f"drop table if exists {table}")


def _load_chunk(conn, read: Callable[[], pl.DataFrame] | None, staged: list[StagedFile], fingerprints, levels,
                cells, ctx: _WriteContext) -> list[FileResult]:
    """Validate the lines of one chunk (the polars frame `read()` returns, or the staged CSV / Parquet
    rows when `read` is None), redact PII, insert them; return the files' counts.

    The fast path's accepted rows go straight into `raw.events` (a temp table of every row, to tell
    accepted from pending, cost more, and DuckDB keeps temp tables dropped inside a transaction
    until the commit); the other lines go through the general path into a small temp table, then
    PII redaction, and into `raw.events` or `raw.quarantine`. The frame is bound to the statements
    that read it (relation API) rather than registered: a registered object is kept alive by the
    open transaction until the commit, so memory would grow with every chunk; and this function
    holds its only reference, so the text is freed once the pending lines are picked out."""
    conn.execute(f"set variable {_VARS['chunk_idx']} = $v::integer[]", {"v": [s.index for s in staged]})
    conn.execute(f"set variable {_VARS['chunk_paths']} = $v::varchar[]", {"v": [ctx.paths[s.index] for s in staged]})
    try:
        if read is None:
            sample = [line for (line,) in conn.execute(
                f"select line from {OTHER_TABLE} where pre_reason is null limit {SHAPE_SAMPLE_LINES * 4}").fetchall()]
            fast = fast_select_sql(OTHER_TABLE, levels, cells, observed_shapes(sample))
            conn.execute(_insert_events_sql(fast, fast_path=True))
            general = checked_select_sql(f"({pending_lines_sql(OTHER_TABLE, _CHUNK_KEYS)})", levels, cells)
            conn.execute(f"create or replace temp table {GENERAL_TABLE} as {general}")
            accepted = _chunk_keys(conn)
        else:
            frame = read()
            mapped = mapped_sql(LINES_VIEW, ctx.formats, [s.index for s in staged])
            if mapped:  # lines of an SDK's format, rewritten into contract lines (source_formats)
                frame = pl.from_arrow(conn.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.newest())).query(
                    LINES_VIEW, mapped).to_arrow_table()).cast(
                    {"file_idx": pl.Int32, "line_number": pl.Int64, "line": pl.String, "pre_reason": pl.String})
            # the key order(s) and separators this chunk's SDKs write, from the first lines of each file
            sample = frame.group_by("file_idx", maintain_order=True).head(SHAPE_SAMPLE_LINES)["line"].to_list()
            fast = fast_select_sql(LINES_VIEW, levels, cells, observed_shapes(sample))
            # DuckDB scans an Arrow table one record batch per thread: a file polars read in one piece
            # would be validated on one core, so the lines are cut into batches (zero-copy slices)
            lines = frame.to_arrow(compat_level=pl.CompatLevel.newest())  # string views: no copy
            lines = pa.Table.from_batches(lines.to_batches(max_chunksize=SCAN_BATCH_ROWS), lines.schema)
            conn.from_arrow(lines).query(LINES_VIEW, _insert_events_sql(fast, fast_path=True))
            del lines
            # the lines the fast path did not accept (a few per thousand): an anti-join on the keys in
            # polars, which copies only those lines (in DuckDB every line's text was converted again)
            accepted = _chunk_keys(conn)
            pending = frame.join(accepted, on=["file_idx", "line_number"], how="anti")
            del frame
            conn.from_arrow(pending.to_arrow(compat_level=pl.CompatLevel.newest())).query(
                LINES_VIEW, f"create or replace temp table {GENERAL_TABLE} as {checked_select_sql(LINES_VIEW, levels, cells)}")
            del pending
        fast_accepted = dict(accepted.group_by("file_idx").len().iter_rows())
        # PII: each distinct context / extra text is scanned once; the (rare) hits are joined back by
        # the view the inserts read (no join at all when nothing matched), and counted per file from
        # the per-file text counts
        for stmt in pii_hits_sql(GENERAL_TABLE):
            conn.execute(stmt)
        cols = {c for (c,) in conn.execute(f"select distinct col from {PII_HITS_TABLE}").fetchall()}
        conn.execute(f"create or replace temp view {ROWS_VIEW} as {pii_applied_sql(GENERAL_TABLE, cols)}")
        results = _file_results(conn, staged, fingerprints, fast_accepted)
        conn.execute(_insert_events_sql(f"select * from {ROWS_VIEW} where reason is null", fast_path=False))
        conn.execute(
            "insert into raw.quarantine (source, source_file, line_number, reason, raw, dt, ingested_at, reasons) "
            f"select {_constant_columns_sql()}, line_number, reason, raw, getvariable('{_VARS['dt']}'), "
            f"getvariable('{_VARS['now']}'), reasons from {GENERAL_TABLE} where reason is not null")
        return results
    finally:
        _drop_temps(conn)


def _chunk_keys(conn) -> pl.DataFrame:
    """(file_idx, line_number) of the chunk's rows in `raw.events` so far (read right after the fast
    path's insert: its accepted lines)."""
    return pl.from_arrow(conn.sql(f"select file_idx, line_number from {_CHUNK_KEYS}").to_arrow_table())


def _constant_columns_sql() -> str:
    """`source`, `source_file` of a row from its `file_idx`."""
    return (f"getvariable('{_VARS['sources']}')[file_idx + 1], getvariable('{_VARS['paths']}')[file_idx + 1]")


def _insert_events_sql(select: str, *, fast_path: bool) -> str:
    """INSERT into `raw.events` of the rows of `select`: the fast path's columns (`FAST_COLUMNS`, no
    unknown field and no PII by construction) or a checked row with its PII counts."""
    pii = ["0"] * len(PII_KINDS) if fast_path else [f"pii_{k}" for k in PII_KINDS]
    return f"""
        insert into raw.events ({_EVENT_COLUMNS})
        select event_id, event_type, ts, received_at, unit_id, device_id, session_id, seq, experiment_id,
               assignment, cell_id, hash_version, metric, value, context, {'null' if fast_path else 'extra'},
               {' + '.join(pii)}, payload_hash, {_constant_columns_sql()}, line_number,
               getvariable('{_VARS['dt']}'), getvariable('{_VARS['now']}'), {', '.join(pii)}
        from ({select})
        """


def _write_log(conn, results: list[FileResult], partition: str, now, rules: str) -> None:
    if results:
        conn.executemany(
            f"insert into raw.ingest_log ({_LOG_COLUMNS}) values (?, ?, ?::date, ?, ?, ?, ?, ?, ?, ?, "
            f"{', '.join('?' for _ in PII_KINDS)}, ?, ?, ?, ?)",
            [[r.path, r.source, partition, r.size_bytes, r.sha256, r.rows_read, r.rows_accepted, r.rows_quarantined,
              r.pii_redactions, now, *(r.pii_by_kind[k] for k in PII_KINDS),
              r.file_format or file_format(Path(r.path)), r.error, r.warning, rules] for r in results],
        )
