{#
  MVT_WAREHOUSE=spark (docs/scale-out.md): the raw tables are Parquet folders that ingestion writes
  (`<table>/dt=YYYY-MM-DD/` for events and quarantine, one folder for each registry table), registered
  here as external tables of schema `raw` before every dbt command: dropped and created again, so a
  table's columns follow its files and a new day's folder is seen (RECOVER PARTITIONS). Dropping an
  external table leaves its files alone. DuckDB's raw tables are written by ingestion itself: nothing to do.
#}
{% macro register_raw_sources() -%}
    {{ return(adapter.dispatch('register_raw_sources', 'mvt_pipeline')()) }}
{%- endmacro %}
{% macro default__register_raw_sources() -%}
{%- endmacro %}
{% macro spark__register_raw_sources() -%}
    {%- if execute -%}
        {%- set root = env_var('MVT_RAW_PARQUET_DIR') -%}
        {%- do run_query('create database if not exists raw') -%}
        {%- for node in graph.sources.values() | sort(attribute='name') if node.source_name == 'raw' -%}
            {%- set relation = 'raw.' ~ adapter.quote(node.name) -%}
            {%- do run_query('drop table if exists ' ~ relation) -%}
            {%- do run_query("create table " ~ relation ~ " using parquet location '" ~ root ~ "/" ~ node.name ~ "'") -%}
            {%- if node.meta.get('partitioned_by_dt') -%}
                {%- do run_query('alter table ' ~ relation ~ ' recover partitions') -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{%- endmacro %}
