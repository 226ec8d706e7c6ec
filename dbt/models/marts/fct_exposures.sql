-- One row per (experiment, unit): first exposure time, the cell (first level seen per factor, in
-- registry factor order), flips (distinct cells seen), devices, hash-version changes and the bot
-- flag; `first_exposure_event_id` (its context gives the segments: fct_unit_segments);
-- `is_analysable` / `exclusion_reason` apply the exclusion rules (bots, incomplete
-- assignment, flips under the experiment's flip_policy: 'exclude' drops them, 'first_cell' keeps
-- them in their first cell). Incremental by unit (macros/unit_changes.sql): a unit's row needs
-- only its own exposures and events, so a night recomputes the units whose events changed.
{{ unit_model_config() }}
with unit_exposures as (
    select * from {{ ref('stg_exposure_factors') }} where {{ in_changed_units('unit_id') }}
),

-- Aggregates, no window over every exposure row (such a sort spills at scale): the first level of a
-- factor is the level of its earliest (ts, event_id) row, picked by first_by.
per_factor as (
    select
        experiment_id, unit_id, factor, position,
        count(distinct level) as n_levels,
        {{ first_by('level', ['ts', 'event_id']) }} as first_level
    from unit_exposures
    group by experiment_id, unit_id, factor, position
),

cells as (
    select
        experiment_id,
        unit_id,
        {{ ordered_string_agg("factor || '=' || first_level", '|', 'position') }} as cell_id,
        count(*) as n_factors_seen,
        max(n_levels) as max_levels_per_factor,
        -- combinations of the levels seen: the cells a per-factor exposure stream may have shown
        cast(round(exp(sum(ln(n_levels)))) as integer) as level_combinations
    from per_factor
    group by experiment_id, unit_id
),

-- Whole-cell exposure events: each carries a complete cell, so distinct cells are countable
-- exactly. Only a unit that saw two levels of some factor can have seen two cells: the others
-- count one cell (coalesce below), so only the flipped units' events are strung together.
event_cells as (
    select
        fe.experiment_id, fe.unit_id, fe.event_id,
        {{ ordered_string_agg("fe.factor || '=' || fe.level", '|', 'fe.position') }} as event_cell
    from unit_exposures as fe
    inner join {{ source('raw', 'registry_experiments') }} as r on r.experiment_id = fe.experiment_id
    inner join cells as c
        on c.experiment_id = fe.experiment_id and c.unit_id = fe.unit_id and c.max_levels_per_factor > 1
    where fe.n_event_factors = r.n_factors
    group by fe.experiment_id, fe.unit_id, fe.event_id
),

whole_cells as (
    select experiment_id, unit_id, count(distinct event_cell) as n_whole_cells
    from event_cells
    group by experiment_id, unit_id
),

partial_units as (
    select fe.experiment_id, fe.unit_id, count(*) as n_partial_rows
    from unit_exposures as fe
    inner join {{ source('raw', 'registry_experiments') }} as r on r.experiment_id = fe.experiment_id
    where fe.n_event_factors < r.n_factors
    group by fe.experiment_id, fe.unit_id
),

unit_exposure as (
    select
        experiment_id,
        unit_id,
        min(ts) as first_exposure_at,
        max(ts) as last_exposure_at,
        count(distinct event_id) as n_exposure_events,
        count(distinct device_id) as n_devices,
        count(distinct hash_version) as n_hash_versions,
        max(case when {{ regex_matches('lower(user_agent)', var('bot_user_agent_pattern')) }}
                 then 1 else 0 end) as bot_user_agent,
        -- the first exposure event's own fields (the rows of one event share them), in one aggregate
        {{ first_by(struct_of(['event_id', 'device', 'platform', 'country', 'is_new_user']),
                    ['ts', 'event_id']) }} as first_event
    from unit_exposures
    group by experiment_id, unit_id
),

-- hash-version changes along the unit's exposures in time order; a unit with one version has none
hash_changes as (
    select experiment_id, unit_id, sum(changed) as n_hash_version_changes
    from (
        select
            experiment_id, unit_id,
            case when hash_version <> lag(hash_version) over (
                     partition by experiment_id, unit_id order by ts, event_id)
                 then 1 else 0 end as changed
        from (
            select distinct ev.experiment_id, ev.unit_id, ev.event_id, ev.ts, ev.hash_version
            from unit_exposures as ev
            inner join unit_exposure as u
                on u.experiment_id = ev.experiment_id and u.unit_id = ev.unit_id and u.n_hash_versions > 1
        ) as ev
    ) as x
    group by experiment_id, unit_id
),

activity as (
    select
        unit_id,
        cast(count(*) as double) / count(distinct cast(ts as date)) as events_per_active_day
    from {{ ref('stg_events') }}
    where {{ in_changed_units('unit_id') }}
    group by unit_id
),

assembled as (
    select
        u.experiment_id,
        u.unit_id,
        u.experiment_id || ':' || u.unit_id as exposure_key,
        u.first_exposure_at,
        u.first_event.event_id as first_exposure_event_id,
        u.last_exposure_at,
        {{ add_days('u.first_exposure_at', 'r.attribution_window_days') }} as attribution_end_at,
        u.n_exposure_events,
        c.cell_id,
        c.n_factors_seen,
        r.n_factors,
        case when p.unit_id is null then coalesce(w.n_whole_cells, 1)
             else greatest(coalesce(w.n_whole_cells, 1), c.level_combinations) end as n_cells_seen,
        c.max_levels_per_factor > 1 as is_flipped,
        u.n_devices,
        u.n_hash_versions,
        coalesce(h.n_hash_version_changes, 0) as n_hash_version_changes,
        a.events_per_active_day,
        u.bot_user_agent = 1 as is_bot_user_agent,
        coalesce(a.events_per_active_day > {{ var('bot_events_per_day') }}, false) as is_bot_event_rate,
        (u.bot_user_agent = 1 or coalesce(a.events_per_active_day > {{ var('bot_events_per_day') }}, false))
            as is_bot,
        c.n_factors_seen < r.n_factors as is_incomplete,
        r.flip_policy,
        u.first_event.device as device,
        u.first_event.platform as platform,
        u.first_event.country as country,
        u.first_event.is_new_user as is_new_user
    from unit_exposure as u
    inner join cells as c on c.experiment_id = u.experiment_id and c.unit_id = u.unit_id
    inner join {{ source('raw', 'registry_experiments') }} as r on r.experiment_id = u.experiment_id
    left join whole_cells as w on w.experiment_id = u.experiment_id and w.unit_id = u.unit_id
    left join partial_units as p on p.experiment_id = u.experiment_id and p.unit_id = u.unit_id
    left join hash_changes as h on h.experiment_id = u.experiment_id and h.unit_id = u.unit_id
    left join activity as a on a.unit_id = u.unit_id
)

select
    *,
    case
        when is_bot then 'bot'
        when is_incomplete then 'incomplete_assignment'
        when is_flipped and flip_policy = 'exclude' then 'flipped'
    end as exclusion_reason,
    not (is_bot or is_incomplete or (is_flipped and flip_policy = 'exclude')) as is_analysable,
    '{{ invocation_id }}' as dbt_batch_id
from assembled
