"""Stage a partition's dump files as rows of `(file_idx, line_number, line, pre_reason)`.

Every format ends up in that one shape so a single validation pass (`validation_sql`) decides what is
accepted, with the same reason codes whatever the file type:

- JSON lines (`.jsonl`, `.ndjson`, optionally `.gz`) are read by polars' CSV reader as one text
  column (no quote character, a separator that JSON text never holds unescaped): a malformed line
  cannot abort the file or vanish, blank lines come back as NULL (skipped later, not counted, but
  they keep the numbering physical) and the line number is the row's position. This is several
  times faster than staging the lines in a DuckDB table, and it happens in Python, so a file the
  reader refuses never aborts the DuckDB write transaction the lines are validated in. The files of
  a partition are read in chunks of bounded size (`jsonl_chunks`), so memory stays flat whatever the
  size of a day.
- CSV (header row, contract column names, nested `assignment`/`context` as JSON text) and Parquet
  (typed columns, or JSON text for the nested ones) are read natively by DuckDB, before the write
  transaction, and each row is rendered as one JSON object in SQL, so numbers stay numbers, nested
  objects stay objects, and extra columns become unknown fields (kept in `extra`). Line numbers:
  CSV = record number + 1 (the header is line 1), Parquet = row number in the file, from 1.
- Files the fast readers refuse (invalid UTF-8, truncated gzip, a line holding the separator byte)
  take a Python fallback that recovers every decodable line and marks only the bad ones (`encoding`,
  `oversized_line`, `truncated_file`). Good files never go through Python line by line.
- A file that cannot be read at all (empty, binary junk, a gzip with a broken header, a corrupt
  Parquet) becomes one row with a `pre_reason` and no line number.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

RAW_SNIPPET_CHARS = 4096
MAX_LINE_BYTES = 1_048_576
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet",)
ALL_SUFFIXES = JSONL_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
_NUMERIC_FIELDS = ("seq", "value")
_OBJECT_FIELDS = ("assignment", "context")
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))

OTHER_TABLE = "_ingest_other"  # (file_idx, line_number, line, pre_reason): CSV / Parquet / whole-file rows
# Files are grouped into chunks of about this much text, estimated from file sizes with gzip counted
# x8 (SDK JSON lines compress ~15x, so a chunk of .gz files holds ~0.7-1 GB of text, ~1.5M lines):
# small enough to keep memory flat (peak RSS 2.65 GB at 20M events with a 2 GB DuckDB limit), big
# enough that per-chunk statements and partial row groups cost little (384 MB: ~10 % more CPU, 256 MB
# more still; see docs/benchmarks.md). A single file is never split: one huge file is one chunk.
CHUNK_TEXT_BYTES = 512 * 1024 * 1024
GZIP_RATIO = 8
_LINES_SCHEMA = {"file_idx": pl.Int32, "line_number": pl.Int64, "line": pl.String, "pre_reason": pl.String}


@dataclass
class StagedFile:
    source: str
    path: Path
    file_format: str
    warning: str | None = None  # file-level problem a person should hear about (quarantined whole, truncated...)
    index: int = 0  # position in the partition's file list (`file_idx` of its staged rows)


def staged_files(files: list[tuple[str, Path]]) -> list[StagedFile]:
    return [StagedFile(source, path, file_format(path) or "unknown", index=i) for i, (source, path) in enumerate(files)]


def jsonl_chunks(staged: list[StagedFile]) -> list[list[StagedFile]]:
    """The JSON-lines files grouped, in order, into chunks of about CHUNK_TEXT_BYTES of text."""
    chunks: list[list[StagedFile]] = []
    size = 0
    for s in staged:
        if s.file_format != "jsonl":
            continue
        text = s.path.stat().st_size * (GZIP_RATIO if s.path.name.lower().endswith(".gz") else 1)
        if not chunks or size + text > CHUNK_TEXT_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += text
    return chunks


def read_jsonl_chunk(files: list[StagedFile]) -> pl.DataFrame:
    """`(file_idx, line_number, line, pre_reason)` of every line of `files`; never raises for bad
    content (that becomes rows, and a warning on the StagedFile)."""
    frames = [_read_jsonl(s) for s in files]
    return pl.concat(frames) if frames else pl.DataFrame(schema=_LINES_SCHEMA)


def _read_jsonl(s: StagedFile) -> pl.DataFrame:
    if s.path.stat().st_size == 0:
        return _whole_file_frame(s, "empty_file", "empty file (0 bytes)")
    if _looks_binary(s.path):
        return _whole_file_frame(s, "unreadable_file", "binary content: not UTF-8 text lines")
    if s.path.name.lower().endswith(".gz") and not _has_gzip_magic(s.path):
        # polars sniffs compression from the content; the name promises gzip, so anything else is broken
        return _whole_file_frame(s, "unreadable_file", "not a gzip stream (named .gz, no gzip header)")
    try:
        lines = pl.read_csv(s.path, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"],
                            infer_schema=False, raise_if_empty=False)["line"]
    except Exception as exc:  # noqa: BLE001 - any refusal (bad UTF-8, truncated gzip, separator byte): recover
        return _python_fallback(s, exc)
    if not lines.len() or _all_blank(lines):
        return _whole_file_frame(s, "empty_file", "no lines (empty or blank-only content)")
    return pl.DataFrame({
        "file_idx": pl.repeat(s.index, lines.len(), dtype=pl.Int32, eager=True),
        "line_number": pl.int_range(1, lines.len() + 1, dtype=pl.Int64, eager=True),
        "line": lines,
        "pre_reason": pl.repeat(None, lines.len(), dtype=pl.String, eager=True),
    })


def _all_blank(lines: pl.Series) -> bool:
    """No line holds anything but whitespace; decided by the first non-null line in the usual case."""
    first = lines.drop_nulls().head(1)
    if first.len() and first.str.strip_chars().item() != "":
        return False
    return bool(lines.str.strip_chars().fill_null("").eq("").all())


def _has_gzip_magic(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _whole_file_warning(s: StagedFile, reason: str, message: str) -> None:
    s.warning = f"{reason}: {message.splitlines()[0] if message else ''}"[:500]


def _whole_file_frame(s: StagedFile, reason: str, message: str) -> pl.DataFrame:
    _whole_file_warning(s, reason, message)
    return pl.DataFrame({"file_idx": [s.index], "line_number": [None], "line": [message[:RAW_SNIPPET_CHARS]],
                         "pre_reason": [reason]}, schema=_LINES_SCHEMA)


def stage_other_files(conn: duckdb.DuckDBPyConnection, staged: list[StagedFile]) -> list[StagedFile]:
    """Stage every non-JSON-lines file into OTHER_TABLE with DuckDB's readers. Run it before the write
    transaction: a reader error inside a transaction would abort it. Returns the files staged."""
    conn.execute(f"create or replace temp table {OTHER_TABLE} (file_idx integer, line_number bigint, line varchar, "
                 "pre_reason varchar)")
    others = [s for s in staged if s.file_format != "jsonl"]
    for s in others:
        try:
            stage_file(conn, s.source, s.path, "_stage_one", s)
            conn.execute(f"insert into {OTHER_TABLE} select ?, line_number, line, pre_reason from _stage_one", [s.index])
        finally:
            conn.execute("drop table if exists _stage_one")
    return others


def drop_staging(conn: duckdb.DuckDBPyConnection) -> None:
    for table in (OTHER_TABLE, "_typed_rows", "_stage_one"):
        conn.execute(f"drop table if exists {table}")


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
    """Create temp table `table(line_number, line, pre_reason)` for one CSV or Parquet file; never
    raises for bad content (that becomes rows). `staged`, if given, is updated (warning) and returned."""
    fmt = file_format(path) or "unknown"
    if staged is None:
        staged = StagedFile(source, path, fmt)
    if path.stat().st_size == 0:
        return _whole_file(conn, table, staged, "empty_file", "empty file (0 bytes)")
    try:
        if fmt == "csv":
            _read_rows_as_json(conn, path, table, "read_csv(?, header = true, all_varchar = true, null_padding = true, "
                               "hive_partitioning = false)", "row_number() over () + 1")
        else:
            _read_rows_as_json(conn, path, table, "read_parquet(?, file_row_number = true, hive_partitioning = false)",
                               "file_row_number + 1")
    except duckdb.Error as exc:
        text = str(exc).lower()
        reason = "encoding" if ("unicode" in text or "utf" in text) else "unreadable_file"
        return _whole_file(conn, table, staged, reason, str(exc))
    if conn.execute(f"select count(*) from {table} where line is not null or pre_reason is not null").fetchone()[0] == 0:
        return _whole_file(conn, table, staged, "empty_file", "no lines (empty or blank-only content)")
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


def _whole_file(conn, table: str, staged: StagedFile, reason: str, message: str) -> StagedFile:
    conn.execute(f"create or replace temp table {table} (line_number bigint, line varchar, pre_reason varchar)")
    conn.execute(f"insert into {table} values (null, ?, ?)", [message[:RAW_SNIPPET_CHARS], reason])
    _whole_file_warning(staged, reason, message)
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


def _python_fallback(staged: StagedFile, exc: Exception) -> pl.DataFrame:
    """Recover what the fast reader refused, line by line, but only for this (already refused) file."""
    data = staged.path.read_bytes()
    complete = True
    if staged.path.name.lower().endswith(".gz"):
        data, complete = _gunzip_tolerant(data)
        if not data:
            return _whole_file_frame(staged, "unreadable_file", f"not a readable gzip stream: {exc}")
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
            line = None  # blank line: skipped and not counted, like the fast path
        numbers.append(i)
        lines.append(line)
        reasons.append(reason)
    nonblank = sum(1 for line, r in zip(lines, reasons) if line is not None or r is not None)
    if nonblank and bad > nonblank / 2:
        return _whole_file_frame(staged, "unreadable_file",
                                 f"binary content: {bad} of {nonblank} lines are not UTF-8 text ({exc})")
    if not complete and ends_clean:
        numbers.append(None)
        lines.append(f"gzip stream ends early after {len(pieces)} complete lines")
        reasons.append("truncated_file")
    elif not nonblank:
        return _whole_file_frame(staged, "empty_file", "no lines (empty or blank-only content)")
    kinds = sorted({r for r in reasons if r})
    staged.warning = (f"read line by line after the fast reader refused it ({str(exc).splitlines()[0][:200]}); "
                      f"quarantined: {', '.join(kinds) or 'nothing'}")
    return pl.DataFrame({"file_idx": [staged.index] * len(numbers), "line_number": numbers, "line": lines,
                         "pre_reason": reasons}, schema=_LINES_SCHEMA)
