{#
  Adapter-specific SQL lives behind these dispatched macros so the models stay portable
  (docs/architecture.md §1). Add `<adapter>__<macro>` implementations to run on another warehouse.
#}

{% macro json_text(json_expr, key_expr) -%}
    {{ return(adapter.dispatch('json_text', 'mvt_pipeline')(json_expr, key_expr)) }}
{%- endmacro %}
{% macro default__json_text(json_expr, key_expr) -%}
    json_extract_string({{ json_expr }}, '$.' || {{ key_expr }})
{%- endmacro %}

{#- a JSONPath held in a column (registry_experiment_segments builds them, each key quoted) -#}
{% macro json_path_text(json_expr, path_expr) -%}
    {{ return(adapter.dispatch('json_path_text', 'mvt_pipeline')(json_expr, path_expr)) }}
{%- endmacro %}
{% macro default__json_path_text(json_expr, path_expr) -%}
    json_extract_string({{ json_expr }}, {{ path_expr }})
{%- endmacro %}

{% macro json_field(json_expr, key) -%}
    {{ return(adapter.dispatch('json_field', 'mvt_pipeline')(json_expr, key)) }}
{%- endmacro %}
{% macro default__json_field(json_expr, key) -%}
    json_extract_string({{ json_expr }}, '$.{{ key }}')
{%- endmacro %}

{#- Several top-level fields of one JSON text, parsed once: `json_fields` makes a value holding them
    all, `json_fields_get` reads one back (same keys, same order). DuckDB: one json_extract_string
    over a list of paths (a list; 3x faster than a call per field); elsewhere a struct of json_field. -#}
{% macro json_fields(json_expr, keys) -%}
    {{ return(adapter.dispatch('json_fields', 'mvt_pipeline')(json_expr, keys)) }}
{%- endmacro %}
{% macro default__json_fields(json_expr, keys) -%}
    named_struct({% for k in keys %}'{{ k }}', {{ json_field(json_expr, k) }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{% macro duckdb__json_fields(json_expr, keys) -%}
    json_extract_string({{ json_expr }}, [{% for k in keys %}'$.{{ k }}'{{ ', ' if not loop.last }}{% endfor %}])
{%- endmacro %}
{% macro json_fields_get(fields_expr, keys, key) -%}
    {{ return(adapter.dispatch('json_fields_get', 'mvt_pipeline')(fields_expr, keys, key)) }}
{%- endmacro %}
{% macro default__json_fields_get(fields_expr, keys, key) -%}
    {{ fields_expr }}.{{ key }}
{%- endmacro %}
{% macro duckdb__json_fields_get(fields_expr, keys, key) -%}
    {{ fields_expr }}[{{ keys.index(key) + 1 }}]
{%- endmacro %}

{% macro add_days(ts_expr, days_expr) -%}
    {{ return(adapter.dispatch('add_days', 'mvt_pipeline')(ts_expr, days_expr)) }}
{%- endmacro %}
{% macro default__add_days(ts_expr, days_expr) -%}
    ({{ ts_expr }} + ({{ days_expr }}) * interval '1 day')
{%- endmacro %}

{% macro ordered_string_agg(expr, sep, order_by) -%}
    {{ return(adapter.dispatch('ordered_string_agg', 'mvt_pipeline')(expr, sep, order_by)) }}
{%- endmacro %}
{% macro default__ordered_string_agg(expr, sep, order_by) -%}
    listagg({{ expr }}, '{{ sep }}') within group (order by {{ order_by }})
{%- endmacro %}
{% macro duckdb__ordered_string_agg(expr, sep, order_by) -%}
    string_agg({{ expr }}, '{{ sep }}' order by {{ order_by }})
{%- endmacro %}

{#- the value of `expr` on the row that sorts first by the `order_by` columns (a NULL there is kept):
    an aggregate, so picking a first row costs a hash group-by, not a sort of every row -#}
{% macro first_by(expr, order_by) -%}
    {{ return(adapter.dispatch('first_by', 'mvt_pipeline')(expr, order_by)) }}
{%- endmacro %}
{% macro default__first_by(expr, order_by) -%}
    min_by({{ expr }}, struct({{ order_by | join(', ') }}))
{%- endmacro %}
{% macro duckdb__first_by(expr, order_by) -%}
    arg_min_null({{ expr }}, ({{ order_by | join(', ') }}))
{%- endmacro %}

{#- a struct of the named columns, each field named as its column (read back as `x.column`) -#}
{% macro struct_of(columns) -%}
    {{ return(adapter.dispatch('struct_of', 'mvt_pipeline')(columns)) }}
{%- endmacro %}
{% macro default__struct_of(columns) -%}
    named_struct({% for c in columns %}'{{ c }}', {{ c }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{% macro duckdb__struct_of(columns) -%}
    struct_pack({% for c in columns %}{{ c }} := {{ c }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro regex_matches(expr, pattern) -%}
    {{ return(adapter.dispatch('regex_matches', 'mvt_pipeline')(expr, pattern)) }}
{%- endmacro %}
{% macro default__regex_matches(expr, pattern) -%}
    regexp_like({{ expr }}, '{{ pattern }}')
{%- endmacro %}
{% macro duckdb__regex_matches(expr, pattern) -%}
    regexp_matches({{ expr }}, '{{ pattern }}')
{%- endmacro %}

{% macro hash_text(expr) -%}
    {{ return(adapter.dispatch('hash_text', 'mvt_pipeline')(expr)) }}
{%- endmacro %}
{% macro default__hash_text(expr) -%}
    {{ dbt.hash(expr) }}
{%- endmacro %}

{# Seconds from `start_expr` to `end_expr` as a double (interval arithmetic differs per warehouse). #}
{% macro seconds_between(start_expr, end_expr) -%}
    {{ return(adapter.dispatch('seconds_between', 'mvt_pipeline')(start_expr, end_expr)) }}
{%- endmacro %}
{% macro default__seconds_between(start_expr, end_expr) -%}
    extract(epoch from ({{ end_expr }} - {{ start_expr }}))
{%- endmacro %}
{% macro duckdb__seconds_between(start_expr, end_expr) -%}
    (date_diff('microsecond', {{ start_expr }}, {{ end_expr }}) / 1e6)
{%- endmacro %}

{# A bookkeeping table beside a model (`<model>__<suffix>`, same schema): as_of and unit-change state. #}
{% macro sibling_relation(relation, suffix) -%}
    {{ return(relation.incorporate(path={'identifier': relation.identifier ~ '__' ~ suffix})) }}
{%- endmacro %}

{# That table if it exists in the warehouse, else none. #}
{% macro existing_sibling_relation(relation, suffix) -%}
    {%- set wanted = sibling_relation(relation, suffix) -%}
    {{ return(adapter.get_relation(wanted.database, wanted.schema, wanted.identifier)) }}
{%- endmacro %}

{# The rows of a batch the incremental stg_events deletes after delete+insert (tombstones). #}
{% macro tombstone_cleanup(relation) -%}
    delete from {{ relation }} where event_type is null
{%- endmacro %}

{# The one rule for a value that held PII: ingestion replaced it by `[redacted:<kind>]`. #}
{% macro is_redacted(expr) -%}
    {{ expr }} like '%[redacted:%'
{%- endmacro %}

{#- ---------------------------------------------------------------------------------------------
    Apache Spark (MVT_WAREHOUSE=spark, docs/scale-out.md). dbt-spark turns ANSI mode off: a bad
    cast gives NULL there where DuckDB raises, so no model casts a value that can fail (ingestion
    has typed every raw column; the casts left are of values already valid). A ratio of counts is
    `cast(a as double) / b`: Spark divides decimals (`a * 1.0 / b`) to 6 decimal places.
--------------------------------------------------------------------------------------------- -#}
{% macro spark__json_text(json_expr, key_expr) -%}
    get_json_object({{ json_expr }}, concat('$.', {{ key_expr }}))
{%- endmacro %}
{#- the registry's paths are DuckDB's `$."a"."b"` (names allow no quote): Spark reads `$['a']['b']` -#}
{% macro spark__json_path_text(json_expr, path_expr) -%}
    get_json_object({{ json_expr }}, regexp_replace({{ path_expr }}, '\\."([^"]*)"', '[\'$1\']'))
{%- endmacro %}
{% macro spark__json_field(json_expr, key) -%}
    get_json_object({{ json_expr }}, '$.{{ key }}')
{%- endmacro %}
{#- dbt.dateadd on Spark goes through to_unix_timestamp (whole seconds): the milliseconds of an
    exposure time would be lost, so a day is added as an interval -#}
{% macro spark__add_days(ts_expr, days_expr) -%}
    timestampadd(DAY, {{ days_expr }}, {{ ts_expr }})
{%- endmacro %}
{#- dbt.listagg on Spark ignores the order (collect_list): sort (order, value) pairs instead -#}
{% macro spark__ordered_string_agg(expr, sep, order_by) -%}
    array_join(transform(array_sort(collect_list(named_struct('k', {{ order_by }}, 'v', {{ expr }}))), x -> x.v), '{{ sep }}')
{%- endmacro %}
{% macro spark__seconds_between(start_expr, end_expr) -%}
    ((unix_micros({{ end_expr }}) - unix_micros({{ start_expr }})) / 1e6)
{%- endmacro %}
