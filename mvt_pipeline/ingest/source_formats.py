"""SDK event formats mapped to the contract inside ingestion (`sources.yaml`, docs/telemetry.md).

A dump folder's lines in another format are rewritten, in SQL, into contract lines before the fast
and general paths run, so every rule, reason code and the accounting stay the same: a line either
maps and is then accepted or quarantined like any contract line, or it does not (not JSON, an SDK
record that is not an exposure) and keeps its text with a reason.

`growthbook`: the SDK's tracking callback (`on_experiment_viewed(experiment, result)`) serialised
as one JSON object per line, camelCase or snake_case:
`experimentId` (or `experimentKey`, the experiment / flag key), `variationId` (index or key),
`hashAttribute`, `hashValue`, `userId`, `timestamp`, `inExperiment`, `featureId`. The SDK sends no
event id: it is derived from unit, key, variation and timestamp, so a retried line deduplicates.
The registry maps the key to (experiment, factor) through a factor's `sdk_key` (or the key is the
id of a one-factor experiment) and the variation to a level through `variations` (else the
variation key is the level).
"""

from __future__ import annotations

import collections

import duckdb

from ..registry import Registry
from ..registry.models import Source, json_path
from .validation_sql import sql_list

MAPPING_TABLE = "_ingest_sdk_keys"
SOURCE_METRICS_TABLE = "_ingest_source_metrics"  # (file_idx, event, metric, value property) of segment files
SOURCE_OPTIONS_TABLE = "_ingest_source_options"  # (file_idx, exposure_event, unit) of segment files
NOT_IN_EXPERIMENT = "not_in_experiment"
NO_LOG_RECORDS = "no_log_records"  # an OTLP/JSON line whose batch holds no log record
# A Segment record that is neither the exposure event nor a mapped metric (page, identify, other
# track events): kept as a quarantine row (nothing is dropped silently), not counted as bad data.
UNMAPPED_EVENT = "unmapped_event"


def _first(*paths: str) -> str:
    """The text of the first present, non-null member (`->>` gives a number's text, too)."""
    return "coalesce(" + ", ".join(f"j->>'$.{p}'" for p in paths) + ")"


def sdk_key_rows(registry: Registry) -> list[tuple[str, str, str, str | None, str | None]]:
    """(sdk key, experiment id, factor, variation, level) rows: one per mapped variation, and one
    with variation NULL per key (the experiment and factor of any variation)."""
    rows = []
    # an OpenFeature / flagd exposure names the flag: a factor's `flag_key` is its SDK key unless it
    # sets `sdk_key` (used only when no other factor shares the flag, else it would be ambiguous)
    flags = collections.Counter(f.flag_key for e in registry.experiments for f in e.factors if f.flag_key)
    explicit = {f.sdk_key for e in registry.experiments for f in e.factors if f.sdk_key}
    taken: set[str] = set()
    for e in registry.experiments:
        keyed = [(f.sdk_key or f.flag_key, f) for f in e.factors
                 if f.sdk_key or (f.flag_key and flags[f.flag_key] == 1 and f.flag_key not in explicit)]
        if len(e.factors) == 1 and e.id not in explicit and e.id not in {k for k, _f in keyed}:
            keyed.append((e.id, e.factors[0]))  # a one-factor experiment: its id is an SDK key too
        for key, f in keyed:
            if key in taken:  # the first owner keeps a key (explicit sdk_keys are unique: registry)
                continue
            taken.add(key)
            rows.append((key, e.id, f.name, None, None))
            rows += [(key, e.id, f.name, variation, level) for variation, level in (f.variations or {}).items()]
    return sorted(rows, key=lambda r: tuple("" if x is None else x for x in r))


