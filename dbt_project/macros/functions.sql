{#- Safe parsers, created on every run start (idempotent). PostgreSQL 15 has no
    pg_input_is_valid(), so each catches its own error: a malformed body or IP becomes NULL,
    never a failed run. Catching an error opens a subtransaction, which parallel query
    forbids: hence `parallel unsafe`. -#}

{% macro loginvault_function(name) -%}
    staging.loginvault_{{ name }}
{%- endmacro %}

{#- Everything a run needs before its models: keys checked, parsers and bookkeeping created.
    dbt-postgres applies the profile's `role` with a SET that its hook runner rolls back, so
    the hook sets it again: what it creates must belong to the transformer, not the login. -#}
{% macro loginvault_on_run_start() %}
    {% if target.role %}set role {{ adapter.quote(target.role) }};{% endif %}
    {{ loginvault_require_keys() }}
    {{ loginvault_create_functions() }}
    {{ loginvault_create_watermarks() }}
{% endmacro %}

{% macro loginvault_create_functions() %}
-- jsonb of a body, or NULL when it is not JSON or holds what jsonb cannot store.
create or replace function {{ loginvault_function('try_jsonb') }}(body text) returns jsonb
language plpgsql immutable strict parallel unsafe as $fn$
begin
    return body::jsonb;
exception when others then
    return null;
end
$fn$;

-- Why a body does not parse: unsupported_json_escape (\u0000; jsonb cannot store it) or
-- invalid_json (syntax, lone surrogates, nesting too deep, numbers beyond numeric's range);
-- NULL when it parses.
create or replace function {{ loginvault_function('json_error') }}(body text) returns text
language plpgsql immutable strict parallel unsafe as $fn$
begin
    perform body::jsonb;
    return null;
exception
    when untranslatable_character then
        -- jsonb stops at the first \u0000, before it has seen the rest: the body is
        -- invalid_json if it still does not parse with every \u0000 escape replaced (escaped
        -- backslashes first, so that "\\u0000" stays text).
        begin
            perform regexp_replace(regexp_replace(body, '\\\\', 'x', 'g'), '\\u0000', 'x', 'g')::jsonb;
            return 'unsupported_json_escape';
        exception when others then
            return 'invalid_json';
        end;
    when others then return 'invalid_json';
end
$fn$;

-- inet of a single IPv4/IPv6 address, or NULL: no masks, zone ids, spaces, or IPv4 octets
-- with leading zeros (ambiguous: octal to some parsers). A dotted IPv4 part must be four
-- octets at the end: inet itself also takes "1.2.3.4." and "::1.2.3" (as ::1.2.3.0).
create or replace function {{ loginvault_function('try_inet') }}(value text) returns inet
language plpgsql immutable strict parallel unsafe as $fn$
begin
    if value !~ '^[0-9A-Fa-f:.]+$'
        or (value ~ '\.' and (
            value !~ '(^|:)([0-9]{1,3}\.){3}[0-9]{1,3}$' or value ~ '(^|[:.])0[0-9]+(\.|$)'
        )) then
        return null;
    end if;
    begin
        return value::inet;
    exception when others then
        return null;
    end;
end
$fn$;
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
