-- Telemetry quality per dt partition (the day a dump arrived; days up to var('as_of')), for the data checks and reports:
-- lines accepted and quarantined, events first seen (winning copies) and duplicate copies, ids with
-- conflicting payloads, collector lag (received_at - ts) and late events, and loss detected from
-- per-device `seq` gaps (a gap is charged to the partition of the event that reveals it; a device
-- whose first delivered seq exceeds var('seq_first_value') lost the ones before; losses after a
-- device's last delivered event cannot be seen). Full rebuild: plain aggregates over raw.events
-- plus one window over the devices' sequence numbers; cheap next to the marts.
-- Sequence arithmetic cannot overflow, whatever old rows hold: only seqs in ingestion's contract
-- [0, var('seq_max_value') = 2^53 - 1] are sequenced (rows ingested before that bound may hold any
-- BIGINT; they still count as events, not as sequenced), and the gaps are computed and summed as
-- dbt's portable `type_numeric()` (exact decimal, 20+ integer digits), never as BIGINT.
with lines as (
    select dt, count(*) as n_lines, count(distinct source) as n_sources
    from {{ source('raw', 'events') }}
    where {{ arrived_by_as_of('dt') }}
    group by dt
),

quarantined as (
    select dt, count(*) as n_quarantined
    from {{ source('raw', 'quarantine') }}
    where {{ arrived_by_as_of('dt') }}
    group by dt
),

events as (
    select
        dt,
        count(*) as n_events,
        sum(case when payload_conflict then 1 else 0 end) as n_payload_conflicts,
        sum(case when event_type = 'exposure' then 1 else 0 end) as n_exposure_events,
        sum(case when event_type = 'metric' then 1 else 0 end) as n_metric_events,
        count(distinct unit_id) as n_units,
        avg({{ seconds_between('ts', 'received_at') }}) as lag_avg_seconds,
        percentile_cont(0.5) within group (order by {{ seconds_between('ts', 'received_at') }}) as lag_p50_seconds,
        percentile_cont(0.95) within group (order by {{ seconds_between('ts', 'received_at') }}) as lag_p95_seconds,
        max({{ seconds_between('ts', 'received_at') }}) as lag_max_seconds,
        sum(case when {{ seconds_between('ts', 'received_at') }} > {{ var('late_lag_hours') }} * 3600
                 then 1 else 0 end) as n_late,
        sum(case when received_at is null then 1 else 0 end) as n_without_received_at
    from {{ ref('stg_events') }}
    group by dt
),

device_seq as (
    select
        dt,
        seq - coalesce(lag(seq) over (partition by device_id order by seq),
                       cast({{ var('seq_first_value') }} - 1 as {{ dbt.type_numeric() }})) - 1 as gap
    from (
        select device_id, cast(seq as {{ dbt.type_numeric() }}) as seq, min(dt) as dt
        from {{ ref('stg_events') }}
        where device_id is not null and seq is not null
          and seq >= 0 and seq <= {{ var('seq_max_value', 9007199254740991) }}
        group by device_id, seq
    ) as s
),

loss as (
    select
        dt,
        count(*) as n_sequenced,
        sum(case when gap > 0 then gap else 0 end) as n_lost
    from device_seq
    group by dt
),

days as (
    select dt from lines
    union
    select dt from quarantined
)

select
    d.dt as day,
    coalesce(l.n_lines, 0) as n_lines,
    coalesce(q.n_quarantined, 0) as n_quarantined,
    coalesce(l.n_sources, 0) as n_sources,
    coalesce(e.n_events, 0) as n_events,
    coalesce(l.n_lines, 0) - coalesce(e.n_events, 0) as n_duplicate_lines,
    coalesce(e.n_payload_conflicts, 0) as n_payload_conflicts,
    coalesce(e.n_exposure_events, 0) as n_exposure_events,
    coalesce(e.n_metric_events, 0) as n_metric_events,
    coalesce(e.n_units, 0) as n_units,
    e.lag_avg_seconds,
    e.lag_p50_seconds,
    e.lag_p95_seconds,
    e.lag_max_seconds,
    coalesce(e.n_late, 0) as n_late,
    coalesce(s.n_sequenced, 0) as n_sequenced,
    coalesce(s.n_lost, 0) as n_lost,
    case when coalesce(s.n_sequenced, 0) + coalesce(s.n_lost, 0) > 0
         then cast(coalesce(s.n_lost, 0) as double) / (s.n_sequenced + s.n_lost) end as loss_rate,
    case when coalesce(l.n_lines, 0) > 0
         then cast(l.n_lines - coalesce(e.n_events, 0) as double) / l.n_lines end as duplicate_rate
from days as d
left join lines as l on l.dt = d.dt
left join quarantined as q on q.dt = d.dt
left join events as e on e.dt = d.dt
left join loss as s on s.dt = d.dt