def create_mapping(conn: duckdb.DuckDBPyConnection, registry: Registry, sources: dict[int, Source] | None = None) -> None:
    """The tables the mappings join: SDK keys, and the metric events of each segment file
    (registry values, bound as parameters, never pasted into SQL)."""
    conn.execute(f"create or replace temp table {MAPPING_TABLE} (sdk_key varchar, experiment_id varchar, "
                 "factor varchar, variation varchar, level varchar)")
    rows = sdk_key_rows(registry)
    if rows:
        conn.executemany(f"insert into {MAPPING_TABLE} values (?, ?, ?, ?, ?)", rows)
    conn.execute(f"create or replace temp table {SOURCE_METRICS_TABLE} (file_idx integer, event varchar, "
                 "metric varchar, value_path varchar)")
    metrics = [(i, m.event, m.metric, None if m.value is None else _value_ref(src.format, m.value))
               for i, src in (sources or {}).items() if src.format in ("segment", "otel") for m in src.metrics]
    if metrics:
        conn.executemany(f"insert into {SOURCE_METRICS_TABLE} values (?, ?, ?, ?)", metrics)
    conn.execute(f"create or replace temp table {SOURCE_OPTIONS_TABLE} (file_idx integer, exposure_event varchar, "
                 "unit varchar)")
    options = [(i, src.exposure_event_name, src.unit_setting) for i, src in (sources or {}).items()
               if src.format in ("segment", "otel")]
    if options:
        conn.executemany(f"insert into {SOURCE_OPTIONS_TABLE} values (?, ?, ?)", options)


def _value_ref(fmt: str, value: str) -> str:
    """Where a metric's value is: a JSON path into a Segment record's `properties` (each part
    quoted: the pattern allows no quote), or an OpenTelemetry attribute key."""
    if fmt == "otel":
        return value
    return "$.properties" + json_path(value)[1:]


def drop_mapping(conn: duckdb.DuckDBPyConnection) -> None:
    for table in (MAPPING_TABLE, SOURCE_METRICS_TABLE, SOURCE_OPTIONS_TABLE):
        conn.execute(f"drop table if exists {table}")


def mapped_sql(lines: str, sources: dict[int, Source], files: list[int]) -> str | None:
    """The statement rewriting the lines of `files` (file indexes of this chunk) whose source has a
    format of its own, or None when every file of the chunk is in the contract."""
    gb = [i for i in files if i in sources and sources[i].format == "growthbook"]
    seg = [i for i in files if i in sources and sources[i].format == "segment"]
    otel = [i for i in files if i in sources and sources[i].format == "otel"]
    if not gb and not seg and not otel:
        return None
    sql = lines
    if gb:
        sql = f"({growthbook_sql(sql, gb, {i: sources[i].unit_setting for i in gb})})"
    if seg:
        sql = f"({segment_sql(sql, seg)})"
    if otel:
        sql = f"({otel_sql(sql, otel)})"
    return f"select * from {sql}"


def _parsed_sql(lines: str, files: list[int]) -> str:
    """The rows of `lines` with `j`: the line as JSON for a JSON-object physical line of `files`
    still to judge (no `pre_reason`), NULL for every other row (which passes through unchanged)."""
    return f"""select file_idx, line_number, line, pre_reason,
        case when pre_reason is null and line_number is not null and file_idx in ({", ".join(map(str, files))})
             and json_valid(line) and left(ltrim(line), 1) = '{{' then line::json end as j
    from {lines}"""


def _exposure_members_sql(key: str, variation: str) -> str:
    """The `experiment_id` and `assignment` members of a mapped exposure, from the SDK key and
    variation through the registry's SDK keys (`mp`, `lv` of `_mapping_joins_sql`)."""
    return (f"'experiment_id', coalesce(mp.experiment_id, {key}), 'assignment', case when {variation} is null "
            f"then null else json_object(coalesce(mp.factor, 'variation'), coalesce(lv.level, {variation})) end")


