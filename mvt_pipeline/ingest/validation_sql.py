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
The CASE order of the reasons is the contract: the first problem found is the one reported.
"""

from __future__ import annotations

from .file_readers import MAX_LINE_BYTES, RAW_SNIPPET_CHARS
from .warehouse_schema import PII_KINDS

KNOWN_FIELDS = (
    "event_id", "event_type", "ts", "received_at", "unit_id", "device_id", "session_id", "seq",
    "experiment_id", "assignment", "cell_id", "hash_version", "metric", "value", "context",
)
# Identifier fields may arrive as JSON integers (SDKs with numeric user ids); they are kept as text.
_ID_FIELDS = ("event_id", "unit_id", "device_id", "session_id", "experiment_id", "cell_id", "hash_version")
# Redaction patterns (RE2 syntax), each preceded by a boundary group so that version strings such
# as "Chrome/120.0.0.0" or "3.2.1" are not mistaken for IP addresses or phone numbers.
_BOUNDARY = r"(^|[^A-Za-z0-9_./:-])"
_PII_END = r"($|[^A-Za-z0-9_.@-])"
PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "ipv4": r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}",
    "ipv6": r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    # international (+ prefix) or 10-digit national with separators; bare digit runs and dates
    # such as 2026-11-02 are not phone numbers
    "phone": r"(?:\+\d[\d ()-]{6,}\d|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4})",
}
assert set(PII_PATTERNS) == set(PII_KINDS)
ANY_PII = _BOUNDARY + "(" + "|".join(f"(?:{p})" for p in PII_PATTERNS.values()) + ")" + _PII_END
# The rows that are lines: blank lines are skipped (not counted) but keep the physical numbering.
LINE_FILTER = "prefix(line, '{') or pre_reason is not null or trim(line) <> ''"


# The columns of a checked row (`checked_select_sql`), in order.
CHECKED_COLUMNS = (
    "file_idx", "line_number", "reason", "raw", "event_id", "event_type", "ts", "received_at", "unit_id",
    "device_id", "session_id", "seq", "experiment_id", "assignment", "cell_id", "hash_version", "metric",
    "value", "context", "extra", *(f"pii_{k}" for k in PII_KINDS), "payload_hash",
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
    for f in _ID_FIELDS:
        out.append(f"case when left({_j(f)}, 1) = '\"' then {_unquote(_j(f))} "
                   f"when regexp_full_match({_j(f)}, '-?[0-9]+') then {_j(f)} end as {f}")
    out.append(f"{seq_sql(_j('seq'))} as seq")
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


def _pii_chain(expr: str) -> tuple[str, list[str]]:
    """(redacted text, per-kind count expressions), each kind counted after the previous ones are
    replaced so one value is never counted twice."""
    text = expr
    counts = []
    for kind, core in PII_PATTERNS.items():
        pattern = f"{_BOUNDARY}({core}){_PII_END}"
        counts.append(f"len(regexp_extract_all(coalesce({text}, ''), '{pattern}'))")
        text = f"regexp_replace({text}, '{pattern}', '\\1[redacted:{kind}]\\3', 'g')"
    return text, counts


def _reason_sql() -> str:
    def missing(f: str) -> str:
        return f"(k_{f} is null or k_{f} = 'n')"

    def not_string_or_id(f: str) -> str:
        return f"(not {missing(f)} and {f} is null)"

    return f"""
    case
        when pre_reason is not null then pre_reason
        when strlen(line) > {MAX_LINE_BYTES} then 'oversized_line'
        when contains(line, chr(0)) then 'encoding'
        when not ok_json then 'malformed_json'
        when {missing('event_id')} then 'missing_required:event_id'
        when {not_string_or_id('event_id')} then 'bad_type:event_id'
        when event_id = '' then 'missing_required:event_id'
        when {missing('event_type')} then 'missing_required:event_type'
        when event_type_text is null or event_type_text not in ('exposure', 'metric') then 'bad_type:event_type'
        when {missing('ts')} then 'missing_required:ts'
        when ts is null then 'bad_timestamp'
        when not {missing('received_at')} and received_at is null then 'bad_timestamp'
        when {missing('unit_id')} or unit_id = '' then 'missing_required:unit_id'
        when {not_string_or_id('unit_id')} then 'bad_type:unit_id'
        when {not_string_or_id('device_id')} then 'bad_type:device_id'
        when {not_string_or_id('session_id')} then 'bad_type:session_id'
        when not {missing('seq')} and seq is null then 'bad_type:seq'
        when not {missing('context')} and context_text is null then 'bad_type:context'
        when event_type_text = 'exposure' and ({missing('experiment_id')} or experiment_id = '')
            then 'missing_required:experiment_id'
        when event_type_text = 'exposure' and {not_string_or_id('experiment_id')} then 'bad_type:experiment_id'
        when event_type_text = 'exposure' and {missing('assignment')} then 'missing_required:assignment'
        when event_type_text = 'exposure' and k_assignment <> '{{' then 'bad_type:assignment'
        when event_type_text = 'exposure' and assignment_text = '{{}}' then 'missing_required:assignment'
        when event_type_text = 'exposure' and not known_experiment then 'unknown_experiment'
        when event_type_text = 'exposure' and bad_level is not false then 'unknown_level'
        when event_type_text = 'metric' and ({missing('metric')} or metric_text = '') then 'missing_required:metric'
        when event_type_text = 'metric' and metric_text is null then 'bad_type:metric'
        when event_type_text = 'metric' and {missing('value')} then 'missing_required:value'
        when event_type_text = 'metric' and value is null then 'bad_type:value'
        when event_type_text = 'metric' and not isfinite(value) then 'non_finite_value'
    end"""


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
    (`registry_cell_texts`) lets the usual compact assignments skip that check."""
    paths = "[" + ", ".join(f"'$.{f}'" for f in KNOWN_FIELDS) + "]"
    known = sql_list(KNOWN_FIELDS)
    experiments = sql_list(sorted({e for e, _f, _l in levels}) or [""])
    # assignment entries as "experiment<US>factor<US>level as JSON text", the form built per event below
    pairs = sql_list(sorted(f"{e}\x1f{f}\x1f" + '"' + lv.replace("\\", "\\\\").replace('"', '\\"') + '"'
                            for e, f, lv in levels) or [""])
    cell_list = sql_list(cells or [""])
    nulls = "{" + ", ".join(f'"{f}": null' for f in KNOWN_FIELDS) + "}"
    per_kind = ",\n        ".join(f"0::bigint as pii_{k}" for k in PII_KINDS)  # PII: see pii_hits_sql / pii_applied_sql
    return f"""
with flagged as not materialized (
    select file_idx, line_number, line, pre_reason,
        case when pre_reason is not null or strlen(line) > {MAX_LINE_BYTES} or contains(line, chr(0)) then false
             when prefix(line, '{{') or prefix(ltrim(line), '{{') then json_valid(line)
             else false end as ok_json
    from {lines}
    where {LINE_FILTER}
), parsed as not materialized (
    select *, case when ok_json then json_extract(line, {paths}) end as j
    from flagged
), keyed as not materialized (
    select *,
        case when not ok_json then false
             when line = {_compact_line_sql()} then false
             else not list_has_all({known}, json_keys(line)) end as has_extra
    from parsed
), fields as not materialized (
    select file_idx, line_number, line, pre_reason, ok_json, has_extra,
        {_field_sql()},
        case when has_extra then json_merge_patch(line, '{nulls}') end as extra_json
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
    select *, {_reason_sql()} as reason from typed
)
select
    file_idx,
    line_number,
    reason,
    case when reason is not null then left(replace(line, chr(0), '\\0'), {RAW_SNIPPET_CHARS}) end as raw,
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
                      "assignment_text", "metric_text", "value", "context_text")} as payload_hash
from decided
"""


