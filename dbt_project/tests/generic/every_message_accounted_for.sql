{#- Catches lost or double-counted messages: every staged message must be in exactly one of
    user_logins and rejected_login_events, and neither may hold a message that was not staged.
    (count(user_logins) + count(rejected) = count(distinct raw message_id).) -#}
{% test every_message_accounted_for(model) %}

with outcomes as (

    select message_id, 'user_logins' as outcome from {{ ref('user_logins') }}
    union all
    select message_id, 'rejected_login_events' from {{ ref('rejected_login_events') }}

),

counted as (

    select
        coalesce(s.message_id, o.message_id) as message_id,
        count(o.outcome) as outcomes,
        count(s.message_id) as staged
    from {{ ref('stg_sqs__login_events') }} as s
    full outer join outcomes as o on o.message_id = s.message_id
    group by 1

)

select message_id, outcomes, staged
from counted
where outcomes <> 1 or staged = 0

{% endtest %}
