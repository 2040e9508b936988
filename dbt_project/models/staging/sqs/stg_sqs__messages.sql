{#- Each SQS message once: its first delivery in the loads taken since this model's last run,
    unless an earlier run staged it. Kept for good and without PII, so that deduplication by
    message_id still works after retention has dropped the raw bodies and staged payloads. -#}
{{ config(
    incremental_strategy='append',
    pre_hook="{{ loginvault_assert_inputs() }}",
    post_hook="{{ loginvault_set_watermark() }}",
    indexes=[
        {'columns': ['message_id'], 'unique': True},
        {'columns': ['_transformed_at']},
        {'columns': ['_dlt_load_id']},
    ],
) }}

with deliveries as (

    select
        r.message_id,
        r.sent_at,
        r.received_at,
        r.receive_count,
        r._dlt_load_id,
        r._dlt_id
    from {{ source('sqs', 'login_events') }} as r
    where
        r._dlt_load_id in (
            select l.load_id
            from {{ ref('stg_sqs__loads') }} as l
            {%- if is_incremental() %}
                where {{ loginvault_after_watermark('l._transformed_at') }}
            {%- endif %}
        )
        {%- if is_incremental() %}
            and not exists (
                select 1 from {{ this }} as t
                where t.message_id = r.message_id
            )
        {%- endif %}

),

first_delivery as (

    select distinct on (message_id) *
    from deliveries
    order by message_id asc, received_at asc, receive_count asc, _dlt_id asc

)

select
    message_id,
    sent_at,
    received_at,
    receive_count,
    _dlt_load_id,
    _dlt_id,
    '{{ run_started_at }}'::timestamptz as _transformed_at
from first_delivery
