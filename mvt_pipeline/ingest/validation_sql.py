"""The general validation path: any line -> parsed, typed row with a reason code (NULL = accepted).

Lines in the canonical SDK shape are accepted by `fast_path_sql` first; this path decides every
other line, and holds the reason codes and their order. Shaped for the lines it gets (near misses,
CSV / Parquet rows, malformed text):
- `json_valid`, then one `json_extract(line, [all known paths])` returning the JSON text of every
  known field; types are read from the first character of that text (`"` string, digit or `-`
  number, `{` object...); only strings are unescaped. Unknown fields: a line rebuilt from the
  fragments that matches is compact; the rest pay for `json_keys`, and only those with an unknown
  key pay for `json_merge_patch`, which builds `extra` without the known keys;
- JSON values stay typed JSON, so `assignment`, `context` and `extra` reach `raw.events` without
  being re-validated by a VARCHAR -> JSON cast (only redacted values are cast back);
- PII is not scanned per row: `context`/`extra` texts repeat (per unit, device, app version), so
  `pii_hits_sql` scans each DISTINCT text once with one combined RE2 pattern after the checked table
  is built; only the texts that match (rare) pay for the per-kind counts and replacements, and
  `pii_applied_sql` joins them back (no join when nothing matched).
The order of the checks is the contract: the first problem found is the primary `reason` (what
the counts use); `reasons` lists every problem of the line, so an SDK team fixes them in one round.
"""

from __future__ import annotations

from ..config import settings
from .file_readers import RAW_SNIPPET_CHARS
from .pii_sql import (ANY_PII, PII_PATTERNS, hashed_id_sql, holds_pii_sql, may_hold_pii_sql, redact_sql,  # noqa: F401 (re-exported)
                      redaction_steps_sql)
from .warehouse_schema import PII_KINDS

KNOWN_FIELDS = (
    "event_id", "event_type", "ts", "received_at", "unit_id", "device_id", "session_id", "seq",
    "experiment_id", "assignment", "cell_id", "hash_version", "metric", "value", "context",
)
# Identifier fields may arrive as JSON integers (SDKs with numeric user ids); they are kept as text.
ID_FIELDS = ("event_id", "unit_id", "device_id", "session_id", "experiment_id", "cell_id", "hash_version")
EVENT_TYPES = ("exposure", "metric")
# The ids an accepted row stores: one that holds PII is replaced by its keyed hash (`pii_applied_sql`).
PII_ID_FIELDS = ID_FIELDS
# Plausible event times: `ts` and `received_at` outside [TS_MIN, TS_MAX) are `bad_timestamp` (a
# year-294247 timestamp is valid for DuckDB but breaks every later conversion).
TS_MIN, TS_MAX = "2000-01-01", "2100-01-01"
# `received_at` may be earlier than `ts` (device clocks drift) by up to this much; more is
# `received_before_ts`.
RECEIVED_BEFORE_TS_TOLERANCE = "24 hours"
# `seq` must lie in [0, MAX_SEQ] (JavaScript's largest safe integer), else `bad_value:seq`: far from
# BIGINT's limit, so the loss arithmetic on sequence numbers cannot overflow.
MAX_SEQ = 2**53 - 1
# The rows that are lines: blank lines are skipped (not counted) but keep the physical numbering.
LINE_FILTER = "prefix(line, '{') or pre_reason is not null or trim(line) <> ''"


# The columns of a checked row (`checked_select_sql`), in order.
CHECKED_COLUMNS = (
    "file_idx", "line_number", "reason", "reasons", "raw", "event_id", "event_type", "ts", "received_at", "unit_id",
    "device_id", "session_id", "seq", "experiment_id", "assignment", "cell_id", "hash_version", "metric",
    "value", "context", "extra", *(f"pii_{k}" for k in PII_KINDS), "payload_hash", "pii_ids",
)


def _frag(field: str) -> str:
    """The `json_extract` fragment (JSON) of a known field, general path."""
    return f"j[{KNOWN_FIELDS.index(field) + 1}]"


def _j(field: str) -> str:
    """JSON text of a known field as VARCHAR (a JSON -> VARCHAR cast is free; the reverse parses)."""
    return f"({_frag(field)}::varchar)"


