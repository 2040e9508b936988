{#- The PII vault: each distinct (kind, canonical value) once, encrypted once (AES-256,
    key from the session), keyed by its token. Read only through the audited recovery functions. -#}
{{ config(
    post_hook="{{ loginvault_set_watermark() }}",
) }}

with valid as (

    select v.*
    from {{ ref('int_login_events_validated') }} as v
    where
        v.rejection_reason is null
        {%- if loginvault_incremental() %}
            and {{ loginvault_after_watermark('v._transformed_at') }}
        {%- endif %}

),

cleartext as (

    select
        'ip' as kind,
        {{ pii_canonical('ip', 'ip') }} as value,
        sent_at
    from valid
    where ip is not null
    union all
    select
        'device_id' as kind,
        {{ pii_canonical('device_id', 'device_id') }} as value,
        sent_at
    from valid
    where device_id is not null

),

distinct_values as (

    select
        kind,
        value,
        min(sent_at) as first_seen_at
    from cleartext
    group by kind, value

),

tokenized as (

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
