{#- An incremental append into a table partitioned by the UTC day of `partition_by` (a
    timestamptz column), so that a day of it can be dropped whole (retention). Created on the
    first run (with a default partition, and the configured indexes on the parent), appended to
    on every run, the day partitions of the new rows made first
    (loginvault.ensure_day_partitions), for rows received in the accepted window only
    (loginvault_received_in_window): any other goes to the default partition. A full refresh empties it and keeps its partitions.
    The model tells first runs from later ones with loginvault_incremental(), not
    is_incremental(), which answers for the `incremental` materialization only. -#}
{% materialization loginvault_day_partitioned, adapter='postgres' -%}
    {%- set existing_relation = load_cached_relation(this) -%}
    {%- set target_relation = this.incorporate(type='table') -%}
    {%- set temp_relation = make_temp_relation(target_relation) -%}
    {%- set column = config.require('partition_by') -%}
    {%- set grant_config = config.get('grants') -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {% do run_query(get_create_table_as_sql(True, temp_relation, sql)) %}
    {% if existing_relation is none %}
        {% call statement('create_partitioned') %}
            create table {{ target_relation }} (like {{ temp_relation }}) partition by range ({{ column }});
            create table {{ target_relation.schema }}.{{ adapter.quote(target_relation.identifier ~ '_default') }}
                partition of {{ target_relation }} default;
        {% endcall %}
        {% do create_indexes(target_relation) %}
    {% elif should_full_refresh() %}
        {% call statement('empty') %}
            truncate {{ target_relation }}
        {% endcall %}
    {% endif %}
    {% call statement('partitions') %}
        select {{ loginvault_function('ensure_day_partitions') }}(
            '{{ target_relation }}'::regclass,
            min(({{ column }} at time zone 'UTC')::date),
            max(({{ column }} at time zone 'UTC')::date)
        )
        from {{ temp_relation }}
        where {{ loginvault_received_in_window(column) }}
        having count({{ column }}) > 0
    {% endcall %}
    {% call statement('main') %}
        insert into {{ target_relation }} select * from {{ temp_relation }}
    {% endcall %}

    {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke(existing_relation, should_full_refresh())) %}
    {% do persist_docs(target_relation, model) %}
    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {% do adapter.commit() %}
    {{ run_hooks(post_hooks, inside_transaction=False) }}
    {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}

{#- Whether the model adds to rows of earlier runs: not on its first run, nor on a full refresh. -#}
{% macro loginvault_incremental() -%}
    {{ return(execute and not should_full_refresh() and load_cached_relation(this) is not none) }}
{%- endmacro %}
