"""`mvt validate-dump`: check a sample dump before shipping an SDK, with the night's own ingestion.

The sample is copied into a scratch dump tree and ingested into an in-memory DuckDB by
`ingest_partition`, the code every night runs (so no second validator can disagree with it); the
report is read back from `raw.quarantine` and `raw.ingest_log`: lines accepted and quarantined, the
count per primary reason and per problem (a line lists all of its problems), a few examples of each
reason with every problem of the line and what the published JSON Schema
(`docs/telemetry.schema.json`, `contract_schema`) says about it, and whether loss is measurable.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ..config import settings
from ..registry import Registry
from ..registry.models import Source
from ..safe_files import open_regular_fd
from .contract_schema import telemetry_schema
from .file_readers import ALL_SUFFIXES
from .raw_loader import ingest_partition

SOURCE = "sample"


class DumpCheckError(ValueError):
    """The paths cannot be checked (missing, a link, no dump file): the message says which and why."""


@dataclass
class DumpReport:
    files: list[str]
    rows_read: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # primary reason -> lines
    problems: dict[str, int] = field(default_factory=dict)  # any reason of the line -> lines
    examples: list[dict] = field(default_factory=list)
    loss_not_measurable: str | None = None  # the reason, when no event carries seq and device_id

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def dump_files(paths: list[Path]) -> list[Path]:
    """The dump files named (a file) or held (a folder, recursively, by suffix), sorted; links are
    refused, as a night refuses them."""
    found: list[Path] = []
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            raise DumpCheckError(f"{path}: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            raise DumpCheckError(f"{path}: is a symbolic link; links are refused")
        if stat.S_ISDIR(mode):
            found += sorted(p for p in path.rglob("*") if p.name.lower().endswith(ALL_SUFFIXES)
                            and stat.S_ISREG(os.lstat(p).st_mode))
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            raise DumpCheckError(f"{path}: not a regular file or folder")
    if not found:
        raise DumpCheckError(f"no dump file ({', '.join(ALL_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def _copy(src: Path, dst: Path) -> None:
    with os.fdopen(open_regular_fd(src), "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


@functools.cache
def _validator():
    """The published schema's validator, built once (it is the same for every example)."""
    import jsonschema

    return jsonschema.Draft202012Validator(telemetry_schema())


def _schema_errors(raw: str | None, limit: int = 3) -> list[str]:
    """What the JSON Schema says of a quarantined line (empty when it is not a JSON object)."""
    try:
        line = json.loads(raw or "")
    except ValueError:
        return []
    errors = sorted(_validator().iter_errors(line), key=lambda e: (list(e.absolute_path), e.message))
    return [(f"{'/'.join(map(str, e.absolute_path))}: " if e.absolute_path else "") + e.message
            for e in errors[:limit]]


def validate_dump(paths: list[Path], registry: Registry, examples_per_reason: int = 3,
                  source_format: str = "contract") -> DumpReport:
    """Ingest the dump files of `paths` as one day of one source in `source_format` (a format of
    `sources.yaml`) and report what a night would do."""
    from ..quality.telemetry_metrics import loss_rate

    if source_format != "contract":
        try:
            source = Source(name=SOURCE, format=source_format)
        except ValueError as exc:
            raise DumpCheckError(f"--format {source_format!r}: {exc}") from None
        registry = registry.model_copy(update={"sources": [source]})
    files = dump_files(paths)
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    with tempfile.TemporaryDirectory(prefix="mvt-validate-dump-") as tmp:
        folder = Path(tmp) / "raw" / SOURCE / f"dt={day}"
        folder.mkdir(parents=True)
        copies = {}
        for i, src in enumerate(files):  # numbered: two samples may share a name
            dst = folder / f"{i:05d}_{src.name}"
            _copy(src, dst)
            copies[str(dst)] = str(src)
        conn = duckdb.connect(config=settings().duckdb_config())  # the night's memory cap
        try:
            summary = ingest_partition(conn, Path(tmp) / "raw", day, registry)
            report = DumpReport(files=[str(f) for f in files], rows_read=summary.rows_read,
                                rows_accepted=summary.rows_accepted, rows_quarantined=summary.rows_quarantined)
            report.reasons = dict(conn.execute(
                "select reason, count(*) from raw.quarantine group by 1 order by 2 desc, 1").fetchall())
            report.problems = dict(conn.execute(
                "select r, count(*) from (select unnest(reasons) as r from raw.quarantine) group by 1 "
                "order by 2 desc, 1").fetchall())
            rows = conn.execute("""
                select reason, reasons, source_file, line_number, raw from (
                    select *, row_number() over (partition by reason order by source_file, line_number) as k
                    from raw.quarantine) where k <= ? order by reason, source_file, line_number""",
                                [examples_per_reason]).fetchall()
            report.examples = [{"reason": reason, "reasons": list(reasons or [reason]), "file": copies.get(f, f),
                                "line_number": n, "raw": raw, "schema": _schema_errors(raw)}
                               for reason, reasons, f, n, raw in rows]
            if summary.rows_accepted:
                report.loss_not_measurable = loss_rate(conn, day).details["not_measurable"].get(SOURCE)
        finally:
            conn.close()
    return report


def format_report(report: DumpReport) -> str:
    """The report for a terminal."""
    read = report.rows_read
    share = f" ({report.rows_quarantined / read:.1%})" if read else ""
    out = [f"{len(report.files)} file(s), {read:,} lines: {report.rows_accepted:,} accepted, "
           f"{report.rows_quarantined:,} quarantined{share}"]
    if report.reasons:
        width = max(len(r) for r in {**report.reasons, **report.problems})
        out.append("")
        out.append(f"{'reason':<{width}}  {'first problem':>13}  {'any problem':>11}")
        for reason in sorted({**report.problems, **report.reasons},
                             key=lambda r: (-report.problems.get(r, 0), r)):
            out.append(f"{reason:<{width}}  {report.reasons.get(reason, 0):>13,}  {report.problems.get(reason, 0):>11,}")
        out.append("")
        out.append("examples:")
        for e in report.examples:
            where = f"{e['file']}" + (f" line {e['line_number']}" if e["line_number"] is not None else "")
            out.append(f"  {e['reason']}  ({where})")
            if len(e["reasons"]) > 1:
                out.append(f"    every problem: {', '.join(e['reasons'])}")
            for message in e["schema"]:
                out.append(f"    schema: {message}")
            out.append(f"    {(e['raw'] or '')[:300]}")
    if report.loss_not_measurable:
        out.append("")
        out.append(f"loss: not measurable ({report.loss_not_measurable})")
    return "\n".join(out)
