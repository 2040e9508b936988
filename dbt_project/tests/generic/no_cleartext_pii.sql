{#- Catches cleartext PII in an analyst-visible model, keyed by message_id:
    - a column of a row holding an ip or device_id (as sent, or canonical) of its own message
      (a masking rule bypassed: the value copied instead of tokenized);
    - a column of `masked_columns` holding any message's ip or device_id (a token column
      that is not a token).
    Only string values count, and blank ones hold nothing to leak. Scope: the messages staged
    since the last build whose tests all passed (loginvault_untested). Values of other messages
    in unmasked columns are not compared: a device_id "android" of one message and the
    device_type "android" of another are a coincidence, not a leak, and must not stop the
    pipeline. Returns the column name and how many values leaked, never the values. -#}
{% test no_cleartext_pii(model, masked_columns=[]) %}
    {%- set columns = adapter.get_columns_in_relation(model) -%}

with cleartext as (

    select
        s.message_id,
        x.value
    from {{ ref('stg_sqs__login_events') }} as s
    cross join lateral (
        values
            (s.payload ->> 'ip'),
            (s.payload ->> 'device_id'),
            ({{ pii_canonical("s.payload ->> 'ip'", 'ip') }}),
            ({{ pii_canonical("s.payload ->> 'device_id'", 'device_id') }})
    ) as x (value)
    where
        {{ loginvault_untested('s._transformed_at') }}
        and (jsonb_typeof(s.payload -> 'ip') = 'string' or jsonb_typeof(s.payload -> 'device_id') = 'string')
),

pii as (

    select
        c.message_id,
        c.value
    from cleartext as c
    where btrim(c.value) <> ''

),

findings as (

    {% for column in columns %}
        select
            '{{ column.name }}' as column_name,
            count(*) as leaked_values
        from {{ model }} as m
        inner join pii as p
            on p.message_id = m.message_id and p.value = m.{{ adapter.quote(column.name) }}::text
        having count(*) > 0
        union all
    {% endfor %}  -- noqa: LT02 (the loop is empty when sqlfluff renders it)
    {% for column in masked_columns %}
        select
            '{{ column }} (any message)' as column_name,
            count(*) as leaked_values
        from {{ model }} as m
        where
            {{ loginvault_untested_messages('m.message_id') }}
            and m.{{ adapter.quote(column) }} in (select p.value from pii as p)
        having count(*) > 0
        union all
    {% endfor %}
    select
        null as column_name,
        0 as leaked_values
    where false

)

select
    column_name,
    leaked_values
from findings

{% endtest %}