def _unquote(frag: str) -> str:
    """String value of a JSON string fragment; the JSON parser is needed only for escapes."""
    return f"case when contains({frag}, '\\') then {frag}->>'$' else substr({frag}, 2, length({frag}) - 2) end"


def _field_sql() -> str:
    """Per known field: `k_<f>` = first char of its JSON text (NULL = absent, 'n' = null), `<f>` = value."""
    out = [f"left({_j(f)}, 1) as k_{f}" for f in KNOWN_FIELDS]
    for f in ("event_type", "ts", "received_at", "metric"):
        out.append(f"case when left({_j(f)}, 1) = '\"' then {_unquote(_j(f))} end as {f}_text")
    for f in ID_FIELDS:
        out.append(f"case when left({_j(f)}, 1) = '\"' then {_unquote(_j(f))} "
                   f"when regexp_full_match({_j(f)}, '-?[0-9]+') then {_j(f)} end as {f}")
    out.append(f"{seq_sql(_j('seq'))} as seq")
    out.append(f"regexp_full_match({_j('seq')}, '-?[0-9]+') as seq_is_integer")
    out.append(f"{value_sql(_j('value'))} as value")
    out.append(f"{_j('assignment')} as assignment_text")
    out.append(f"case when left({_j('context')}, 1) = '{{' then {_j('context')} end as context_text")
    out.append(f"{_frag('assignment')} as assignment_json")
    out.append(f"case when left({_j('context')}, 1) = '{{' then {_frag('context')} end as context_json")
    return ",\n        ".join(out)


def seq_sql(text: str) -> str:
    """`seq` from its JSON text: an integer literal only (no fraction or exponent), else NULL."""
    return (f"case when (left({text}, 1) between '0' and '9' or left({text}, 1) = '-') "
            f"and not (contains({text}, '.') or contains({text}, 'e') or contains({text}, 'E')) "
            f"then try_cast({text} as bigint) end")


def value_sql(text: str) -> str:
    """`value` from its JSON text: a number (NaN / Infinity included, rejected later), else NULL."""
    return (f"case when left({text}, 1) between '0' and '9' or left({text}, 1) in ('-', 'N', 'I') "
            f"then try_cast({text} as double) end")


def payload_hash_sql(event_type: str, ts_text: str, unit_id: str, device_id: str, session_id: str, seq: str,
                     experiment_id: str, assignment_text: str, metric_text: str, value: str, context_text: str) -> str:
    """The 64-bit hash of an event's payload (what a retry must repeat), the same on both paths."""
    return (f"hash({event_type}, {ts_text}, {unit_id}, {device_id}, {session_id}, {seq}, {experiment_id}, "
            f"{assignment_text}, {metric_text}, {value}, {context_text})")


def utc_timestamp_sql(text: str) -> str:
    """`try_cast(text as timestamptz)::timestamp` (session time zone UTC), cheaper for the usual
    `...Z` form: the plain TIMESTAMP cast is half the price and agrees with it on text that ends in
    `Z` and holds no space (it ignores a space-separated zone name or offset, so those and every
    other form take the time-zone-aware cast; a test compares the two on fuzzed text)."""
    return (f"case when suffix({text}, 'Z') and not contains({text}, ' ') then try_cast({text} as timestamp) "
            f"else try_cast({text} as timestamptz)::timestamp end")


def _ts_out_of_window_sql(ts: str, text: str) -> str:
    """TRUE when a parsed timestamp is outside the plausible window or its text has no time of day
    (a date alone says nothing about when the event happened)."""
    return f"(not contains({text}, ':') or {ts} < TIMESTAMP '{TS_MIN}' or {ts} >= TIMESTAMP '{TS_MAX}')"


def ts_ok_sql(ts: str, text: str) -> str:
    """TRUE when the text `text` of a timestamp parsed as `ts` is acceptable (fast path)."""
    return f"({ts} is not null and not {_ts_out_of_window_sql(ts, text)})"


def received_ok_sql(received_at: str, ts: str) -> str:
    return f"({received_at} >= {ts} - INTERVAL '{RECEIVED_BEFORE_TS_TOLERANCE}')"


