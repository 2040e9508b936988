{#- The analysts' table: one row per valid login message, ip and device id replaced by keyed
    tokens (same value → same token). The 7 columns of the original DDL come first. -#}
{{ config(
    post_hook="{{ loginvault_set_watermark() }}",
) }}
-- depends_on: {{ ref('int_login_events_validated') }} (the same rows, inlined: macros/validated.sql)

select
    v.user_id::varchar(128) as user_id,
    v.device_type::varchar(32) as device_type,
    ({{ pii_token('v.ip', 'ip') }})::varchar(256) as masked_ip,
    ({{ pii_token('v.device_id', 'device_id') }})::varchar(256) as masked_device_id,
    v.locale::varchar(32) as locale,
    {{ parse_app_version('v.app_version_text') }} as app_version,
    (v.sent_at at time zone 'UTC')::date as create_date,
    v.message_id,
    v.app_version_text
from ({{ loginvault_validated_rows() }}) as v
where
    v.rejection_reason is null
    {%- if loginvault_incremental() %}
        and {{ loginvault_new_messages('v') }}
    {%- endif %}
{# In the order of the table's unique index (message_id): a bulk build appends to it. #}
order by v.message_id
