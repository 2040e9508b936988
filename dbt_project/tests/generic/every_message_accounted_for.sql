{#- Catches lost, invented or double-counted messages, against raw's completed loads:
    - load_not_taken: a completed dlt load (raw._dlt_loads, status 0) recorded more than ten
      minutes before this run started is not in stg_sqs__loads (staging skipped it; the margin
      covers the loader's clock and a load that commits while the run starts);
    - raw_not_accounted: a message of a completed load that staging took is not in exactly one
      of user_logins and rejected_login_events (a staging model that drops or doubles messages);
    - staged_not_accounted: a staged message (stg_sqs__messages keeps every message id, also
      after retention dropped the raw bodies) is not in exactly one of the two marts;
    - not_staged: a mart row whose message was never staged.
    Scope: every message (the default), or in the incremental scope the loads and messages
    staged since the last build whose tests all passed (load_not_taken and not_staged always
    read everything: _dlt_loads is small, the mart probes are index look-ups). When every
    message is checked, the marts' outcomes are counted in one pass each and joined, instead of
    two index look-ups per message. Returns message
    or load ids and counts only. -#}
{% test every_message_accounted_for(model) %}
    {%- set no_mark = loginvault_mark('tests_passed') | trim == '-infinity' -%}
    {%- set every_message = loginvault_test_scope() == 'all' or no_mark -%}

with taken as (

    select l.load_id
    from {{ ref('stg_sqs__loads') }} as l
    where {{ loginvault_untested('l._transformed_at') }}

),

raw_messages as (

    select distinct r.message_id
    from {{ source('sqs', 'login_events') }} as r
    inner join taken as t on t.load_id = r._dlt_load_id

),

staged as (

    select s.message_id
    from {{ ref('stg_sqs__messages') }} as s
    where {{ loginvault_untested('s._transformed_at') }}

),

outcomes as (

    select u.message_id from {{ ref('user_logins') }} as u
    union all
    select r.message_id from {{ ref('rejected_login_events') }} as r

),

counted as (

{%- if every_message %}
    -- Every message is checked: each mart's outcomes counted once per message, hash-joined.
    select
        m.message_id,
        m.source,
        coalesce(o.outcomes, 0) as outcomes
    from (
        select rm.message_id, 'raw' as source from raw_messages as rm
        union all
        select st.message_id, 'staged' as source from staged as st
    ) as m
    left join (
        select x.message_id, count(*) as outcomes
        from outcomes as x
        group by x.message_id
    ) as o on o.message_id = m.message_id
{%- else %}
    -- The messages staged since the last tested build: index look-ups in the marts.
    select
        m.message_id,
        m.source,
        (select count(*) from {{ ref('user_logins') }} as u where u.message_id = m.message_id)
        + (select count(*) from {{ ref('rejected_login_events') }} as r where r.message_id = m.message_id)
        as outcomes
    from (
        select rm.message_id, 'raw' as source from raw_messages as rm
        union all
        select st.message_id, 'staged' as source from staged as st
    ) as m
{%- endif %}

)

select
    'load_not_taken' as failure,
    l.load_id as id,
    0 as outcomes
from {{ source('sqs', '_dlt_loads') }} as l
where
    l.status = 0
    and l.inserted_at < '{{ run_started_at }}'::timestamptz - interval '10 minutes'
    and not exists (select 1 from {{ ref('stg_sqs__loads') }} as t where t.load_id = l.load_id)

union all

select
    c.source || '_not_accounted' as failure,
    c.message_id as id,
    c.outcomes
from counted as c
where c.outcomes <> 1

union all

select
    'not_staged' as failure,
    o.message_id as id,
    1 as outcomes
from outcomes as o
where not exists (select 1 from {{ ref('stg_sqs__messages') }} as s where s.message_id = o.message_id)

{% endtest %}
