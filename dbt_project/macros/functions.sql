{#- The project's SQL functions (safe parsers, canonical PII values, the tamper check) are
    created by the bootstrap (ingest/sql/bootstrap/) in the admin-owned schema `loginvault`:
    dbt calls them and cannot replace them. -#}

{% macro loginvault_function(name) -%}
    loginvault.{{ name }}
{%- endmacro %}

{#- The tamper check: refuses (naming the object) when a raw table the transform reads could
    run another role's code in this session (wrong owner or kind, row-level security, policies,
    triggers, rules). It locks them first. A failed on-run-start hook does not stop dbt's
    nodes, so the staging model (the only one reading raw) runs it again as its pre-hook, in
    its own transaction: it fails before reading, and every model after it is skipped. -#}
{% macro loginvault_assert_inputs() -%}
    select {{ loginvault_function('assert_transform_inputs') }}()
{%- endmacro %}

{#- Everything a run needs before its models: inputs checked, keys checked, bookkeeping
    created. dbt-postgres applies the profile's `role` with a SET that its hook runner rolls
    back, so the hook sets it again: what it creates must belong to the transformer, not the
    login. -#}
{% macro loginvault_on_run_start() %}
    {% if target.role %}set role {{ adapter.quote(target.role) }};{% endif %}
    {{ loginvault_assert_inputs() }};
    {{ loginvault_require_keys() }}
    {{ loginvault_create_watermarks() }}
{% endmacro %}

{#- Fail the run at once, with a clear message, when a PII key is missing from the session. -#}
{% macro loginvault_require_keys() %}
do $check$
declare
    setting text;
begin
    foreach setting in array array['loginvault.hmac_key', 'loginvault.encryption_key'] loop
        if octet_length(coalesce(current_setting(setting, true), '')) < 32 then
            raise exception 'PII key % is missing or shorter than 32 bytes: export LOGINVAULT_HMAC_KEY and LOGINVAULT_ENCRYPTION_KEY and run through `make transform` (or eval "$(make -s env)", which sets PGOPTIONS)', setting;
        end if;
    end loop;
end
$check$;
{% endmacro %}
