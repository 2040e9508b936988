{#- The first delivery of each SQS message, with its body parsed safely to jsonb.
    Incremental: reads only raw rows of completed dlt loads not seen before, and only
    message ids not staged before, so replays never make a second row. -#}
{{ config(
    incremental_strategy='append',
    pre_hook="{{ loginvault_assert_inputs() }}",
    indexes=[
        {'columns': ['message_id'], 'unique': True},
        {'columns': ['_dlt_load_id']},
        {'columns': ['_transformed_at']},
    ],
) }}

with deliveries as (

    select
        r.message_id,
        r.body,
        r.sent_at,
        r.received_at,
        r.receive_count,
        r._dlt_load_id,
        r._dlt_id
    from {{ source('sqs', 'login_events') }} as r
    where
        r._dlt_load_id in (
            select l.load_id
            from {{ source('sqs', '_dlt_loads') }} as l
            where
                l.status = 0
                {%- if is_incremental() %}
                    and not exists (
                        select 1 from {{ this }} as t
                        where t._dlt_load_id = l.load_id
                    )
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

),

parsed as (

    select
        message_id,
        sent_at,
        received_at,
        receive_count,
        _dlt_load_id,
        {{ loginvault_function('try_jsonb') }}(body) as payload,
        body
    from first_delivery

)

select
    message_id,
    sent_at,
    received_at,
    receive_count,
    payload,
    case
        when payload is null then {{ loginvault_function('json_error') }}(body)
    end as parse_error,
    _dlt_load_id,
    '{{ run_started_at }}'::timestamptz as _transformed_at
from parsed