def _openers_pattern(n: int) -> str:
    """RE2 pattern: at least `n` opening brackets (a line nested deeper than n-1 has that many)."""
    return r"[{\[](?:[^{\[]*[{\[]){" + str(n - 1) + "}"


def deeper_than_sql(text: str, depth: int) -> str:
    """TRUE when the valid JSON `text` nests deeper than `depth` (a top-level scalar or flat object
    is depth 1), computed without recursion: strings removed, brackets kept, then `depth` rounds
    each removing every innermost `{}` / `[]` pair; a text nested deeper keeps some. Only texts
    with more than `depth` opening brackets (counted by two `replace`s) pay for it."""
    brackets = (f"regexp_replace(regexp_replace({text}, '\"(?:[^\"\\\\]|\\\\.)*\"', '', 'g'), "
                f"'[^\\[\\]{{}}]', '', 'g')")
    rounds = (f"list_reduce(list_prepend({brackets}, list_transform(range({depth}), lambda i: '')), "
              f"lambda acc, x: regexp_replace(acc, '\\{{\\}}|\\[\\]', '', 'g'))")
    openers = f"(strlen({text}) - strlen(replace(replace({text}, '{{', ''), '[', '')))"
    # CASE, not AND: a projection evaluates both sides of an AND on every row
    return f"(case when {openers} > {depth} then {rounds} <> '' else false end)"


def context_may_be_deep_sql(context: str, depth: int) -> str:
    """Cheap test for the fast path: TRUE when the object `context` (one level below the line) may
    nest so deep that the line exceeds `depth`; such lines go to the general path's exact check."""
    return (f"(case when contains(substr({context}, 2), '{{') or contains({context}, '[') "
            f"then regexp_matches({context}, '{_openers_pattern(depth)}') else false end)")


def ids_text_sql(value) -> str:
    """The ids of a row as one text (`value(field)` each, in `PII_ID_FIELDS` order, separated by
    chr(31), which no PII pattern crosses and which an id cannot hold here)."""
    return "concat_ws(chr(31), " + ", ".join(
        f"replace(coalesce({value(f)}, ''), chr(31), ' ')" for f in PII_ID_FIELDS) + ")"


# A line that is not a JSON object (or arrives refused) has exactly one problem: nothing else can be
# judged. These codes stand alone in `reasons`.
TERMINAL_REASONS = ("oversized_line", "encoding", "malformed_json")


