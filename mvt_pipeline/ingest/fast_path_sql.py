"""The validation fast path: the first statement over a chunk's lines, the hot path of ingestion.

Nearly every SDK line is in a canonical shape: known fields in a fixed order (the contract's, or the
SDK's own, sampled per chunk), compact or with Python's default separators, string ids, no
backslash. Such a line is decoded by one `try(json_transform(line, struct))` (strings come back
unquoted) and rebuilt from the decoded values (one `concat` per shape); an exact byte-for-byte match
proves there is no unknown field, no null, no other type and no stray whitespace, so the struct's
values are used as they are and no other JSON function runs.

The fast statement only ever *accepts*, and its rows go straight into `raw.events`: a line that is
not canonical, or canonical but not valid in any way (empty id, unknown experiment, an assignment
that is not a registry cell or a single factor's level, a non-finite value...), or whose `context`
holds PII, is left out, found by `pending_lines_sql` (an anti-join on the line keys) and decided
by the general path (`validation_sql.checked_select_sql`), with the reason codes and their order
and the PII redaction. So that logic lives in one place, and the fast statement computes only what
an accepted row needs: in one statement with both paths, every general-path column was computed
for every row (~12 % slower). `try` spares a `json_valid` parse: only lines ending in `}` are
tried, and a malformed one among them makes `try` fall back row by row for its vector only.
"""

from __future__ import annotations

import json
from collections import Counter

from ..config import settings
from .validation_sql import (ANY_PII, CHECKED_COLUMNS, KNOWN_FIELDS, LINE_FILTER, MAX_SEQ, context_may_be_deep_sql,
                             PII_ID_FIELDS, payload_hash_sql, rebuilt_line_sql, received_ok_sql, sql_list, ts_ok_sql,
                             utc_timestamp_sql, value_sql)
from .pii_sql import may_hold_pii_sql
from .warehouse_schema import PII_KINDS

# Fields not decoded as strings, and their types: `seq` straight to an integer (a line it does not
# rebuild exactly, e.g. `1.0` or `"5"`, is left to the general path), the others as JSON text
# (`value` too: `0` and `0.0` must both rebuild). Every other known field is decoded as a string.
UNQUOTED_TYPES = {"seq": "BIGINT", "assignment": "JSON", "value": "JSON", "context": "JSON"}
UNQUOTED = tuple(UNQUOTED_TYPES)

# A shape: the present fields in the order a line writes them, and whether it writes `": "` and
# `", "` (Python's default `json.dumps`) instead of compact separators.
Shape = tuple[tuple[str, ...], bool]

# The two shapes nearly every SDK line has, in contract order, compact: their rebuild is one `concat`
# (no per-member `||`). A chunk whose lines look otherwise gets its own shapes (`observed_shapes`).
CONTRACT_SHAPES: tuple[Shape, ...] = (
    (tuple(f for f in KNOWN_FIELDS if f not in ("experiment_id", "assignment", "cell_id", "hash_version")), False),
    (tuple(f for f in KNOWN_FIELDS if f not in ("metric", "value")), False),
)
MAX_SHAPES = 8
SHAPE_SAMPLE_LINES = 64  # per file


def observed_shapes(lines: list[str]) -> tuple[Shape, ...]:
    """The rebuild shapes for a chunk: per set of present fields, the key order and separators most
    sample lines use (SDKs serialize their event struct in a fixed order, not always the
    contract's), the contract's compact shape where no sample says otherwise. Only a speed matter:
    a line in any other shape still gets the same row from the general path. Samples that are not
    objects of known, non-null fields without escapes are ignored, and so are lines with many
    brackets: Python's parser recurses, and sampling must never fail a partition (a 10,000-deep line
    is the general path's `too_deep`)."""
    counts: Counter = Counter()
    for line in lines:
        if not line or not line.startswith('{"') or "\\" in line or line.count("{") + line.count("[") > 64:
            continue
        try:
            pairs = json.loads(line, object_pairs_hook=list)
        except (ValueError, RecursionError):
            continue
        keys = tuple(k for k, _v in pairs) if isinstance(pairs, list) else ()
        if keys and set(keys) <= set(KNOWN_FIELDS) and len(set(keys)) == len(keys) \
                and all(v is not None for _k, v in pairs):
            key_end = line.index('"', 2)  # the first key has no quote inside (no escapes)
            counts[(keys, line.startswith('": ', key_end))] += 1
    chosen = {frozenset(keys): (keys, spaced) for keys, spaced in CONTRACT_SHAPES}
    best: dict[frozenset, int] = {}
    for shape, n in counts.most_common():
        present = frozenset(shape[0])
        if n > best.get(present, 0) and (present in best or len(best) < MAX_SHAPES):
            best[present] = n
            chosen[present] = shape
    return tuple(chosen.values())[:MAX_SHAPES]


