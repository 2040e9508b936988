{#- A folder's +schema is the schema itself (staging, pii, the mart schema), not
    "<target schema>_<custom schema>" as in dbt's default. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
