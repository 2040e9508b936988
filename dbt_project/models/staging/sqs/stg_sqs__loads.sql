{#- The completed dlt loads (raw._dlt_loads, status 0) that a run took: the next model stages
    their messages. Retention drops a day of raw only when every load in it is here, taken by a
    run whose marts are built (raw.apply_retention). No PII. -#}
{{ config(
    incremental_strategy='append',
    pre_hook="{{ loginvault_assert_inputs() }}",
    indexes=[
        {'columns': ['load_id'], 'unique': True},
        {'columns': ['_transformed_at']},
    ],
) }}

select
    l.load_id,
    l.inserted_at as completed_at,
    '{{ run_started_at }}'::timestamptz as _transformed_at
from {{ source('sqs', '_dlt_loads') }} as l
where
    l.status = 0
    {%- if is_incremental() %}
        and not exists (
            select 1 from {{ this }} as t
            where t.load_id = l.load_id
        )
    {%- endif %}
