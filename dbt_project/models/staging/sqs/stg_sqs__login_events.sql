{#- The payload of each newly staged message: its first delivery's body parsed safely to
    jsonb. Cleartext PII: partitioned by the UTC day of received_at, like raw, so that
    retention drops whole days of it; what must outlive the window (the message ids) is in
    stg_sqs__messages. A message of an erased subject (pii.erased_subjects) keeps no payload and
    is rejected: erased_subject. -#}
{{ config(
    materialized='loginvault_day_partitioned',
    partition_by='received_at',
    pre_hook="{{ loginvault_assert_inputs() }}",
    post_hook="{{ loginvault_set_watermark() }}",
    indexes=[
        {'columns': ['message_id']},
        {'columns': ['_dlt_load_id']},
        {'columns': ['_transformed_at']},
    ],
) }}

with messages as (

    select m.*
    from {{ ref('stg_sqs__messages') }} as m
    {%- if loginvault_incremental() %}
        where {{ loginvault_after_watermark('m._transformed_at') }}
    {%- endif %}

),

parsed as (

    -- One raw row per message, even when a loader wrote two alike in every joined column
    -- (message id, _dlt_id, received_at, load): the body sorting first.
    select distinct on (m.message_id)
        m.message_id,
        m.sent_at,
        m.received_at,
        m.receive_count,
        m._dlt_load_id,
        r.body,
        {{ loginvault_function('try_jsonb') }}(r.body) as payload
    from messages as m
    -- On message_id first: its index finds the one or two deliveries of a message, where the
    -- load's index would give every row of the load for each message.
    inner join {{ source('sqs', 'login_events') }} as r
        on
            m.message_id = r.message_id
            and m._dlt_id = r._dlt_id
            and m.received_at = r.received_at
            and m._dlt_load_id = r._dlt_load_id
    order by m.message_id, r.body

),

checked as (

    select
        *,
        {%- if loginvault_erasures() | trim == 'true' %}
            payload ->> 'user_id' is not null and exists (
                select 1 from pii.erased_subjects as e
                where e.subject_token = {{ pii_hmac("payload ->> 'user_id'", "'user_id'") }}
            ) as erased
        {%- else %}
            false as erased
        {%- endif %}
    from parsed

)

select
    message_id,
    sent_at,
    received_at,
    receive_count,
    case when not erased then payload end as payload,
    case
        when erased then 'erased_subject'
        when payload is null then {{ loginvault_function('json_error') }}(body)
    end as parse_error,
    _dlt_load_id,
    '{{ run_started_at }}'::timestamptz as _transformed_at
from checked
