{#
  The night being built: var('as_of') (YYYY-MM-DD) means "the data that had arrived by the end of
  that day", so every model reads only raw rows with dt <= as_of. Without the var (a bare
  `dbt build`) every ingested day counts. The Dagster asset hands the night over in the environment
  (MVT_AS_OF), read only while executing: a --vars that changes every night would make dbt parse
  the whole project again each night (partial parsing keys on the vars), ~2.3 s of every night.
#}

{% macro as_of_date() -%}
    {%- set value = var('as_of', none) -%}
    {%- if (value is none or value == '') and execute -%}
        {%- set value = env_var('MVT_AS_OF', '') -%}
    {%- endif -%}
    {%- if value is none or value == '' -%}
        {{ return('9999-12-31') }}
    {%- endif -%}
    {%- set value = value | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error("var 'as_of' must be a date YYYY-MM-DD, got: " ~ (value | tojson)) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{# A SQL date literal of the night (9999-12-31 without an as_of). #}
{% macro as_of_literal() -%}
    cast('{{ as_of_date() }}' as date)
{%- endmacro %}

{# The predicate that keeps a raw row of the night: its dump partition `dt` is not after as_of. #}
{% macro arrived_by_as_of(dt_column='dt') -%}
    {{ dt_column }} <= {{ as_of_literal() }}
{%- endmacro %}

{# Where stg_events records the as_of of its last build (read by its next incremental run). #}
{% macro as_of_state_relation(relation) -%}
    {{ sibling_relation(relation, 'as_of') }}
{%- endmacro %}

{% macro record_as_of(relation) -%}
    create or replace table {{ as_of_state_relation(relation) }} as select {{ as_of_literal() }} as as_of
{%- endmacro %}
