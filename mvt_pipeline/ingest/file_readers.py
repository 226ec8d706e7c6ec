"""Stage a partition's dump files as rows of `(file_idx, line_number, line, pre_reason)`.

Every format ends up in that one shape so a single validation pass (`validation_sql`) decides what is
accepted, with the same reason codes whatever the file type:

- JSON lines (`.jsonl`, `.ndjson`, optionally `.gz`) are read by DuckDB's CSV reader as one text
  column: a malformed line cannot abort the file or vanish. All the partition's JSON-lines files are
  read by one `read_csv` call (DuckDB decompresses several files at once, one per thread) into one
  temp table in file order (insertion order is preserved), so a row's physical line number is its
  `rowid` minus the first `rowid` of its file, plus one: no window, no per-file round trip. Blank
  lines come back as NULL and are skipped later without being counted, but they keep the numbering
  physical. If DuckDB refuses any file of the batch, the files are read one by one (below).
- CSV (header row, contract column names, nested `assignment`/`context` as JSON text) and Parquet
  (typed columns, or JSON text for the nested ones) are read natively and each row is rendered as one
  JSON object in SQL, so numbers stay numbers, nested objects stay objects, and extra columns become
  unknown fields (kept in `extra`). Line numbers: CSV = record number + 1 (the header is line 1),
  Parquet = row number in the file, from 1.
- Files DuckDB refuses (invalid UTF-8, truncated gzip, lines over 16 MiB) take a Python fallback that
  recovers every decodable line and marks only the bad ones (`encoding`, `oversized_line`,
  `truncated_file`). Good files never go through Python line by line.
- A file that cannot be read at all (empty, binary junk, a gzip with a broken header, a corrupt
  Parquet) becomes one row with a `pre_reason` and no line number.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

RAW_SNIPPET_CHARS = 4096
MAX_LINE_BYTES = 1_048_576
DUCKDB_MAX_LINE = 16_777_216
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSONL_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
_NUMERIC_FIELDS = ("seq", "value")
_OBJECT_FIELDS = ("assignment", "context")
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))


BATCH_TABLE = "_ingest_batch"  # (file_pos, line): JSON-lines files read together, rowid = read order
OTHER_TABLE = "_ingest_other"  # (file_idx, line_number, line, pre_reason): every other staged file
_JSONL_OPTIONS = (f"columns = {{'line': 'VARCHAR'}}, header = false, delim = '\x1f', quote = '', escape = '', "
                  f"auto_detect = false, compression = 'auto', strict_mode = false, "
                  f"max_line_size = {DUCKDB_MAX_LINE}, null_padding = true")


@dataclass
class StagedFile:
    source: str
    path: Path
    file_format: str
    table: str
    warning: str | None = None  # file-level problem a person should hear about (quarantined whole, truncated...)
    index: int = 0  # position in the partition's file list (`file_idx` of its staged rows)
    first_rowid: int = 0  # read in the batch: rowid of its line 1 in BATCH_TABLE


def stage_partition(conn: duckdb.DuckDBPyConnection, files: list[tuple[str, Path]]) -> tuple[list[StagedFile], str]:
    """Stage every (source, path) of a partition; returns one StagedFile per file (same order) and
    the SQL of the relation `(file_idx, line_number, line, pre_reason)` holding all their lines.
    Never raises for bad content (that becomes rows). Temp tables: `drop_staging` removes them."""
    conn.execute(f"create or replace temp table {OTHER_TABLE} (file_idx integer, line_number bigint, line varchar, "
                 "pre_reason varchar)")
    staged = [StagedFile(source, path, file_format(path) or "unknown", OTHER_TABLE, index=i)
              for i, (source, path) in enumerate(files)]
    batch = []
    for s in staged:
        if s.file_format == "jsonl" and s.path.stat().st_size > 0 and not _looks_binary(s.path):
            batch.append(s)
        else:
            _stage_alone(conn, s)
    batch = _read_json_batch(conn, batch)
    if not batch:
        return staged, f"select * from {OTHER_TABLE}"
    positions = "[" + ", ".join(str(s.index) for s in batch) + "]"
    offsets = "[" + ", ".join(str(s.first_rowid) for s in batch) + "]"
    lines = (f"select {positions}[file_pos + 1] as file_idx, rowid - {offsets}[file_pos + 1] + 1 as line_number, "
             f"line, null::varchar as pre_reason from {BATCH_TABLE} union all select * from {OTHER_TABLE}")
    return staged, lines


def drop_staging(conn: duckdb.DuckDBPyConnection) -> None:
    for table in (BATCH_TABLE, OTHER_TABLE, "_typed_rows", "_stage_one"):
        conn.execute(f"drop table if exists {table}")


def _stage_alone(conn, staged: StagedFile, whole_file_reason: tuple[str, str] | None = None) -> None:
    """Stage one file on its own (CSV, Parquet, whole-file problems, JSON lines DuckDB refused) into
    OTHER_TABLE; `whole_file_reason` = (reason, message) quarantines it whole without reading it."""
    try:
        if whole_file_reason:
            staged.table = "_stage_one"
            _whole_file(conn, staged, *whole_file_reason)
        else:
            stage_file(conn, staged.source, staged.path, "_stage_one", staged)
        conn.execute(f"insert into {OTHER_TABLE} select ?, line_number, line, pre_reason from _stage_one", [staged.index])
    finally:
        conn.execute("drop table if exists _stage_one")
        staged.table = OTHER_TABLE


def _read_json_batch(conn, batch: list[StagedFile]) -> list[StagedFile]:
    """Read `batch` with one `read_csv` call into BATCH_TABLE; returns the files staged there (each
    with `first_rowid`). Files DuckDB refuses, and blank-only files, are staged alone instead."""
    conn.execute(f"create or replace temp table {BATCH_TABLE} (file_pos integer, line varchar)")
    if not batch:
        return []
    preserve = conn.execute("select current_setting('preserve_insertion_order')").fetchone()[0]
    try:
        conn.execute("set preserve_insertion_order = true")  # rowid must follow the files' line order
        conn.execute(f"create or replace temp table {BATCH_TABLE} as select file_index::integer as file_pos, line "
                     f"from read_csv(?, {_JSONL_OPTIONS})", [[str(s.path) for s in batch]])
        stats = {pos: (lo, hi, n, nonblank) for pos, lo, hi, n, nonblank in conn.execute(
            f"select file_pos, min(rowid), max(rowid), count(*), count(line) from {BATCH_TABLE} group by 1").fetchall()}
    except duckdb.Error:
        stats = None  # some file is refused (invalid UTF-8, truncated gzip, huge line): read one by one
    finally:
        conn.execute(f"set preserve_insertion_order = {'true' if str(preserve).lower() == 'true' else 'false'}")
    if stats is None or any(hi - lo + 1 != n for lo, hi, n, _ in stats.values()):
        conn.execute(f"create or replace temp table {BATCH_TABLE} (file_pos integer, line varchar)")
        for s in batch:
            _stage_alone(conn, s)
        return []
    kept = []
    for pos, s in enumerate(batch):
        lo, _hi, _n, nonblank = stats.get(pos, (0, 0, 0, 0))
        if nonblank == 0:  # its rows (all blank) are skipped by validation; the file is one empty_file row
            _stage_alone(conn, s, ("empty_file", "no lines (empty or blank-only content)"))
            continue
        s.first_rowid = lo
        s.table = BATCH_TABLE
        kept.append(s)
    return kept


def file_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def stage_file(conn: duckdb.DuckDBPyConnection, source: str, path: Path, table: str,
               staged: StagedFile | None = None) -> StagedFile:
    """Create temp table `table(line_number, line, pre_reason)` for `path` alone; never raises for
    bad content (that becomes rows). `staged`, if given, is updated (warning) and returned."""
    fmt = file_format(path) or "unknown"
    if staged is None:
        staged = StagedFile(source, path, fmt, table)
    staged.table = table
    if path.stat().st_size == 0:
        return _whole_file(conn, staged, "empty_file", "empty file (0 bytes)")
    if fmt == "jsonl" and _looks_binary(path):
        return _whole_file(conn, staged, "unreadable_file", "binary content: not UTF-8 text lines")
    try:
        if fmt == "jsonl":
            _read_json_lines(conn, path, table)
        elif fmt == "csv":
            _read_rows_as_json(conn, path, table, "read_csv(?, header = true, all_varchar = true, null_padding = true, hive_partitioning = false)",
                               "row_number() over () + 1")
        else:
            _read_rows_as_json(conn, path, table, "read_parquet(?, file_row_number = true, hive_partitioning = false)", "file_row_number + 1")
    except duckdb.Error as exc:
        if fmt != "jsonl":
            text = str(exc).lower()
            reason = "encoding" if ("unicode" in text or "utf" in text) else "unreadable_file"
            return _whole_file(conn, staged, reason, str(exc))
        return _python_fallback(conn, staged, exc)
    if conn.execute(f"select count(*) from {table} where line is not null or pre_reason is not null").fetchone()[0] == 0:
        return _whole_file(conn, staged, "empty_file", "no lines (empty or blank-only content)")
    return staged


def _looks_binary(path: Path, sample: int = 65536) -> bool:
    """True when the first 64 KiB are mostly control bytes or invalid UTF-8: a junk file is one
    quarantine row, not thousands of `encoding` lines. JSON text has almost no control bytes."""
    import gzip

    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(sample)
        else:
            with path.open("rb") as fh:
                head = fh.read(sample)
    except (OSError, EOFError, zlib.error):
        return False  # a broken gzip is diagnosed by the reader (truncated / unreadable)
    if not head:
        return False
    control = len(head) - len(head.translate(None, _CONTROL_BYTES))
    invalid = head.decode("utf-8", "replace").count("\ufffd")
    return (control + invalid) / len(head) > 0.3


def _read_json_lines(conn, path: Path, table: str) -> None:
    conn.execute(f"create or replace temp table {table} as select row_number() over () as line_number, line, "
                 f"null::varchar as pre_reason from read_csv(?, {_JSONL_OPTIONS})", [str(path)])


def _json_value_sql(name: str, sql_type: str) -> str:
    """SQL for the JSON text of one column's value, typed as the contract expects."""
    col = '"' + name.replace('"', '""') + '"'
    if sql_type.upper() != "VARCHAR":
        return f"to_json({col})::varchar"
    if name in _NUMERIC_FIELDS:
        return (f"case when lower(trim({col})) in ('nan', '+nan', '-nan') then 'NaN' "
                f"when lower(trim({col})) in ('inf', '+inf', 'infinity', '+infinity') then 'Infinity' "
                f"when lower(trim({col})) in ('-inf', '-infinity') then '-Infinity' "
                f"when try_cast({col} as double) is not null and json_valid(trim({col})) then trim({col}) "
                f"else to_json({col})::varchar end")
    if name in _OBJECT_FIELDS:
        return (f"case when left(ltrim({col}), 1) in ('{{', '[') and json_valid({col}) then {col} "
                f"else to_json({col})::varchar end")
    return f"to_json({col})::varchar"