def _mapping_joins_sql(exposure: str, key: str, variation: str) -> str:
    """The joins of `_exposure_members_sql`: the key's experiment and factor, and the variation's level."""
    return (f"left join {MAPPING_TABLE} mp on {exposure} and mp.sdk_key = {key} and mp.variation is null\n"
            f"left join {MAPPING_TABLE} lv on {exposure} and lv.sdk_key = {key} and lv.variation = {variation}")


def growthbook_sql(lines: str, files: list[int], unit: dict[int, str]) -> str:
    """SELECT (file_idx, line_number, line, pre_reason) of `lines` with the lines of `files` (file
    indexes) rewritten from GrowthBook's tracking shape into contract exposures. `unit[file_idx]`
    is `hash_value` or `user_id` (the source's setting)."""
    by_hash = sql_list([str(i) for i, u in unit.items() if u == "hash_value"] or [""])
    key = _first("experimentId", "experiment_id", "experimentKey", "experiment_key")
    variation = _first("variationId", "variation_id", "variationKey", "variation_key")
    user = _first("userId", "user_id")
    hashed = _first("hashValue", "hash_value")
    ts = _first("timestamp", "ts")
    in_experiment = _first("inExperiment", "in_experiment")
    return f"""
with parsed as (
    {_parsed_sql(lines, files)}
), fields as (
    select *, {key} as k, {variation} as v, {ts} as t, {in_experiment} as in_exp,
        case when list_contains({by_hash}, file_idx::varchar) then coalesce({hashed}, {user})
             else coalesce({user}, {hashed}) end as unit,
        {_first("eventId", "event_id", "messageId")} as given_id,
        {_first("hashAttribute", "hash_attribute")} as hash_attribute,
        {_first("featureId", "feature_id")} as feature_id
    from parsed
)
select f.file_idx, f.line_number,
    case when f.j is null or f.in_exp = 'false' then f.line
         else json_object(
            'event_id', coalesce(f.given_id, 'gb-' || md5(concat_ws(chr(31), f.unit, f.k, f.v, f.t))),
            'event_type', 'exposure',
            'ts', f.t,
            'unit_id', f.unit,
            {_exposure_members_sql("f.k", "f.v")},
            -- the user attributes logged with the call (`attributes`, else `context`) are segments
            'context', json_merge_patch(
                case when json_type(f.j->'$.attributes') = 'OBJECT' then f.j->'$.attributes'
                     when json_type(f.j->'$.context') = 'OBJECT' then f.j->'$.context' else '{{}}'::json end,
                json_object('hash_attribute', f.hash_attribute, 'feature_id', f.feature_id,
                            'sdk_key', f.k, 'variation', f.v))
         )::varchar end as line,
    case when f.j is not null and f.in_exp = 'false' then '{NOT_IN_EXPERIMENT}' else f.pre_reason end as pre_reason
from fields f
{_mapping_joins_sql("f.j is not null", "f.k", "f.v")}
"""


