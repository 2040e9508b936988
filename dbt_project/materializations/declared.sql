{#- An incremental append into a table the bootstrap created from its declared shape
    (ingest/schema/repeatable/21_shapes.sql): the marts and the vault. They live in schemas where no
    workload may create anything (definer functions resolve names there), so dbt never creates,
    renames or drops them: it checks the model against its contract, adds the new rows, and on
    a full refresh empties the table first. The model tells first runs from later ones with
    loginvault_incremental(). -#}
{% materialization loginvault_declared, adapter='postgres' -%}
    {%- set existing_relation = load_cached_relation(this) -%}
    {%- if existing_relation is none -%}
        {{ exceptions.raise_compiler_error(
            this ~ " does not exist: the bootstrap creates it from its declared shape (`loginvault bootstrap`);"
            ~ " dbt only fills it"
        ) }}
    {%- endif -%}
    {%- set target_relation = this.incorporate(type='table') -%}
    {%- set grant_config = config.get('grants') -%}

    {{ run_hooks(pre_hooks, inside_transaction=False) }}
    {{ run_hooks(pre_hooks, inside_transaction=True) }}

    {%- if config.get('contract').enforced -%}
        {{ get_assert_columns_equivalent(sql) }}
    {%- endif -%}
    {% if should_full_refresh() %}
        {% call statement('empty') %}
            truncate {{ target_relation }}
        {% endcall %}
    {% endif %}
    {#- Straight from the model's query: the rows are written once, not to a temporary table first. -#}
    {%- set columns = adapter.get_columns_in_relation(target_relation) | map(attribute='quoted') | join(', ') -%}
    {% call statement('main') %}
        insert into {{ target_relation }} ({{ columns }})
        select {{ columns }} from (
            {{ sql }}
        ) as dbt_model
    {% endcall %}

    {% do apply_grants(target_relation, grant_config, should_revoke=True) %}
    {% do persist_docs(target_relation, model) %}
    {{ run_hooks(post_hooks, inside_transaction=True) }}
    {% do adapter.commit() %}
    {{ run_hooks(post_hooks, inside_transaction=False) }}
    {{ return({'relations': [target_relation]}) }}
{%- endmaterialization %}
