{#- One row per message that could not enter user_logins, with the reason; no payload values. -#}
{{ config(
    post_hook="{{ loginvault_set_watermark() }}",
) }}
-- depends_on: {{ ref('int_login_events_validated') }} (the same rows, inlined: macros/validated.sql)

select
    v.message_id,
    v.rejection_reason as reason,
    v.sent_at,
    v.received_at
from ({{ loginvault_validated_rows() }}) as v
where
    v.rejection_reason is not null
    {%- if loginvault_incremental() %}
        and {{ loginvault_new_messages('v') }}
    {%- endif %}