def segment_sql(lines: str, files: list[int]) -> str:
    """SELECT (file_idx, line_number, line, pre_reason) of `lines` with the Segment / RudderStack
    `track` calls of `files` rewritten: the source's exposure event (`Experiment Viewed`,
    properties `experimentId`/`experiment_id` and `variationId`/`variation_id`) into an exposure,
    its mapped track events into metric events; anything else is `unmapped_event`. `messageId` is
    the idempotency key; the unit is `userId` (else `anonymousId`), or `anonymousId` by setting."""
    key = _first("properties.experimentId", "properties.experiment_id")
    variation = _first("properties.variationId", "properties.variation_id")
    return f"""
with parsed as (
    {_parsed_sql(lines, files)}
), fields as (
    select p.*, j->>'$.event' as event, coalesce(j->>'$.type', 'track') as call,
        {key} as k, {variation} as v,
        case when o.unit = 'anonymous_id' then coalesce(j->>'$.anonymousId', j->>'$.userId')
             else coalesce(j->>'$.userId', j->>'$.anonymousId') end as unit,
        coalesce(j->>'$.timestamp', j->>'$.originalTimestamp') as t, j->>'$.receivedAt' as received,
        j->'$.context' as ctx, o.exposure_event
    from parsed p left join {SOURCE_OPTIONS_TABLE} o on o.file_idx = p.file_idx
), kinds as (
    select f.*, m.metric, m.value_path,
        case when f.j is null then null
             when f.call = 'track' and f.event = f.exposure_event then 'exposure'
             when f.call = 'track' and m.metric is not null then 'metric' end as kind
    from fields f
    left join {SOURCE_METRICS_TABLE} m on f.j is not null and m.file_idx = f.file_idx and m.event = f.event
)
select k.file_idx, k.line_number,
    case when k.kind = 'exposure' then json_object(
            'event_id', j->'$.messageId', 'event_type', 'exposure', 'ts', k.t, 'received_at', k.received,
            'unit_id', k.unit, {_exposure_members_sql("k.k", "k.v")},
            'context', k.ctx)::varchar
         when k.kind = 'metric' then json_object(
            'event_id', j->'$.messageId', 'event_type', 'metric', 'ts', k.t, 'received_at', k.received,
            'unit_id', k.unit, 'metric', k.metric,
            'value', case when k.value_path is null then to_json(1) else json_extract(j, k.value_path) end,
            'context', k.ctx)::varchar
         else k.line end as line,
    case when k.j is not null and k.kind is null then '{UNMAPPED_EVENT}' else k.pre_reason end as pre_reason
from kinds k
{_mapping_joins_sql("k.kind = 'exposure'", "k.k", "k.v")}
"""


# the text of an OTLP attribute `a`'s AnyValue (string, int, double or bool)
_ANY_VALUE_TEXT = ("coalesce(a->'$.value'->>'stringValue', a->'$.value'->>'intValue', "
                   "a->'$.value'->>'doubleValue', a->'$.value'->>'boolValue')")


def _attr(name: str) -> str:
    """The AnyValue text of the log record attribute `name` (a constant of this module)."""
    return f"(select {_ANY_VALUE_TEXT} from (select unnest(attrs) as a) where a->>'key' = '{name}' limit 1)"


