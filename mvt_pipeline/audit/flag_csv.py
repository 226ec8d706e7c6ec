"""Read the simple CSV export of feature flags, for flag tools that cannot write flagd JSON.

One line per flag; the header needs key, state, variants (`a;b;c`), last_modified and owner. The same
`FlagDefinition` comes out as from flagd files, so the audit does not care where a flag came from.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..config import settings
from ..safe_files import UnsafeFileError, read_text
from .flagd import (
    FLAG_STATES, MAX_FLAG_FILE_BYTES, ROLLOUT_DATE_KEYS, FlagDefinition, FlagFileError, parse_metadata_date,
)

CSV_COLUMNS = ("key", "state", "variants", "last_modified", "owner")  # required header
CSV_OPTIONAL_COLUMNS = ("default_variant", "rolled_out_at")


def load_flag_csv(path: str | Path) -> list[FlagDefinition]:
    """Read the simple CSV export: key, state, variants (`a;b;c`), last_modified, owner.

    For tools without flagd output. Optional columns: `default_variant` (else the first listed
    variant) and `rolled_out_at`; any other non-empty column (e.g. `type` = kill_switch) goes to
    `metadata` with owner and the dates, so `is_permanent_flag` sees it. The export carries no
    targeting, so what an ENABLED flag with several variants serves is unknown; the audit assumes the
    worst (every listed variant can be served), because calling a live experiment "rolled out" is
    the costlier mistake. Errors name the file, the line, the key and the column.
    """
    path = Path(path)
    name = path.name
    try:  # same rules as flagd files: no symlink, regular file, size cap, UTF-8 (safe_files)
        text = read_text(path, settings().data_dir, MAX_FLAG_FILE_BYTES, name)
    except UnsafeFileError as exc:
        raise FlagFileError(str(exc)) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise FlagFileError(f"{name}: header: missing column(s) {', '.join(missing)}")
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as exc:
        raise FlagFileError(f"{name}: not valid CSV: {exc}") from exc
    flags: list[FlagDefinition] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header (multi-line cells are not expected)
        row = {k: (v or "").strip() for k, v in row.items() if k is not None}  # None: surplus cells
        key = row["key"]
        where = f"{name}: line {i}"
        if not key:
            raise FlagFileError(f"{where}: key: empty")
        if key in seen:
            raise FlagFileError(f"{where}: key: {key!r} defined twice")
        seen.add(key)
        state = row["state"].upper()
        if state not in FLAG_STATES:
            raise FlagFileError(f"{where} ({key}): state: {row['state']!r} is not one of {', '.join(FLAG_STATES)}")
        names = [v.strip() for v in row["variants"].split(";") if v.strip()]
        if not names:
            raise FlagFileError(f"{where} ({key}): variants: empty (expected a;b;c)")
        if len(set(names)) != len(names):
            raise FlagFileError(f"{where} ({key}): variants: {row['variants']!r} lists a variant twice")
        default = row.get("default_variant") or names[0]
        if default not in names:
            raise FlagFileError(
                f"{where} ({key}): default_variant: {default!r} is not a variant (known: {', '.join(names)})"
            )
        metadata = {k: v for k, v in sorted(row.items())
                    if v and k not in ("key", "state", "variants", "default_variant")}
        for column in ROLLOUT_DATE_KEYS:
            try:
                parse_metadata_date(metadata.get(column))
            except ValueError as exc:
                raise FlagFileError(f"{where} ({key}): {column}: {exc}") from None
        served = frozenset(names) if state == "ENABLED" else frozenset({default})
        flags.append(
            FlagDefinition(
                key=key, state=state, variants={n: n for n in names}, default_variant=default, targeting={},
                source_file=name, metadata=metadata, served_variants=served,
                rollout_variant=next(iter(served)) if len(served) == 1 else None,
            )
        )
    return flags
