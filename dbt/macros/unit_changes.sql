{#
  Incremental marts by unit (docs/architecture.md, "Incremental nights").

  Every per-unit model (stg_exposure_factors, fct_exposures, int_unit_attributes, fct_outcomes,
  int_unit_metrics, int_unit_slo_hourly) depends only on its unit's deduplicated events and on the
  registry. So:
    * stg_events logs, after each build, the units whose rows it wrote or removed (the old unit of
      a replaced or vanished id too) in `<stg_events>__unit_changes` (unit_id, change_seq), one
      change_seq per build;
    * each per-unit model keeps `<model>__state` (consumed_seq, fingerprint): on the next build it
      deletes and recomputes only the units logged after consumed_seq, reading its inputs for those
      units alone;
    * the fingerprint hashes the registry tables, the vars the models read and the models' SQL: when
      it differs (or the state is missing, or the table is new or fully refreshed) the model
      recomputes every unit. A change to a macro alone is not seen: `dbt build --full-refresh`.
  A model that failed or was not selected keeps its consumed_seq, so its next build catches up on
  every change since: a crashed night cannot leave a unit stale. Experiment-wide steps (winsorize
  caps, the top-K ranking of segment values, the per-cell sums) stay full rebuilds over the small
  per-unit tables (fct_unit_metrics, fct_unit_segments, agg_*), so they are exact by construction.
  On warehouses without DELETE on tables (plain Spark) the models are plain tables (unit_model_config).
#}

{%- macro unit_changes_relation() -%}
    {{ return(sibling_relation(ref('stg_events'), 'unit_changes')) }}
{%- endmacro %}

{# post-hooks of stg_events: log the units of this build's rows (before the tombstones go) #}
{% macro create_unit_changes_log() -%}
    create table if not exists {{ sibling_relation(this, 'unit_changes') }} (unit_id varchar, change_seq bigint)
{%- endmacro %}

{% macro record_unit_changes() -%}
    {%- set log = sibling_relation(this, 'unit_changes') -%}
    insert into {{ log }} (unit_id, change_seq)
    select distinct unit_id, (select coalesce(max(change_seq), 0) + 1 from {{ log }})
    from (
        select unit_id from {{ this }} where dbt_batch_id = '{{ invocation_id }}'
        union all
        select prior_unit_id from {{ this }} where dbt_batch_id = '{{ invocation_id }}'
    ) as changed
    where unit_id is not null
{%- endmacro %}

{#- What the per-unit models read besides events: a change recomputes every unit. -#}
{% macro unit_inputs_fingerprint_sql() -%}
    {%- set parts = [] -%}
    {%- for table in ['registry_experiments', 'registry_factors', 'registry_metrics',
                      'registry_experiment_metrics', 'registry_experiment_segments'] -%}
        {%- do parts.append("(select coalesce(string_agg(cast(t as varchar), '|' order by cast(t as varchar)), '') from "
                            ~ source('raw', table) ~ " as t)") -%}
    {%- endfor -%}
    {%- set vars_text = [var('bot_events_per_day'), var('bot_user_agent_pattern'),
                         var('segment_value_max_chars')] | join('|') -%}
    {#- the models' own SQL too: an upgrade that changes a model recomputes every unit once -#}
    {%- set code = [] -%}
    {%- if execute -%}  {#- the graph is empty while dbt parses -#}
        {%- for node in graph.nodes.values() | sort(attribute='unique_id') if node.resource_type == 'model' -%}
            {%- do code.append(node.unique_id ~ '\n' ~ node.raw_code) -%}
        {%- endfor -%}
    {%- endif -%}
    md5({{ parts | join(" || '#' || ") }} || '#' || '{{ vars_text | replace("'", "''") }}'
        || '#' || '{{ local_md5(code | join('\n')) }}')
{%- endmacro %}

{#-
  The units this build recomputes: {'all': true} or {'all': false, 'after': a, 'upto': b} (the
  change_seq range). Read at compile time and again by the pre-hook; nothing writes the log or the
  state in between (stg_events is upstream of every per-unit model).
-#}
{% macro unit_scope() -%}
    {%- set log = unit_changes_relation() -%}  {#- the ref is seen at parse time: a dependency -#}
    {%- if not execute or not is_incremental() -%}
        {{ return({'all': true}) }}
    {%- endif -%}
    {%- set state = existing_sibling_relation(this, 'state') -%}
    {%- if state is none -%}
        {{ return({'all': true}) }}
    {%- endif -%}
    {%- set row = run_query(
        "select (select max(consumed_seq) from " ~ state ~ "),"
        ~ " (select max(fingerprint) from " ~ state ~ ") = " ~ unit_inputs_fingerprint_sql() ~ ","
        ~ " (select coalesce(max(change_seq), 0) from " ~ unit_changes_relation() ~ ")").rows[0] -%}
    {%- if row[0] is none or not row[1] -%}
        {{ return({'all': true}) }}
    {%- endif -%}
    {{ return({'all': false, 'after': row[0] | int, 'upto': row[2] | int}) }}
{%- endmacro %}

{#- `unit_expr in (the changed units)`, or true when every unit is recomputed -#}
{% macro in_changed_units(unit_expr) -%}
    {%- set scope = unit_scope() -%}
    {%- if scope['all'] -%}
        true
    {%- else -%}
        {{ unit_expr }} in (select unit_id from {{ unit_changes_relation() }}
                            where change_seq > {{ scope['after'] }} and change_seq <= {{ scope['upto'] }})
    {%- endif -%}
{%- endmacro %}

{# pre-hook: drop the rows about to be recomputed (the model appends their new rows) #}
{% macro delete_changed_units() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ in_changed_units('unit_id') }}
    {%- endif -%}
{%- endmacro %}

{# post-hook: what this build consumed #}
{% macro record_unit_state() -%}
    create or replace table {{ sibling_relation(this, 'state') }} as
    select (select coalesce(max(change_seq), 0) from {{ unit_changes_relation() }}) as consumed_seq,
           {{ unit_inputs_fingerprint_sql() }} as fingerprint
{%- endmacro %}

{#- the config of a per-unit model: incremental where tables take DELETE (DuckDB), else a table -#}
{% macro unit_model_config() -%}
    {%- if target.type == 'duckdb' -%}
        {{ config(materialized='incremental', incremental_strategy='append',
                  on_schema_change='append_new_columns',
                  pre_hook=["{{ delete_changed_units() }}"],
                  post_hook=["{{ record_unit_state() }}"]) }}
    {%- else -%}
        {{ config(materialized='table') }}
    {%- endif -%}
{%- endmacro %}

{#- stg_events: merged by event_id where tables take DELETE (DuckDB), else a table rebuilt each night
    (no unit-change log then: every per-unit model is a table too) -#}
{% macro events_model_config() -%}
    {%- if target.type == 'duckdb' -%}
        {{ config(materialized='incremental', unique_key='event_id', incremental_strategy='delete+insert',
                  on_schema_change='append_new_columns',
                  post_hook=["{{ create_unit_changes_log() }}", "{{ record_unit_changes() }}",
                             "{{ tombstone_cleanup(this) }}", "{{ record_as_of(this) }}"]) }}
    {%- else -%}
        {{ config(materialized='table') }}
    {%- endif -%}
{%- endmacro %}