def otel_sql(lines: str, files: list[int]) -> str:
    """SELECT (file_idx, line_number, line, pre_reason) of `lines` with the OTLP/JSON lines of
    `files` (as an OpenTelemetry Collector's file exporter writes them: `resourceLogs` /
    `scopeLogs` / `logRecords`) expanded into one row per log record: `feature_flag.evaluation`
    events (OpenTelemetry's feature-flag semantic conventions, which OpenFeature follows; the
    deprecated attribute names too) become exposures, mapped event names metric events, others
    `unmapped_event`. In these files `line_number` is the record's number in the file (records in
    file order, a line without records counting one); the physical line and the record's place in
    it are kept in `context` (`otel_line`, `otel_record`), beside the record's attributes other than
    `feature_flag.*` (by their flat keys: `browser.name`), which segments can name."""
    return f"""
with parsed as (
    {_parsed_sql(lines, files)}
), batched as (
    select *, case when j is not null then json_extract(j, '$.resourceLogs[*].scopeLogs[*].logRecords[*]') end as recs
    from parsed
), records as (
    select file_idx, line_number, line, pre_reason, j, unnest(recs) as rec, unnest(range(1, len(recs) + 1)) as rec_idx
    from batched where len(recs) > 0
    union all
    select file_idx, line_number, line,
        case when j is not null then '{NO_LOG_RECORDS}' else pre_reason end, j, null, 0
    from batched where recs is null or len(recs) = 0
), fields as (
    select r.*, json_extract(r.rec, '$.attributes[*]') as attrs from records r
), events as (
    select f.*, o.exposure_event,
        coalesce(f.rec->>'eventName', {_attr("event.name")}) as name,
        {_attr("feature_flag.key")} as k,
        coalesce({_attr("feature_flag.result.variant")}, {_attr("feature_flag.variant")}) as variant,
        {_attr("feature_flag.result.value")} as result_value,
        coalesce({_attr("feature_flag.context.id")}, {_attr("user.id")}) as unit,
        nullif(coalesce(nullif(f.rec->>'timeUnixNano', '0'), f.rec->>'observedTimeUnixNano'), '0') as ns,
        {_attr("feature_flag.provider.name")} as provider, {_attr("feature_flag.set.id")} as set_id,
        {_attr("feature_flag.version")} as flag_version,
        coalesce({_attr("feature_flag.result.reason")}, {_attr("feature_flag.evaluation.reason")}) as eval_reason,
        -- the record's other attributes (`browser.name`, `app.plan`) are its context: segments
        (select json_group_object(a->>'key', {_ANY_VALUE_TEXT}) from (select unnest(f.attrs) as a)
         where not starts_with(a->>'key', 'feature_flag.')) as extra
    from fields f left join {SOURCE_OPTIONS_TABLE} o on o.file_idx = f.file_idx
), kinds as (
    select e.*, m.metric, m.value_path as value_key,
        -- no variant: the value (a string as itself, or JSON-encoded as OpenFeature's tracing hook writes it)
        coalesce(e.variant, case when left(e.result_value, 1) = '"' then json_extract_string(e.result_value, '$')
                                 else e.result_value end) as v,
        strftime(make_timestamp((try_cast(e.ns as hugeint) // 1000)::bigint), '%Y-%m-%dT%H:%M:%S.%fZ') as t,
        case when e.rec is null then null
             when e.name = e.exposure_event then 'exposure'
             when m.metric is not null then 'metric' end as kind
    from events e
    left join {SOURCE_METRICS_TABLE} m on e.rec is not null and m.file_idx = e.file_idx and m.event = e.name
), numbered as (
    select *, case when line_number is null then null
                   else row_number() over (partition by file_idx, line_number is null order by line_number, rec_idx) end
              as record_number
    from kinds
)
select n.file_idx,
    case when n.file_idx in ({", ".join(map(str, files))}) then n.record_number else n.line_number end as line_number,
    case when n.kind = 'exposure' then json_object(
            'event_id', 'otel-' || md5(concat_ws(chr(31), n.unit, n.k, n.v, n.ns)), 'event_type', 'exposure',
            'ts', n.t, 'unit_id', n.unit, {_exposure_members_sql("n.k", "n.v")},
            'context', json_merge_patch(coalesce(n.extra, '{{}}'::json), json_object(
                'otel_line', n.line_number, 'otel_record', n.rec_idx, 'flag_key', n.k, 'variant', n.v,
                'provider', n.provider, 'set_id', n.set_id, 'flag_version', n.flag_version,
                'reason', n.eval_reason)))::varchar
         when n.kind = 'metric' then json_object(
            'event_id', 'otel-' || md5(concat_ws(chr(31), n.unit, n.name, n.ns, n.rec::varchar)), 'event_type', 'metric',
            'ts', n.t, 'unit_id', n.unit, 'metric', n.metric,
            'value', case when n.value_key is null then to_json(1)
                          else (select coalesce(a->'$.value'->'doubleValue', try_cast(a->'$.value'->>'intValue' as double)::json,
                                                a->'$.value'->'stringValue')
                                from (select unnest(n.attrs) as a) where a->>'key' = n.value_key limit 1) end,
            'context', json_object('otel_line', n.line_number, 'otel_record', n.rec_idx))::varchar
         when n.rec is not null then n.rec::varchar
         else n.line end as line,
    case when n.rec is not null and n.kind is null then '{UNMAPPED_EVENT}' else n.pre_reason end as pre_reason
from numbered n
{_mapping_joins_sql("n.kind = 'exposure'", "n.k", "n.v")}
"""