def _read_rows_as_json(conn, path: Path, table: str, reader: str, line_number: str) -> None:
    """CSV/Parquet rows -> one JSON object per row, NULL/empty cells omitted (absent fields)."""
    conn.execute(f"create or replace temp table _typed_rows as select {line_number} as _line_number, * "
                 f"from {reader}", [str(path)])
    try:
        columns = [(name, typ) for name, typ, *_ in conn.execute("describe _typed_rows").fetchall()
                   if name not in ("_line_number", "file_row_number")]
        parts = []
        for name, typ in columns:
            col = '"' + name.replace('"', '""') + '"'
            key = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '":'
            empty = f" and {col} <> ''" if typ.upper() == "VARCHAR" else ""
            parts.append(f"case when {col} is not null{empty} then '{key.replace(chr(39), chr(39) * 2)}' || "
                         f"{_json_value_sql(name, typ)} end")
        body = "concat_ws(',', " + ", ".join(parts) + ")" if parts else "''"
        conn.execute(f"create or replace temp table {table} as select _line_number as line_number, "
                     f"'{{' || {body} || '}}' as line, null::varchar as pre_reason from _typed_rows")
    finally:
        conn.execute("drop table if exists _typed_rows")


def _whole_file(conn, staged: StagedFile, reason: str, message: str) -> StagedFile:
    conn.execute(f"create or replace temp table {staged.table} (line_number bigint, line varchar, pre_reason varchar)")
    conn.execute(f"insert into {staged.table} values (null, ?, ?)", [message[:RAW_SNIPPET_CHARS], reason])
    staged.warning = f"{reason}: {message.splitlines()[0] if message else ''}"[:500]
    return staged