def transform_type() -> str:
    return "{" + ", ".join(f'"{f}": "{UNQUOTED_TYPES.get(f, "VARCHAR")}"' for f in KNOWN_FIELDS) + "}"


def _spaced_json(text: str) -> str:
    """Compact JSON text of an object as Python's `json.dumps` writes it: `": "` after keys, `", "`
    before keys. Without backslashes no string holds a quote, so `":` only ends a key; `,"` may also
    end a string value ending in a comma, which then mismatches and takes the general path."""
    return f"replace(replace({text}, '\":', '\": '), ',\"', ', \"')"


def _shape_line_sql(shape: Shape) -> tuple[str, str]:
    """(condition: exactly the shape's fields are present, the line rebuilt in that shape)."""
    fields, spaced = shape
    item, colon = (", ", ": ") if spaced else (",", ":")
    pieces: list[tuple[bool, str]] = []  # (is_literal, text)

    def lit(text: str) -> None:
        if pieces and pieces[-1][0]:
            pieces[-1] = (True, pieces[-1][1] + text)
        else:
            pieces.append((True, text))

    for i, f in enumerate(fields):
        lit(("{" if i == 0 else item) + f'"{f}"' + colon + ("" if f in UNQUOTED else '"'))
        if f not in UNQUOTED:
            pieces.append((False, f"t.{f}"))
            lit('"')
        elif spaced and f in ("assignment", "context"):
            pieces.append((False, _spaced_json(f"t.{f}::varchar")))
        else:
            pieces.append((False, f"t.{f}::varchar"))
    lit("}")
    body = ", ".join("'" + text.replace("'", "''") + "'" if is_lit else text for is_lit, text in pieces)
    cond = " and ".join([f"t.{f} is not null" for f in fields] +
                        [f"t.{f} is null" for f in KNOWN_FIELDS if f not in fields])
    return cond, f"concat({body})"


def fast_line_sql(shapes: tuple[Shape, ...] = CONTRACT_SHAPES) -> str:
    """The line rebuilt from the `json_transform` struct `t`: string fields quoted back, the
    `UNQUOTED` ones as the text of their value, absent members skipped, members in the order and
    with the separators of the shape with the same fields (contract order, compact, otherwise).
    Equal to a line without backslashes only when every present known field is a JSON string (or,
    for the `UNQUOTED` ones, a value of their type), nothing is null, no key is unknown or repeated
    and no stray whitespace is left: then the struct *is* the line, decoded, and its values need no
    further parsing."""
    general = rebuilt_line_sql(lambda f: f"t.{f}::varchar" if f in UNQUOTED else f"'\"' || t.{f} || '\"'")
    whens = " ".join(f"when {cond} then {line}" for cond, line in map(_shape_line_sql, shapes))
    return f"case {whens} else {general} end"


# Columns of `checked_select_sql` a fast-path row does not carry: constant when accepted (no reason,
# no unknown field, no PII: a context or an id that may hold any is left to the general path).
FAST_CONSTANTS = {"reason": "null::varchar", "reasons": "null::varchar[]", "raw": "null::varchar", "extra": "null::json",
                  **{f"pii_{k}": "0::bigint" for k in PII_KINDS}, "pii_ids": "null::varchar"}
FAST_COLUMNS = tuple(c for c in CHECKED_COLUMNS if c not in FAST_CONSTANTS)


