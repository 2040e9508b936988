{#- The PII vault: each distinct (kind, canonical value) once, tokenized once and encrypted
    once (AES-256, key from the session), keyed by its token. Read only through the audited
    recovery functions. -#}
{{ config(
    post_hook="{{ loginvault_set_watermark() }}",
) }}
-- depends_on: {{ ref('int_login_events_validated') }} (the same rows, inlined: macros/validated.sql)

with valid as (

    select v.*
    from ({{ loginvault_validated_rows() }}) as v
    where
        v.rejection_reason is null
        {%- if loginvault_incremental() %}
            and {{ loginvault_after_watermark('v._transformed_at') }}
        {%- endif %}

),

cleartext as (

    -- One pass over the valid rows: each row's ip and device id, canonical.
    select
        x.kind,
        x.value,
        v.sent_at
    from valid as v
    cross join
        lateral (
            values
            ('ip', {{ pii_canonical('v.ip', 'ip') }}),
            ('device_id', {{ pii_canonical('v.device_id', 'device_id') }})
        ) as x (kind, value)
    where x.value is not null

),

distinct_values as (

    select
        kind,
        value,
        min(sent_at) as first_seen_at
    from cleartext
    group by kind, value

),

-- Materialized: one HMAC per distinct value, read by the new-token check and the output.
tokenized as materialized (

    select
        kind,
        value,
        first_seen_at,
        {{ pii_hmac('value', 'kind') }} as token
    from distinct_values

)

select
    tk.token::varchar(64) as token,
    tk.kind::varchar(16) as kind,
    {{ pii_encrypt('tk.value') }} as ciphertext,
    tk.first_seen_at,
    {{ loginvault_active_key('hmac') }} as hmac_key_version,
    {{ loginvault_active_key('encryption') }} as encryption_key_version
from tokenized as tk
{%- if loginvault_incremental() %}
    where not exists (
        select 1 from {{ this }} as t
        where t.token = tk.token and t.kind = tk.kind
    )
{%- endif %}
{# In the order of the table's unique index (token, kind): a bulk build appends to the index
    instead of writing its pages at random (most of a first build's time at 1,000,000 messages). #}
order by tk.token, tk.kind
