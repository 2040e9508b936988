{#- The first statement of every model's and every data test's transaction: the declared
    relations the transformer owns, locked and checked (loginvault.checked_transform_relations,
    ingest/schema/repeatable/21_shapes.sql). This session holds the keys, and dbt's login could
    otherwise add code to its tables between `loginvault check` and a statement of the build (a
    CHECK of pg_notify(current_setting(…)) is code enough). `target`: the model's own table,
    locked to be emptied when a full refresh rebuilds it. -#}
{% macro loginvault_lock_relations(target=none) -%}
    {%- if target is not none -%}
        {%- set targets = "array[format('%I.%I', '" ~ target.schema ~ "', '" ~ target.identifier ~ "')]" -%}
        {%- set mode = 'ACCESS EXCLUSIVE' if should_full_refresh() else 'ROW EXCLUSIVE' -%}
    {%- else -%}
        {%- set targets = "array[]::text[]" -%}
        {%- set mode = 'ROW EXCLUSIVE' -%}
    {%- endif -%}
    select {{ loginvault_function('checked_transform_relations') }}({{ targets }}, '{{ mode }}')
{%- endmacro %}

{#- Every data test's query comes after that statement, in the same transaction: what it reads
    cannot change between the check and the read. (dbt's own test SQL otherwise.) -#}
{% macro postgres__get_test_sql(main_sql, fail_calc, warn_if, error_if, limit) -%}
    {{ loginvault_lock_relations() }};
    {{ default__get_test_sql(main_sql, fail_calc, warn_if, error_if, limit) }}
{%- endmacro %}
