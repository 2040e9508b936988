{#- "major[.minor[.patch]]", each component 0..999 → major*1,000,000 + minor*1,000 + patch
    ("2.3.0" → 2003000, "0.96" → 96000, "2.00" → 2000000); anything else → NULL.
    Components are compared as numeric so that long digit runs can never overflow. -#}
{% macro parse_app_version(expr) -%}
    case
        when {{ expr }} ~ '^[0-9]+(\.[0-9]+){0,2}$'
            and split_part({{ expr }}, '.', 1)::numeric < 1000
            and coalesce(nullif(split_part({{ expr }}, '.', 2), '')::numeric, 0) < 1000
            and coalesce(nullif(split_part({{ expr }}, '.', 3), '')::numeric, 0) < 1000
            then (
                split_part({{ expr }}, '.', 1)::numeric * 1000000
                + coalesce(nullif(split_part({{ expr }}, '.', 2), '')::numeric, 0) * 1000
                + coalesce(nullif(split_part({{ expr }}, '.', 3), '')::numeric, 0)
            )::integer
    end
{%- endmacro %}