def _reason_groups() -> list[list[tuple[str, str]]]:
    """The checks as (condition, code) pairs, in the contract's order, grouped by what they judge
    (one field, or one property of the line). Within a group the first match is the problem of that
    field (a missing field is not also a bad type); across groups every match is a problem of the
    line. The primary `reason` is the first match of the flattened list: that order is the contract."""
    def missing(f: str) -> str:
        return f"(k_{f} is null or k_{f} = 'n')"

    def not_string_or_id(f: str) -> str:
        return f"(not {missing(f)} and {f} is null)"

    exposure, metric = "event_type_text = 'exposure'", "event_type_text = 'metric'"
    return [
        [("too_deep", "too_deep")],
        [("duplicate_key", "duplicate_key")],
        [(missing("event_id"), "missing_required:event_id"),
         (not_string_or_id("event_id"), "bad_type:event_id"),
         ("event_id = ''", "missing_required:event_id")],
        [(missing("event_type"), "missing_required:event_type"),
         (f"event_type_text is null or event_type_text not in {tuple(EVENT_TYPES)}", "bad_type:event_type")],
        [(missing("ts"), "missing_required:ts"),
         (f"ts is null or {_ts_out_of_window_sql('ts', 'ts_text')}", "bad_timestamp"),
         (f"not {missing('received_at')} and (received_at is null "
          f"or {_ts_out_of_window_sql('received_at', 'received_at_text')})", "bad_timestamp"),
         (f"received_at is not null and not {received_ok_sql('received_at', 'ts')}", "received_before_ts")],
        [(f"{missing('unit_id')} or unit_id = ''", "missing_required:unit_id"),
         (not_string_or_id("unit_id"), "bad_type:unit_id")],
        [(not_string_or_id("device_id"), "bad_type:device_id")],
        [(not_string_or_id("session_id"), "bad_type:session_id")],
        [(f"not {missing('seq')} and seq is null and not seq_is_integer", "bad_type:seq"),
         (f"not {missing('seq')} and (seq is null or seq < 0 or seq > {MAX_SEQ})", "bad_value:seq")],
        [(f"not {missing('context')} and context_text is null", "bad_type:context")],
        [(f"{exposure} and ({missing('experiment_id')} or experiment_id = '')", "missing_required:experiment_id"),
         (f"{exposure} and {not_string_or_id('experiment_id')}", "bad_type:experiment_id")],
        [(f"{exposure} and {missing('assignment')}", "missing_required:assignment"),
         (f"{exposure} and k_assignment <> '{{'", "bad_type:assignment"),
         (f"{exposure} and assignment_text = '{{}}'", "missing_required:assignment")],
        # judged only for a valid experiment id and a non-empty object (implied in the flattened order)
        [(f"{exposure} and not known_experiment", "unknown_experiment"),
         (f"{exposure} and known_experiment and k_assignment = '{{' and assignment_text <> '{{}}' "
          "and bad_level is not false", "unknown_level")],
        [(f"{metric} and ({missing('metric')} or metric_text = '')", "missing_required:metric"),
         (f"{metric} and metric_text is null", "bad_type:metric"),
         (f"{metric} and case when {may_hold_pii_sql('metric_text')} then {holds_pii_sql('metric_text')} "
          "else false end", "pii_in_metric_name")],
        [(f"{metric} and {missing('value')}", "missing_required:value"),
         (f"{metric} and value is null", "bad_type:value"),
         (f"{metric} and not isfinite(value)", "non_finite_value")],
    ]


def _reason_sql(max_line_bytes: int) -> str:
    """The primary reason: the first problem found (NULL = accepted)."""
    checks = "\n        ".join(f"when {cond} then '{code}'" for group in _reason_groups() for cond, code in group)
    return f"""
    case
        when pre_reason is not null then pre_reason
        when strlen(line) > {max_line_bytes} then 'oversized_line'
        when contains(line, chr(0)) then 'encoding'
        when not ok_json then 'malformed_json'
        {checks}
    end"""


def _reasons_sql() -> str:
    """Every problem of a quarantined line, the primary `reason` first, each code once (computed for
    quarantined rows only: an accepted row pays nothing)."""
    per_group = ", ".join(
        "case " + " ".join(f"when {cond} then '{code}'" for cond, code in group) + " end" for group in _reason_groups())
    found = f"list_filter([{per_group}], lambda x: x is not null)"
    return (f"case when reason is null then null "
            f"when pre_reason is not null or reason in {tuple(TERMINAL_REASONS)} then [reason] "
            f"else list_filter({found}, lambda x, i: list_position({found}, x) = i) end")


def sql_list(items) -> str:
    return "[" + ", ".join("'" + str(x).replace("'", "''") + "'" for x in items) + "]::varchar[]"


def rebuilt_line_sql(value) -> str:
    """The line as it would read with exactly its known members, compact, in contract order, each
    member's value being `value(field)` (an absent member vanishes: `||` with NULL gives NULL and
    `concat` skips NULLs)."""
    members = [f"'{'{' if i == 0 else ','}\"{f}\":' || {value(f)}" for i, f in enumerate(KNOWN_FIELDS)]
    return f"concat({', '.join(members)}, '}}')"


def _compact_line_sql() -> str:
    """The line rebuilt from the `json_extract` fragments. A line without `event_id` never equals it
    (it would start with `{,`): that only sends it to `json_keys`."""
    return rebuilt_line_sql(lambda f: f"{_frag(f)}::varchar")


