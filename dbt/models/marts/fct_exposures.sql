-- One row per (experiment, unit): the first level seen per factor makes the cell; flips, devices,
-- hash-version changes and bots are counted and decide whether the unit is analysable.
with first_levels as (
    select
        experiment_id, unit_id, factor, position, level,
        row_number() over (
            partition by experiment_id, unit_id, factor order by ts, event_id
        ) as rn
    from {{ ref('stg_exposure_factors') }}
),

levels_seen as (
    select experiment_id, unit_id, factor, count(distinct level) as n_levels
    from {{ ref('stg_exposure_factors') }}
    group by experiment_id, unit_id, factor
),

flips as (
    select experiment_id, unit_id, max(n_levels) as max_levels_per_factor
    from levels_seen
    group by experiment_id, unit_id
),

cells as (
    select
        experiment_id,
        unit_id,
        {{ ordered_string_agg("factor || '=' || level", '|', 'position') }} as cell_id,
        count(*) as n_factors_seen
    from first_levels
    where rn = 1
    group by experiment_id, unit_id
),

first_event as (
    select
        experiment_id, unit_id, device, platform, country, is_new_user,
        row_number() over (partition by experiment_id, unit_id order by ts, event_id) as rn
    from {{ ref('stg_exposure_factors') }}
),

unit_exposure as (
    select
        experiment_id,
        unit_id,
        min(ts) as first_exposure_at,
        count(distinct device_id) as n_devices,
        count(distinct hash_version) as n_hash_versions,
        max(case when {{ regex_matches('lower(user_agent)', '(bot|crawler|spider|headless|slurp)') }}
                 then 1 else 0 end) as bot_user_agent
    from {{ ref('stg_exposure_factors') }}
    group by experiment_id, unit_id
),

activity as (
    select
        unit_id,
        count(*) * 1.0 / count(distinct cast(ts as date)) as events_per_active_day
    from {{ ref('stg_events') }}
    group by unit_id
),

assembled as (
    select
        u.experiment_id,
        u.unit_id,
        u.experiment_id || ':' || u.unit_id as exposure_key,
        u.first_exposure_at,
        c.cell_id,
        c.n_factors_seen,
        r.n_factors,
        f.max_levels_per_factor > 1 as is_flipped,
        u.n_devices,
        u.n_hash_versions,
        (u.bot_user_agent = 1 or a.events_per_active_day > {{ var('bot_events_per_day') }}) as is_bot,
        c.n_factors_seen < r.n_factors as is_incomplete,
        r.flip_policy,
        fe.device,
        fe.platform,
        fe.country,
        fe.is_new_user
    from unit_exposure as u
    inner join cells as c on c.experiment_id = u.experiment_id and c.unit_id = u.unit_id
    inner join flips as f on f.experiment_id = u.experiment_id and f.unit_id = u.unit_id
    inner join first_event as fe
        on fe.experiment_id = u.experiment_id and fe.unit_id = u.unit_id and fe.rn = 1
    inner join {{ source('raw', 'registry_experiments') }} as r on r.experiment_id = u.experiment_id
    left join activity as a on a.unit_id = u.unit_id
)

select
    *,
    case
        when is_bot then 'bot'
        when is_incomplete then 'incomplete_assignment'
        when is_flipped and flip_policy = 'exclude' then 'flipped'
    end as exclusion_reason,
    not (is_bot or is_incomplete or (is_flipped and flip_policy = 'exclude')) as is_analysable
from assembled
