{#- One row per message that could not enter user_logins, with the reason; no payload values. -#}
{{ config(
    post_hook="{{ loginvault_set_watermark() }}",
) }}

select
    v.message_id,
    v.rejection_reason as reason,
    v.sent_at,
    v.received_at
from {{ ref('int_login_events_validated') }} as v
where
    v.rejection_reason is not null
    {%- if loginvault_incremental() %}
        and {{ loginvault_new_messages('v') }}
    {%- endif %}