def fast_select_sql(lines: str, levels: list[tuple[str, str, str]], cells: list[str] = (),
                    shapes: tuple[Shape, ...] = CONTRACT_SHAPES) -> str:
    """SELECT of the lines of the relation `lines` `(file_idx, line_number, line, pre_reason)` the
    fast path accepts, in the columns `FAST_COLUMNS` (those of `checked_select_sql` but the constant
    `FAST_CONSTANTS`); `pending_lines_sql` gives the others. `cells` (`registry_cell_texts`) are the
    assignments accepted here; `levels` gives the known experiments; `shapes` the key orders rebuilt
    (`observed_shapes`)."""
    experiments = sql_list(sorted({e for e, _f, _l in levels}) or [""])
    cell_list = sql_list(cells or [""])
    limits = settings().limits
    # the ids and the metric name in one text (chr(31) separated: no pattern spans two of them)
    # (a test only: an id holding chr(31) at worst sends its line to the general path)
    names = "concat_ws(chr(31), " + ", ".join(f"t.{f}" for f in (*PII_ID_FIELDS, "metric")) + ")"
    return f"""
with attempted as not materialized (
    select file_idx, line_number, line, pre_reason,
        case when pre_reason is null and strlen(line) <= {limits.max_line_bytes} and prefix(line, '{{')
                  and suffix(line, '}}') and not contains(line, '\\') and not contains(line, chr(0))
             then try(json_transform(line, '{transform_type()}')) end as t
    from {lines}
    where {LINE_FILTER}
), decoded as not materialized (
    select file_idx, line_number, line, pre_reason, t,
        coalesce(t is not null and line = {fast_line_sql(shapes)}, false) as canonical,
        {utc_timestamp_sql('t.ts')} as ts,
        {utc_timestamp_sql('t.received_at')} as received_at,
        t.value::varchar as value_text, t.assignment::varchar as assignment_text,
        t.context::varchar as context_raw
    from attempted
), typed as not materialized (
    select *,
        t.seq as seq,
        {value_sql('value_text')} as value,
        case when left(context_raw, 1) = '{{' then context_raw end as context_text
    from decoded
), judged as not materialized (
    select *,
        coalesce(canonical and t.event_id <> '' and t.unit_id <> '' and {ts_ok_sql('ts', 't.ts')}
            and (t.received_at is null or {ts_ok_sql('received_at', 't.received_at')}
                 and {received_ok_sql('received_at', 'ts')})
            and (t.seq is null or t.seq between 0 and {MAX_SEQ})
            and (t.context is null or context_text is not null and not regexp_matches(context_text, '{ANY_PII}')
                 and not {context_may_be_deep_sql('context_text', limits.max_json_depth)})
            and not {may_hold_pii_sql(names)}
            and case t.event_type
                when 'exposure' then t.experiment_id <> '' and list_contains({experiments}, t.experiment_id)
                    and list_contains({cell_list}, concat(t.experiment_id, chr(31), assignment_text))
                when 'metric' then t.metric <> '' and isfinite(value)
                else false end, false) as accepted
    from typed
)
select
    file_idx, line_number,
    t.event_id as event_id, t.event_type as event_type, ts, received_at, t.unit_id as unit_id,
    t.device_id as device_id, t.session_id as session_id, seq, t.experiment_id as experiment_id,
    case when t.event_type = 'exposure' then t.assignment end as assignment,
    t.cell_id as cell_id, t.hash_version as hash_version,
    case when t.event_type = 'metric' then t.metric end as metric,
    case when t.event_type = 'metric' then value end as value,
    t.context as context,
    {payload_hash_sql("t.event_type", "t.ts", "t.unit_id", "t.device_id", "t.session_id", "seq", "t.experiment_id",
                      "assignment_text", "t.metric", "value", "context_text")} as payload_hash
from judged
where accepted
"""


def pending_lines_sql(lines: str, accepted: str) -> str:
    """The lines of `lines` (`fast_select_sql`'s input) that are not in the relation `accepted`
    (`file_idx`, `line_number` of the rows the fast path accepted): the general path's input. An
    anti-join of the keys, so the fast path's output can go straight to `raw.events`: a temp table
    of every chunk's rows (to tell accepted from pending) cost more than this join, and DuckDB keeps
    such tables until the partition's commit. Lines without a number (whole-file rows) are pending;
    blank lines are left in, the general path skips them."""
    return (f"select l.file_idx, l.line_number, l.line, l.pre_reason from {lines} l anti join {accepted} a "
            f"on l.file_idx = a.file_idx and l.line_number = a.line_number")
