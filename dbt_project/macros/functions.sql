{#- The project's SQL functions (safe parsers, canonical PII values, the tamper check) are
    created by the bootstrap (ingest/schema/repeatable/) in the admin-owned schema `loginvault`:
    dbt calls them and cannot replace them. -#}

{% macro loginvault_function(name) -%}
    loginvault.{{ name }}
{%- endmacro %}

{#- The tamper check: refuses (naming the object) when a raw table the transform reads could
    run another role's code in this session (wrong owner or kind, row-level security, policies,
    triggers, rules); it locks them first. And the key check: the session's keys are the
    registered active versions (registered on the first build), no HMAC rotation is
    unfinished. A failed on-run-start hook does not stop dbt's nodes, so the staging model (the
    root of every model, and the only one reading raw) runs both again as its pre-hook: it
    fails before reading, and every model after it is skipped. `source freshness` reads raw's
    load times only: its hook checks the inputs without the keys (its CronJob has none). -#}
{% macro loginvault_assert_inputs(keys=true) -%}
    select {{ loginvault_function('assert_transform_inputs') }}(){% if keys %}, pii.check_keys(true){% endif %}
{%- endmacro %}

{#- Everything a run needs before its models: inputs checked, keys checked, bookkeeping
    created. dbt-postgres applies the profile's `role` with a SET that its hook runner rolls
    back, so the hook sets it again: what it creates must belong to the transformer, not the
    login. -#}
{% macro loginvault_on_run_start() %}
    {% if target.role %}set role {{ adapter.quote(target.role) }};{% endif %}
    {{ loginvault_assert_inputs(keys=flags.WHICH != 'freshness') }};
    {{ loginvault_create_watermarks() }}
    {{ loginvault_make_partitions() }}
{% endmacro %}

{#- raw's day partitions a week ahead (and yesterday's): a load never meets a day without one. -#}
{% macro loginvault_make_partitions() %}
select raw.ensure_partitions(
    ((now() at time zone 'UTC')::date - 1), ((now() at time zone 'UTC')::date + 7)
);
{% endmacro %}

{#- Whether a received_at is one the pipeline takes: finite, within [now - 400 days, now + 1 day].
    Any other (a hostile raw row) makes no day partition and is rejected:
    received_at_out_of_range. -#}
{% macro loginvault_received_in_window(column) -%}
    coalesce({{ column }} >= now() - interval '400 days' and {{ column }} < now() + interval '1 day', false)
{%- endmacro %}
