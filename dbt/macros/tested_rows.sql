{#
  Which rows a data test reads (docs/architecture.md, "Incremental nights").

  An incremental model's rows carry `dbt_batch_id`, the invocation that wrote them. In `dbt build`
  a test of such a model checks the rows this build wrote: the rows it kept were checked by the
  build that wrote them, so a night's tests cost what its new data costs, not the whole history.
  `dbt test` on its own, a full refresh (every row is new) and every table-materialized model are
  checked whole. A test's own `where` config still applies (dbt's behaviour).
#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if not where and execute and flags.WHICH == 'build' and tested_model_is_incremental() -%}
        {%- set where = "dbt_batch_id = '" ~ invocation_id ~ "'" -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return("(select * from " ~ relation ~ " where " ~ where ~ ") dbt_subquery") -%}
    {%- endif -%}
    {%- do return(relation) -%}
{%- endmacro %}

{% macro tested_model_is_incremental() -%}
    {%- set node = graph.nodes.get(model.attached_node) if model.attached_node else none -%}
    {%- do return(node is not none and node.resource_type == 'model'
                  and node.config.materialized == 'incremental') -%}
{%- endmacro %}
