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
- Memory is bounded whatever a file holds (`settings().limits`, docs/telemetry.md "Limits"): before
  polars sees a JSON-lines file, a streamed pre-scan (`scan_text`: 4 MiB blocks, gzip inflated
  incrementally, numpy newline search) measures its decompressed size and longest line. Over
  `max_file_bytes` (on disk or decompressed, also for CSV / Parquet): one `oversized_file` row. A
  line over `max_line_bytes`, a truncated gzip or a flood of blank lines: the fallback, which is
  streamed too (`_LineStream`: at most one line of `max_line_bytes` held, a longer one kept as its
  first RAW_SNIPPET_CHARS bytes and its length; blank lines skipped without a row).
- A file that cannot be read at all (empty, binary junk, a gzip with a broken header, a corrupt
  Parquet, a FIFO or device) becomes one row with a `pre_reason` and no line number; a symbolic link
  is one `symlink_refused` row and is never opened (`refusal`).
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from ..config import settings
from ..safe_files import open_regular_fd, pinned_path

RAW_SNIPPET_CHARS = 4096
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
        text = os.lstat(s.path).st_size * (GZIP_RATIO if s.path.name.lower().endswith(".gz") else 1)
        if not chunks or size + text > CHUNK_TEXT_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += text
    return chunks


def read_jsonl_chunk(files: list[StagedFile]) -> pl.DataFrame:
    """`(file_idx, line_number, line, pre_reason)` of every line of `files`; never raises for bad
    content (that becomes rows, and a warning on the StagedFile)."""
    limits = settings().limits
    # the pre-scans (streamed, bounded, and mostly outside the GIL: Arrow's inflate, numpy) of the
    # chunk's files run side by side, one per core; the files are then read one after the other
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        checked = list(pool.map(lambda s: _check_jsonl(s, limits), files))
    frames = [_read_jsonl(s, limits, c) for s, c in zip(files, checked)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=_LINES_SCHEMA)


