{#- Masking rules: one place each. Keys come from session settings (PGOPTIONS), never from
    compiled SQL: only the names of the settings appear here. -#}

{#- The canonical form a value is tokenized and encrypted in: host(inet) for an IP (valid
    IPv4/IPv6 only, else NULL), the space-trimmed string for a device id. Defined once, as
    loginvault.canonical_pii (ingest/sql/bootstrap/; the recovery functions use it too), which the
    planner inlines. -#}
{% macro pii_canonical(expr, kind) -%}
    {%- if kind in ('ip', 'device_id') -%}
        {{ loginvault_function('canonical_pii') }}('{{ kind }}', {{ expr }})
    {%- else -%}
        {{ exceptions.raise_compiler_error("pii_canonical: unknown kind '" ~ kind ~ "' (ip or device_id)") }}
    {%- endif -%}
{%- endmacro %}

{#- Keyed HMAC-SHA256, hex: 64 chars, deterministic, not enumerable without the key. -#}
{% macro pii_hmac(canonical_expr) -%}
    encode(hmac({{ canonical_expr }}, current_setting('loginvault.hmac_key'), 'sha256'), 'hex')
{%- endmacro %}

{% macro pii_token(expr, kind) -%}
    {{ pii_hmac(pii_canonical(expr, kind)) }}
{%- endmacro %}

{#- AES-256 with s2k-mode=1: the key is random, not a password, so iterated S2K only burns CPU. -#}
{% macro pii_encrypt(expr) -%}
    pgp_sym_encrypt({{ expr }}, current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1')
{%- endmacro %}