def checked_select_sql(lines: str, levels: list[tuple[str, str, str]], cells: list[str] = ()) -> str:
    """SELECT of one row per non-blank line (`reason` NULL = accepted) from the relation `lines`
    `(file_idx, line_number, line, pre_reason)`. `levels` are the registry's (experiment, factor,
    level) triples, inlined as constant lists so checking an assignment needs no join; `cells`
    (`registry_cell_texts`) lets the usual compact assignments skip that check. A quarantined row's
    `raw` is the line with its PII redacted (before it is cut to 4 KiB, so no value is cut in two),
    unless MVT_QUARANTINE_KEEP_PII; an accepted row whose ids may hold PII carries them in `pii_ids`
    (`ids_text_sql`), for `pii_hits_sql` / `pii_applied_sql` to count and hash."""
    limits, keep_original = settings().limits, settings().pii.quarantine_keep_original
    paths = "[" + ", ".join(f"'$.{f}'" for f in KNOWN_FIELDS) + "]"
    known = sql_list(KNOWN_FIELDS)
    experiments = sql_list(sorted({e for e, _f, _l in levels}) or [""])
    # assignment entries as "experiment<US>factor<US>level as JSON text", the form built per event below
    pairs = sql_list(sorted(f"{e}\x1f{f}\x1f" + '"' + lv.replace("\\", "\\\\").replace('"', '\\"') + '"'
                            for e, f, lv in levels) or [""])
    cell_list = sql_list(cells or [""])
    nulls = "{" + ", ".join(f'"{f}": null' for f in KNOWN_FIELDS) + "}"
    per_kind = ",\n        ".join(f"0::bigint as pii_{k}" for k in PII_KINDS)  # PII: see pii_hits_sql / pii_applied_sql
    if keep_original:
        raw = "raw_text"
    else:  # escapes decoded first (`\u0040` is `@`), as the JSON columns store them
        raw = f"case when regexp_matches(raw_text, '{ANY_PII}') then {redact_sql('raw_text')} else raw_text end"
    return f"""
with flagged as not materialized (
    select file_idx, line_number, line, pre_reason,
        case when pre_reason is not null or strlen(line) > {limits.max_line_bytes} or contains(line, chr(0)) then false
             when prefix(line, '{{') or prefix(ltrim(line), '{{') then json_valid(line)
             else false end as ok_json
    from {lines}
    where {LINE_FILTER}
), parsed as not materialized (
    select *, case when ok_json then json_extract(line, {paths}) end as j
    from flagged
), keyed as not materialized (
    select *,
        case when not ok_json then null
             when line = {_compact_line_sql()} then null
             else json_keys(line) end as top_keys
    from parsed
), fields as not materialized (
    select file_idx, line_number, line, pre_reason, ok_json,
        coalesce(not list_has_all({known}, top_keys), false) as has_extra,
        coalesce(len(top_keys) > len(list_distinct(top_keys)), false) as duplicate_key,
        ok_json and {deeper_than_sql('line', limits.max_json_depth)} as too_deep,
        {_field_sql()},
        case when not list_has_all({known}, top_keys) then json_merge_patch(line, '{nulls}') end as extra_json
    from keyed
), typed as not materialized (
    select *,
        {utc_timestamp_sql('ts_text')} as ts,
        {utc_timestamp_sql('received_at_text')} as received_at,
        case when event_type_text = 'exposure' then list_contains({experiments}, experiment_id) end
            as known_experiment,
        case when event_type_text = 'exposure' and k_assignment = '{{' then
            case when list_contains({cell_list}, concat(experiment_id, chr(31), assignment_text)) then false
            else not list_has_all({pairs},
            list_transform(map_entries(json_transform(assignment_text, '"MAP(VARCHAR, JSON)"')),
                           lambda e: concat(experiment_id, chr(31), e.key, chr(31), coalesce(e.value::varchar, 'null'))))
        end end as bad_level
    from fields
), decided as not materialized (
    select *, {_reason_sql(limits.max_line_bytes)} as reason from typed
), quarantined as not materialized (
    select *,
        {_reasons_sql()} as reasons,
        case when reason is null then null
             when ok_json and contains(line, '\\') then json(line)::varchar
             else replace(line, chr(0), '\\0') end as raw_text,
        case when reason is null then {ids_text_sql(lambda f: f)} end as ids_text
    from decided
)
select
    file_idx,
    line_number,
    reason,
    reasons,
    case when reason is not null then left({raw}, {RAW_SNIPPET_CHARS}) end as raw,
    event_id, event_type_text as event_type, ts, received_at, unit_id, device_id, session_id, seq,
    experiment_id,
    case when event_type_text = 'exposure' then assignment_json end as assignment,
    cell_id, hash_version,
    case when event_type_text = 'metric' then metric_text end as metric,
    case when event_type_text = 'metric' then value end as value,
    context_json as context,
    extra_json as extra,
    {per_kind},
    {payload_hash_sql("event_type_text", "ts_text", "unit_id", "device_id", "session_id", "seq", "experiment_id",
                      "assignment_text", "metric_text", "value", "context_text")} as payload_hash,
    case when {may_hold_pii_sql('ids_text')} then ids_text end as pii_ids
from quarantined
"""