def _read_jsonl(s: StagedFile, limits=None, checked: pl.DataFrame | TextScan | None = None) -> pl.DataFrame:
    limits = limits or settings().limits
    scan = checked if checked is not None else _check_jsonl(s, limits)
    if isinstance(scan, pl.DataFrame):
        return scan
    if not scan.complete:  # a truncated or corrupt gzip: polars would refuse it after decompressing it all
        return _python_fallback(s, None, scan.error or "the gzip stream ends early")
    if scan.longest_line > limits.max_line_bytes:
        return _python_fallback(s, None, f"a line of {scan.longest_line:,} bytes is over the limit of "
                                         f"{limits.max_line_bytes:,} (MVT_MAX_LINE_BYTES)")
    if scan.blank_lines > max(BLANK_LINES_FAST_MAX, scan.lines - scan.blank_lines):
        # polars would hold a row per blank line (~40 bytes each): stream instead, skipping them
        return _python_fallback(s, None, f"{scan.blank_lines:,} of its {scan.lines:,} lines are blank")
    try:
        with pinned_path(s.path) as pinned:  # the checked file itself, even if the entry is swapped since
            lines = pl.read_csv(pinned, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"],
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


def _check_jsonl(s: StagedFile, limits) -> pl.DataFrame | TextScan:
    """The whole-file verdict (one row: refused, empty, too big, binary, not gzip) or the pre-scan of
    a JSON-lines file; streamed and bounded, safe to run in a worker thread."""
    refused = refusal(s.path)
    if refused:
        return _whole_file_frame(s, *refused)
    size = os.lstat(s.path).st_size
    if size == 0:
        return _whole_file_frame(s, "empty_file", "empty file (0 bytes)")
    gz = s.path.name.lower().endswith(".gz")
    if not gz and size > limits.max_file_bytes:
        return _whole_file_frame(s, "oversized_file", _oversized_file_message(size, limits.max_file_bytes))
    try:
        if _looks_binary(s.path):
            return _whole_file_frame(s, "unreadable_file", "binary content: not UTF-8 text lines")
        if gz and not _has_gzip_magic(s.path):
            # polars sniffs compression from the content; the name promises gzip, so anything else is broken
            return _whole_file_frame(s, "unreadable_file", "not a gzip stream (named .gz, no gzip header)")
        scan = scan_text(s.path, limits.max_file_bytes)
    except OSError as exc:  # vanished, or swapped for a link / FIFO since it was listed
        return _whole_file_frame(s, "unreadable_file", f"cannot read the file: {exc}")
    if scan.over_limit:
        return _whole_file_frame(s, "oversized_file", _oversized_file_message(scan.size, limits.max_file_bytes,
                                                                                 compressed=size))
    return scan


def _oversized_file_message(size: int, limit: int, compressed: int | None = None) -> str:
    if compressed is None:
        return f"file is {size:,} bytes, over the limit of {limit:,} bytes (MVT_MAX_FILE_BYTES): not read"
    return (f"decompresses to more than {limit:,} bytes (reading stopped at {size:,} bytes; {compressed:,} bytes "
            f"compressed), over the limit of {limit:,} bytes (MVT_MAX_FILE_BYTES): not read")


def _all_blank(lines: pl.Series) -> bool:
    """No line holds anything but whitespace; decided by the first non-null line in the usual case."""
    first = lines.drop_nulls().head(1)
    if first.len() and first.str.strip_chars().item() != "":
        return False
    return bool(lines.str.strip_chars().fill_null("").eq("").all())


def _has_gzip_magic(path: Path) -> bool:
    with _open_regular(path) as fh:
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
    refused = refusal(path)
    if refused:
        return _whole_file(conn, table, staged, *refused)
    size = os.lstat(path).st_size
    if size == 0:
        return _whole_file(conn, table, staged, "empty_file", "empty file (0 bytes)")
    limit = settings().limits.max_file_bytes
    if size > limit:
        return _whole_file(conn, table, staged, "oversized_file", _oversized_file_message(size, limit))
    if path.name.lower().endswith(".gz"):
        try:
            decompressed = _decompressed_size(path, limit)
        except OSError as exc:  # vanished, or swapped for a link / FIFO since it was listed
            return _whole_file(conn, table, staged, "unreadable_file", f"cannot read the file: {exc}")
        if decompressed > limit:
            return _whole_file(conn, table, staged, "oversized_file",
                               _oversized_file_message(decompressed, limit, compressed=size))
    try:
        with pinned_path(path) as pinned:  # the checked file itself, even if the entry is swapped since
            if fmt == "csv":
                compression = "gzip" if path.name.lower().endswith(".gz") else "none"  # the pinned name has no suffix
                _read_rows_as_json(conn, pinned, table, "read_csv(?, header = true, all_varchar = true, null_padding = "
                                   f"true, hive_partitioning = false, compression = '{compression}')",
                                   "row_number() over () + 1")
            else:
                _read_rows_as_json(conn, pinned, table, "read_parquet(?, file_row_number = true, hive_partitioning = false)",
                                   "file_row_number + 1")
    except OSError as exc:  # vanished, or swapped for a link / FIFO since it was listed
        return _whole_file(conn, table, staged, "unreadable_file", f"cannot read the file: {exc}")
    except duckdb.Error as exc:
        message = _PINNED.sub(path.name, str(exc))  # name the file, not the descriptor it was read through
        text = message.lower()
        reason = "encoding" if ("unicode" in text or "utf" in text) else "unreadable_file"
        return _whole_file(conn, table, staged, reason, message)
    if conn.execute(f"select count(*) from {table} where line is not null or pre_reason is not null").fetchone()[0] == 0:
        return _whole_file(conn, table, staged, "empty_file", "no lines (empty or blank-only content)")
    return staged


_PINNED = re.compile(r"/proc/self/fd/\d+")


def _looks_binary(path: Path, sample: int = 65536) -> bool:
    """True when the first 64 KiB are mostly control bytes or invalid UTF-8: a junk file is one
    quarantine row, not thousands of `encoding` lines. JSON text has almost no control bytes."""
    import gzip

    try:
        with _open_regular(path) as raw:
            if path.name.lower().endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    head = fh.read(sample)
            else:
                head = raw.read(sample)
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


def _read_rows_as_json(conn, path: str, table: str, reader: str, line_number: str) -> None:
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


# --- links and special files ------------------------------------------------------------------------
# A dump folder is written by others: a link in it could make the night read (and store in
# `raw.quarantine.raw`) any file the pipeline can open, `/dev/zero` or a FIFO that blocks forever. So
# a dump file must be a regular file reached without links; anything else is one quarantine row.


def refusal(path: Path) -> tuple[str, str] | None:
    """(reason, message) when `path` is not a regular file reached without a link, else None. Checked
    with `lstat` right before reading (the entry may have changed since it was listed)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return "unreadable_file", f"cannot stat the file: {exc.strerror}"
    if stat.S_ISLNK(mode):
        return "symlink_refused", "symbolic link: dump files must be regular files, links are never followed"
    if not stat.S_ISREG(mode):
        return "unreadable_file", "not a regular file (FIFO, device or socket): not read"
    return None


def _open_regular(path: Path):
    """A binary file object for `path`, refusing links and special files on the descriptor itself."""
    return os.fdopen(open_regular_fd(path), "rb", buffering=0)


# --- streamed reading: bounded memory whatever the file holds -----------------------------------------
SCAN_BLOCK_BYTES = 4 * 1024 * 1024  # decompressed text handled at a time (numpy newline search per block)
_COMPRESSED_BLOCK_BYTES = 1024 * 1024
# More blank lines than this (and than non-blank ones) take the streamed reader, which skips them
# without a row: polars would hold ~40 bytes per blank line (256 MiB of newlines: 9 GB).
BLANK_LINES_FAST_MAX = 1_000_000


class _Blocks:
    """The decompressed content of a dump file as blocks of at most SCAN_BLOCK_BYTES: plain files read
    as is, `.gz` inflated incrementally (multi-member streams, zero padding after a member allowed;
    `max_length` bounds what one compressed block may expand to, so a bomb never exists whole).
    After iteration, `complete` says whether the gzip stream ended properly and `error` why not.

    `fast=True` (the pre-scan) inflates with Arrow's streamed gzip reader instead, ~1.4x faster than
    `zlib` on dump text and as bounded; it is strict (any problem, even zero padding, ends the
    stream as incomplete), which only sends the file to the `zlib` reader of the fallback."""

    def __init__(self, path: Path, *, fast: bool = False):
        self.path = path
        self.gz = path.name.lower().endswith(".gz")
        self.fast = fast
        self.complete = True
        self.error: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        with _open_regular(self.path) as fh:
            if not self.gz:
                while block := fh.read(SCAN_BLOCK_BYTES):
                    yield block
            elif self.fast:
                yield from self._inflate_arrow(fh)
            else:
                yield from self._inflate(fh)

    def _inflate_arrow(self, fh) -> Iterator[bytes]:
        import pyarrow as pa

        try:
            with pa.input_stream(fh, compression="gzip") as stream:
                while block := stream.read(SCAN_BLOCK_BYTES):
                    yield block
        except (OSError, pa.ArrowException) as exc:
            self.complete, self.error = False, f"gzip stream: {exc}"

    def _inflate(self, fh) -> Iterator[bytes]:
        d = zlib.decompressobj(31)
        fresh = True  # no byte of the current member seen yet
        while raw := fh.read(_COMPRESSED_BLOCK_BYTES):
            buf = raw
            while True:
                if fresh:
                    buf = buf.lstrip(b"\0")  # padding between / after members (as Python's gzip allows)
                    if not buf:
                        break
                    fresh = False
                try:
                    out = d.decompress(buf, SCAN_BLOCK_BYTES)
                except zlib.error as exc:
                    self.complete, self.error = False, f"corrupt gzip stream: {exc}"
                    return
                if out:
                    yield out
                if d.eof:
                    buf = d.unused_data
                    d, fresh = zlib.decompressobj(31), True
                    if not buf:
                        break
                    continue
                buf = d.unconsumed_tail
                if not buf and len(out) < SCAN_BLOCK_BYTES:
                    break  # input used up and no pending output: read more
        if not fresh:
            self.complete, self.error = False, "the gzip stream ends early (truncated file)"


@dataclass
class TextScan:
    """What `scan_text` measured of a JSON-lines file's decompressed text."""

    size: int = 0  # bytes read (decompressed); reading stops once over the file limit
    longest_line: int = 0  # bytes, without the newline
    lines: int = 0  # physical lines, blank ones included
    blank_lines: int = 0  # empty, or a lone "\r"
    over_limit: bool = False
    complete: bool = True  # the gzip stream ended properly (always True for plain files)
    error: str | None = None


def _line_lengths(arr: np.ndarray, nl: np.ndarray, carry: int) -> np.ndarray:
    """Lengths of the lines ending at the newline positions `nl` of block `arr`, the first one
    continuing `carry` bytes from previous blocks."""
    lens = np.empty(nl.size, dtype=np.int64)
    lens[0] = carry + nl[0]
    np.subtract(nl[1:], nl[:-1] + 1, out=lens[1:])
    return lens


def scan_text(path: Path, max_file_bytes: int) -> TextScan:
    """One streamed pass over the file's (decompressed) text, a block at a time and vectorised (numpy
    newline search, never Python per line): size, longest line, line and blank-line counts. Stops as
    soon as the text is over `max_file_bytes`. Never raises for bad content (`complete`/`error`)."""
    scan, blocks = TextScan(), _Blocks(path, fast=True)
    carry, carry_cr = 0, False  # bytes of the line in progress; whether it is a lone "\r" so far
    for block in blocks:
        arr = np.frombuffer(block, dtype=np.uint8)
        nl = np.flatnonzero(arr == 10)
        if nl.size:
            lens = _line_lengths(arr, nl, carry)
            scan.longest_line = max(scan.longest_line, int(lens.max()))
            blank = lens == 0
            ones = np.flatnonzero(lens == 1)
            if ones.size:
                prev = arr[np.maximum(nl[ones] - 1, 0)] == 13
                if ones[0] == 0 and nl[0] == 0:  # the "\r" ended the previous block
                    prev[0] = carry_cr
                blank[ones[prev]] = True
            scan.blank_lines += int(np.count_nonzero(blank))
            scan.lines += int(nl.size)
            carry = arr.size - int(nl[-1]) - 1
            carry_cr = carry == 1 and block[-1] == 13
        else:
            carry_cr = carry == 0 and arr.size == 1 and block[0] == 13
            carry += arr.size
        scan.longest_line = max(scan.longest_line, carry)
        scan.size += arr.size
        if scan.size > max_file_bytes:
            scan.over_limit = True
            break
    if carry and not scan.over_limit:
        scan.lines += 1
        scan.blank_lines += carry_cr
    scan.complete, scan.error = blocks.complete, blocks.error
    return scan


def _decompressed_size(path: Path, limit: int) -> int:
    """Bytes a (gzip) file decompresses to, counted streamed; stops once over `limit`."""
    size = 0
    for block in _Blocks(path, fast=True):
        size += len(block)
        if size > limit:
            break
    return size


@dataclass
class _StreamedLine:
    number: int  # physical line number, from 1
    data: bytes  # the line, or only its first RAW_SNIPPET_CHARS bytes when longer than the limit
    length: int  # its full length in bytes
    terminated: bool  # ended by a newline (False: the file's last line, without one)


class _LineStream:
    """The non-empty lines of a dump file, streamed block by block: at most `max_line_bytes` of one
    line is ever held (a longer line keeps only its first RAW_SNIPPET_CHARS bytes and its length);
    empty lines are skipped by the numpy newline search (no Python per blank line) but still count
    for the physical numbering. After iteration: `lines` (physical) and `blocks` (gzip state)."""

    def __init__(self, path: Path, max_line_bytes: int):
        self.blocks = _Blocks(path)
        self.max_line = max_line_bytes
        self.keep = max(max_line_bytes, RAW_SNIPPET_CHARS)  # bytes of a line in progress ever held
        self.lines = 0
        self.size = 0

    def __iter__(self) -> Iterator[_StreamedLine]:
        parts: list[bytes] = []  # the line in progress (only its snippet once over the limit)
        carry = 0
        for block in self.blocks:
            self.size += len(block)
            arr = np.frombuffer(block, dtype=np.uint8)
            nl = np.flatnonzero(arr == 10)
            if not nl.size:
                carry = self._extend(parts, carry, block)
                continue
            first = int(nl[0])
            if carry or first:
                carry = self._extend(parts, carry, block[:first])
                yield _StreamedLine(self.lines + 1, self._data(parts, carry), carry, True)
            lens = _line_lengths(arr, nl, 0)[1:]
            for i in np.flatnonzero(lens).tolist():
                end = int(nl[i + 1])
                length = int(lens[i])
                start = end - length
                data = block[start:end] if length <= self.max_line else block[start:start + RAW_SNIPPET_CHARS]
                yield _StreamedLine(self.lines + i + 2, data, length, True)
            self.lines += int(nl.size)
            parts.clear()
            carry = self._extend(parts, 0, block[int(nl[-1]) + 1:])
        if carry:
            yield _StreamedLine(self.lines + 1, self._data(parts, carry), carry, False)
            self.lines += 1

    def _data(self, parts: list[bytes], length: int) -> bytes:
        data = b"".join(parts)
        return data if length <= self.max_line else data[:RAW_SNIPPET_CHARS]

    def _extend(self, parts: list[bytes], carry: int, piece: bytes) -> int:
        """Append `piece` to the line in progress, keeping at most `keep` bytes of it (the whole line
        while within the limit, else its snippet is cut from them)."""
        if not piece:
            return carry
        if carry < self.keep:
            parts.append(piece[:self.keep - carry])
        return carry + len(piece)


_FLUSH_ROWS = 100_000


def _snippet_text(data: bytes) -> str:
    """The first bytes of an oversized line as text: a UTF-8 sequence cut by the snippet's end is
    dropped, other invalid bytes and NULs are escaped (the reason stays `oversized_line`)."""
    data = data[:RAW_SNIPPET_CHARS].replace(b"\x00", b"\\0")
    for cut in range(4):
        try:
            return data[:len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "backslashreplace")


def _python_fallback(staged: StagedFile, exc: Exception | None, why: str | None = None) -> pl.DataFrame:
    """Read a file the fast reader refused (`exc`) or must not be given (`why`: a line over the limit,
    a truncated gzip, a flood of blank lines) line by line, streamed: memory is bounded by the rows
    kept (and one line of at most `max_line_bytes`), not by the file. Recovers every decodable line
    and marks only the bad ones (`oversized_line`, `encoding`, `truncated_file`); blank lines are
    skipped without a row, and every row keeps its physical line number."""
    max_line = settings().limits.max_line_bytes
    cause = why or (str(exc).splitlines()[0][:200] if exc is not None else "refused")
    stream = _LineStream(staged.path, max_line)
    frames: list[pl.DataFrame] = []
    numbers: list[int | None] = []
    lines: list[str | None] = []
    reasons: list[str | None] = []
    bad = nonblank = 0
    oversized, longest, longest_at = 0, 0, 0
    last_unterminated = False

    def flush() -> None:
        if numbers:
            frames.append(pl.DataFrame({"file_idx": [staged.index] * len(numbers), "line_number": numbers,
                                        "line": lines, "pre_reason": reasons}, schema=_LINES_SCHEMA))
            numbers.clear(), lines.clear(), reasons.clear()

    try:
        for item in stream:
            # the unterminated last line is yielded after the last block: the gzip state is known then
            reason = "truncated_file" if not item.terminated and not stream.blocks.complete else None
            if item.length > max_line:
                reason = reason or "oversized_line"
                oversized += 1
                if item.length > longest:
                    longest, longest_at = item.length, item.number
                line = _snippet_text(item.data)
            else:
                try:
                    line = item.data.decode("utf-8")
                    if "\x00" in line:
                        raise UnicodeError("NUL byte")
                except UnicodeError:
                    reason = reason or "encoding"
                    line = item.data[:RAW_SNIPPET_CHARS].replace(b"\x00", b"\\0").decode("utf-8", "backslashreplace")
                    bad += 1
            if reason is None and not line.strip():
                continue  # blank line (whitespace only): skipped and not counted, like the fast path
            nonblank += 1
            last_unterminated = not item.terminated
            numbers.append(item.number)
            lines.append(line)
            reasons.append(reason)
            if len(numbers) >= _FLUSH_ROWS:
                flush()
    except OSError as err:  # the file vanished or became unreadable while being read
        return _whole_file_frame(staged, "unreadable_file", f"cannot read the file: {err}")
    flush()
    complete = stream.blocks.complete
    if not complete and stream.size == 0:
        return _whole_file_frame(staged, "unreadable_file",
                                 f"not a readable gzip stream: {stream.blocks.error or cause}")
    if nonblank and bad > nonblank / 2:
        return _whole_file_frame(staged, "unreadable_file",
                                 f"binary content: {bad} of {nonblank} lines are not UTF-8 text ({cause})")
    if not complete and not last_unterminated:
        frames.append(pl.DataFrame({"file_idx": [staged.index], "line_number": [None],
                                    "line": [f"gzip stream ends early after {stream.lines} complete lines"],
                                    "pre_reason": ["truncated_file"]}, schema=_LINES_SCHEMA))
    elif not nonblank:
        return _whole_file_frame(staged, "empty_file", "no lines (empty or blank-only content)")
    out = pl.concat(frames) if len(frames) > 1 else frames[0]
    kinds = sorted(set(out["pre_reason"].drop_nulls().unique().to_list()))
    staged.warning = (f"read line by line ({'the fast reader refused it: ' if exc is not None else ''}{cause}); "
                      f"quarantined: {', '.join(kinds) or 'nothing'}")
    if oversized:
        staged.warning += (f"; {oversized:,} line(s) over {max_line:,} bytes (longest: line {longest_at:,}, "
                           f"{longest:,} bytes; the first {RAW_SNIPPET_CHARS:,} bytes are kept)")
    return out
