{#- Every staged message with its fields extracted and, when it cannot enter the mart, the
    first validation rule it breaks (rejection_reason; NULL = valid): the rules and reasons are
    listed in models/intermediate/_intermediate__models.yml. The SQL of the view
    int_login_events_validated, which the marts, the vault and the tests inline rather than read:
    the view belongs to dbt's login, which could replace it between the build that made it and a
    read by a session that holds the keys (macros/locks.sql). Inlined, the marts' filter on the
    rows staged after their watermark still reaches the staging index. -#}
{% macro loginvault_validated_rows() %}
with fields as (

    select
        message_id,
        sent_at,
        received_at,
        _transformed_at,
        parse_error,
        jsonb_typeof(payload) as payload_type,
        jsonb_typeof(payload -> 'user_id') as user_id_type,
        jsonb_typeof(payload -> 'device_type') as device_type_type,
        jsonb_typeof(payload -> 'ip') as ip_type,
        jsonb_typeof(payload -> 'locale') as locale_type,
        jsonb_typeof(payload -> 'device_id') as device_id_type,
        jsonb_typeof(payload -> 'app_version') as app_version_type,
        payload ->> 'user_id' as user_id,
        payload ->> 'device_type' as device_type,
        payload ->> 'ip' as ip,
        payload ->> 'locale' as locale,
        payload ->> 'device_id' as device_id,
        payload ->> 'app_version' as app_version_text
    from {{ ref('stg_sqs__login_events') }}

),

checked as (

    select
        *,
        case
            when parse_error = 'erased_subject' then parse_error
            when not {{ loginvault_received_in_window('received_at') }} then 'received_at_out_of_range'
            when parse_error is not null then parse_error
            when payload_type <> 'object' then 'not_an_object'
            when user_id_type is null or user_id_type = 'null' then 'user_id_missing'
            when user_id_type <> 'string' then 'user_id_not_string'
            when btrim(user_id) = '' then 'user_id_empty'
            when char_length(user_id) > 128 then 'user_id_too_long'
            when device_type_type not in ('string', 'null') then 'device_type_not_string'
            when char_length(device_type) > 32 then 'device_type_too_long'
            when locale_type not in ('string', 'null') then 'locale_not_string'
            when char_length(locale) > 32 then 'locale_too_long'
            when ip_type not in ('string', 'null') then 'ip_not_string'
            when ip is not null and {{ pii_canonical('ip', 'ip') }} is null then 'ip_invalid'
            when device_id_type not in ('string', 'null') then 'device_id_not_string'
            when device_id is not null and btrim(device_id) = '' then 'device_id_empty'
            when char_length(device_id) > 256 then 'device_id_too_long'
        end as rejection_reason
    from fields

)

select
    message_id,
    sent_at,
    received_at,
    _transformed_at,
    rejection_reason,
    user_id,
    device_type,
    ip,
    locale,
    device_id,
    app_version_text
from checked
{% endmacro %}