PII_HITS_TABLE = "_ingest_pii_hits"
PII_TEXTS_TABLE = "_ingest_pii_texts"


def pii_hits_sql(table: str) -> list[str]:
    """Statements building two temp tables from the checked rows `table` (PII counts 0):
    `PII_TEXTS_TABLE (col, file_idx, t, n)`, how many accepted rows of each file carry each distinct
    `context` / `extra` / `pii_ids` text (col `ids`), and `PII_HITS_TABLE (col, t, redacted,
    n_<kind>...)`, the distinct texts that hold PII: each distinct text is scanned once. Two
    statements on purpose: in one, DuckDB pushes the regex filter below the grouping (even out of a
    MATERIALIZED CTE), onto every row."""
    per_kind = ", ".join(f"n_{k}" for k in PII_KINDS)
    return [f"""
        create or replace temp table {PII_TEXTS_TABLE} as
        select 'context' as col, file_idx, context::varchar as t, count(*) as n from {table}
        where context is not null and reason is null group by all
        union all select 'extra', file_idx, extra::varchar, count(*) from {table}
        where extra is not null and reason is null group by all
        union all select 'ids', file_idx, pii_ids, count(*) from {table}
        where pii_ids is not null and reason is null group by all""", f"""
        create or replace temp table {PII_HITS_TABLE} as
        select col, t, redacted, {per_kind}
        from ({redaction_steps_sql(
            f"select distinct col, t from {PII_TEXTS_TABLE} where regexp_matches(t, '{ANY_PII}')", "t")})
        where redacted <> t"""]


def pii_file_sums_sql() -> str:
    """Per file, the PII values found in its accepted rows, by kind (from the two tables above:
    a join of a few thousand text counts instead of one per row)."""
    sums = ", ".join(f"sum(p.n * h.n_{k})" for k in PII_KINDS)
    return (f"select p.file_idx, {sums} from {PII_TEXTS_TABLE} p "
            f"join {PII_HITS_TABLE} h on h.col = p.col and h.t = p.t group by 1")


def pii_applied_sql(table: str, cols: set[str]) -> str:
    """SELECT of `table` with the hits of the columns `cols` applied: redacted `context` / `extra`,
    each id that holds PII replaced by its keyed hash (`hashed_id_sql`), and per-kind counts (a
    row's counts are the sum over its `context`, its `extra` and its ids)."""
    if not cols:
        return f"select * from {table}"
    joins, replaced = [], []
    for col in sorted(cols):
        key = "pii_ids" if col == "ids" else f"{col}::varchar"
        joins.append(f"left join (select * from {PII_HITS_TABLE} where col = '{col}') h_{col} "
                     f"on c.{key} = h_{col}.t")
        if col != "ids":
            replaced.append(f"coalesce(h_{col}.redacted::json, c.{col}) as {col}")
    if "ids" in cols:
        for i, f in enumerate(PII_ID_FIELDS, start=1):
            replaced.append(f"case when split_part(h_ids.redacted, chr(31), {i}) <> "
                            f"replace(coalesce(c.{f}, ''), chr(31), ' ') then {hashed_id_sql(f'c.{f}')} "
                            f"else c.{f} end as {f}")
    for k in PII_KINDS:
        replaced.append(" + ".join([f"c.pii_{k}"] + [f"coalesce(h_{col}.n_{k}, 0)" for col in sorted(cols)])
                        + f" as pii_{k}")
    return f"select c.* replace ({', '.join(replaced)}) from {table} c {' '.join(joins)}"