PII_HITS_TABLE = "_ingest_pii_hits"
PII_TEXTS_TABLE = "_ingest_pii_texts"


def pii_hits_sql(table: str) -> list[str]:
    """Statements building two temp tables from the checked rows `table` (PII counts 0):
    `PII_TEXTS_TABLE (col, file_idx, t, n)`, how many accepted rows of each file carry each distinct
    `context` / `extra` text, and `PII_HITS_TABLE (col, t, redacted, n_<kind>...)`, the distinct texts
    that hold PII: each distinct text is scanned once. Two statements on purpose: in one, DuckDB
    pushes the regex filter below the grouping (even out of a MATERIALIZED CTE), onto every row."""
    red, counts = _pii_chain("t")
    per_kind = ", ".join(f"{c} as n_{k}" for k, c in zip(PII_PATTERNS, counts))
    return [f"""
        create or replace temp table {PII_TEXTS_TABLE} as
        select 'context' as col, file_idx, context::varchar as t, count(*) as n from {table}
        where context is not null and reason is null group by all
        union all select 'extra', file_idx, extra::varchar, count(*) from {table}
        where extra is not null and reason is null group by all""", f"""
        create or replace temp table {PII_HITS_TABLE} as
        select col, t, ({red})::json as redacted, {per_kind}
        from (select distinct col, t from {PII_TEXTS_TABLE}) where regexp_matches(t, '{ANY_PII}')"""]


def pii_file_sums_sql() -> str:
    """Per file, the PII values found in its accepted rows, by kind (from the two tables above:
    a join of a few thousand text counts instead of one per row)."""
    sums = ", ".join(f"sum(p.n * h.n_{k})" for k in PII_KINDS)
    return (f"select p.file_idx, {sums} from {PII_TEXTS_TABLE} p "
            f"join {PII_HITS_TABLE} h on h.col = p.col and h.t = p.t group by 1")


def pii_applied_sql(table: str, cols: set[str]) -> str:
    """SELECT of `table` with the hits of the columns `cols` applied: redacted `context` / `extra`
    and per-kind counts (a row's counts are the sum over its `context` and its `extra`)."""
    if not cols:
        return f"select * from {table}"
    joins, replaced = [], []
    for col in sorted(cols):
        joins.append(f"left join (select * from {PII_HITS_TABLE} where col = '{col}') h_{col} "
                     f"on c.{col}::varchar = h_{col}.t")
        replaced.append(f"coalesce(h_{col}.redacted, c.{col}) as {col}")
    for k in PII_KINDS:
        replaced.append(" + ".join([f"c.pii_{k}"] + [f"coalesce(h_{col}.n_{k}, 0)" for col in sorted(cols)])
                        + f" as pii_{k}")
    return f"select c.* replace ({', '.join(replaced)}) from {table} c {' '.join(joins)}"
