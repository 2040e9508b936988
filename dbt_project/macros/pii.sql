{#- Masking rules: one place each. Keys come from session settings (PGOPTIONS), never from
    compiled SQL: only the names of the settings appear here. -#}

{#- The canonical form a value is tokenized and encrypted in: host(inet) for an IP (valid
    IPv4/IPv6 only, else NULL), the space-trimmed string for a device id. Defined once, as
    loginvault.canonical_pii (ingest/schema/repeatable/; the recovery functions use it too), which the
    planner inlines. -#}
{% macro pii_canonical(expr, kind) -%}
    {%- if kind in ('ip', 'device_id') -%}
        {{ loginvault_function('canonical_pii') }}('{{ kind }}', {{ expr }})
    {%- else -%}
        {{ exceptions.raise_compiler_error("pii_canonical: unknown kind '" ~ kind ~ "' (ip or device_id)") }}
    {%- endif -%}
{%- endmacro %}

{#- Keyed HMAC-SHA256, hex: 64 chars, deterministic, not enumerable without the key. The input
    is kind || ':' || value, so that an IP and a device id with the same string get different
    tokens, unless the active HMAC key version is one registered over older tokens (its
    kind_separated is false until its rotation): loginvault.pii_token (ingest/schema/repeatable/).
    `kind_expr` is SQL: a quoted literal or a column. -#}
{% macro pii_hmac(canonical_expr, kind_expr) -%}
    {{ loginvault_function('pii_token') }}(
        {{ kind_expr }}, {{ canonical_expr }}, current_setting('loginvault.hmac_key'),
        {{ loginvault_active_key('hmac', 'kind_separated') }}
    )
{%- endmacro %}

{% macro pii_token(expr, kind) -%}
    {{ pii_hmac(pii_canonical(expr, kind), "'" ~ kind ~ "'") }}
{%- endmacro %}

{#- A column of the active key version of `kind` (pii.key_versions), as a scalar subquery: the
    planner evaluates it once per statement. -#}
{% macro loginvault_active_key(kind, column='version') -%}
    (select k.{{ column }} from pii.key_versions as k where k.kind = '{{ kind }}' and k.state = 'active')
{%- endmacro %}

{#- AES-256 with s2k-mode=1: the key is random, not a password, so iterated S2K only burns CPU. -#}
{% macro pii_encrypt(expr) -%}
    pgp_sym_encrypt({{ expr }}, current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1')
{%- endmacro %}

{#- 'true' when a subject was erased (pii.erased_subjects): only then does staging hash each new
    message's user id to keep theirs out. Read when the model is compiled. -#}
{% macro loginvault_erasures() -%}
    {%- if execute and run_query("select exists (select 1 from pii.erased_subjects)").columns[0].values()[0] -%}
        true
    {%- endif -%}
{%- endmacro %}