def _gunzip_tolerant(data: bytes) -> tuple[bytes, bool]:
    """(bytes recovered, complete?) of a possibly truncated, possibly multi-member gzip stream."""
    out: list[bytes] = []
    buf = data
    try:
        while buf:
            d = zlib.decompressobj(31)
            out.append(d.decompress(buf))
            if not d.eof:
                return b"".join(out), False
            buf = d.unused_data
    except zlib.error:
        return b"".join(out), False
    return b"".join(out), True


def _python_fallback(conn, staged: StagedFile, exc: Exception) -> StagedFile:
    """Recover what DuckDB refused, line by line, but only for this (already refused) file."""
    data = staged.path.read_bytes()
    complete = True
    if staged.path.name.lower().endswith(".gz"):
        data, complete = _gunzip_tolerant(data)
        if not data:
            return _whole_file(conn, staged, "unreadable_file", f"not a readable gzip stream: {exc}")
    pieces = data.split(b"\n")
    ends_clean = data.endswith(b"\n")
    if ends_clean:
        pieces.pop()
    numbers, lines, reasons = [], [], []
    bad = 0
    for i, piece in enumerate(pieces, start=1):
        line, reason = None, None
        if not complete and i == len(pieces) and not ends_clean:
            reason = "truncated_file"
        if len(piece) > MAX_LINE_BYTES:
            reason = reason or "oversized_line"
            piece = piece[:RAW_SNIPPET_CHARS]
        try:
            line = piece.decode("utf-8")
            if "\x00" in line:
                raise UnicodeError("NUL byte")
        except UnicodeError:
            reason = reason or "encoding"
            line = piece[:RAW_SNIPPET_CHARS].replace(b"\x00", b"\\0").decode("utf-8", "backslashreplace")
            bad += 1
        if line is not None and not line.strip() and reason is None:
            line = None  # blank line: skipped and not counted, like the DuckDB path
        numbers.append(i)
        lines.append(line)
        reasons.append(reason)
    nonblank = sum(1 for line, r in zip(lines, reasons) if line is not None or r is not None)
    if nonblank and bad > nonblank / 2:
        return _whole_file(conn, staged, "unreadable_file",
                           f"binary content: {bad} of {nonblank} lines are not UTF-8 text ({exc})")
    if not complete and ends_clean:
        numbers.append(None)
        lines.append(f"gzip stream ends early after {len(pieces)} complete lines")
        reasons.append("truncated_file")
    frame = pa.table({"line_number": pa.array(numbers, pa.int64()), "line": pa.array(lines, pa.string()),
                      "pre_reason": pa.array(reasons, pa.string())})
    conn.register("_fallback_lines", frame)
    try:
        conn.execute(f"create or replace temp table {staged.table} as select * from _fallback_lines")
    finally:
        conn.unregister("_fallback_lines")
    kinds = sorted({r for r in reasons if r})
    staged.warning = (f"read line by line after DuckDB refused it ({str(exc).splitlines()[0][:200]}); "
                      f"quarantined: {', '.join(kinds) or 'nothing'}")
    return staged
