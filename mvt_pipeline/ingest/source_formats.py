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

import duckdb

from ..registry import Registry
from .validation_sql import sql_list

MAPPING_TABLE = "_ingest_sdk_keys"
NOT_IN_EXPERIMENT = "not_in_experiment"


def _first(*paths: str) -> str:
    """The text of the first present, non-null member (`->>` gives a number's text, too)."""
    return "coalesce(" + ", ".join(f"j->>'$.{p}'" for p in paths) + ")"


def sdk_key_rows(registry: Registry) -> list[tuple[str, str, str, str | None, str | None]]:
    """(sdk key, experiment id, factor, variation, level) rows: one per mapped variation, and one
    with variation NULL per key (the experiment and factor of any variation)."""
    rows = []
    for e in registry.experiments:
        keyed = [(f.sdk_key, f) for f in e.factors if f.sdk_key]
        if not keyed and len(e.factors) == 1:
            keyed = [(e.id, e.factors[0])]  # the SDK key is the experiment id
        for key, f in keyed:
            rows.append((key, e.id, f.name, None, None))
            rows += [(key, e.id, f.name, variation, level) for variation, level in (f.variations or {}).items()]
    return sorted(rows, key=lambda r: tuple("" if x is None else x for x in r))


def create_mapping(conn: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    """The SDK key table the mapping joins (registry values, bound as parameters)."""
    conn.execute(f"create or replace temp table {MAPPING_TABLE} (sdk_key varchar, experiment_id varchar, "
                 "factor varchar, variation varchar, level varchar)")
    rows = sdk_key_rows(registry)
    if rows:
        conn.executemany(f"insert into {MAPPING_TABLE} values (?, ?, ?, ?, ?)", rows)


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
    select file_idx, line_number, line, pre_reason,
        case when pre_reason is null and file_idx in ({", ".join(map(str, files)) or "null"})
             and json_valid(line) and left(ltrim(line), 1) = '{{' then line::json end as j
    from {lines}
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
            'experiment_id', coalesce(m.experiment_id, f.k),
            'assignment', case when f.v is null then null
                               else json_object(coalesce(m.factor, 'variation'), coalesce(lv.level, f.v)) end,
            'context', json_object('hash_attribute', f.hash_attribute, 'feature_id', f.feature_id,
                                   'sdk_key', f.k, 'variation', f.v)
         )::varchar end as line,
    case when f.j is not null and f.in_exp = 'false' then '{NOT_IN_EXPERIMENT}' else f.pre_reason end as pre_reason
from fields f
left join {MAPPING_TABLE} m on f.j is not null and m.sdk_key = f.k and m.variation is null
left join {MAPPING_TABLE} lv on f.j is not null and lv.sdk_key = f.k and lv.variation = f.v
"""
