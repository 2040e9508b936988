{#- Catches lost or double-counted messages: every staged message must be in exactly one of
    user_logins and rejected_login_events (checked per message for the messages staged since
    the last build whose tests all passed), and count(user_logins) + count(rejected) must equal
    the number of staged messages, i.e. of distinct raw message ids (checked on every build;
    stg_sqs__messages keeps every message id, also after retention dropped the payloads).
    Returns message ids and counts only. -#}
{% test every_message_accounted_for(model) %}

with staged as (

    select s.message_id
    from {{ ref('stg_sqs__messages') }} as s
    where {{ loginvault_untested('s._transformed_at') }}

),

per_message as (

    select
        s.message_id,
        (select count(*) from {{ ref('user_logins') }} as u where u.message_id = s.message_id)
        + (select count(*) from {{ ref('rejected_login_events') }} as r where r.message_id = s.message_id)
        as outcomes
    from staged as s

),

totals as (

    select
        (select count(*) from {{ ref('user_logins') }})
        + (select count(*) from {{ ref('rejected_login_events') }}) as outcomes,
        (select count(*) from {{ ref('stg_sqs__messages') }}) as staged

)

select
    p.message_id,
    p.outcomes,
    1 as staged
from per_message as p
where p.outcomes <> 1
union all
select
    null as message_id,
    t.outcomes,
    t.staged
from totals as t
where t.outcomes <> t.staged

{% endtest %}
