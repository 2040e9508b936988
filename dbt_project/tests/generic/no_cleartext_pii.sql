{#- Catches cleartext PII in an analyst-visible model, keyed by message_id:
    - a column of a row holding an ip or device_id (as sent, or canonical) of its own message
      (a masking rule bypassed: the value copied instead of tokenized);
    - a column of `masked_columns` holding any of the checked messages' ip or device_id (a
      token column that is not a token).
    Only string values count, and blank ones hold nothing to leak. Values of other messages
    in unmasked columns are not compared: a device_id "android" of one message and the
    device_type "android" of another are a coincidence, not a leak, and must not stop the
    pipeline. Scope: the messages staged since the last build whose tests all passed
    (loginvault_untested). Returns the column name and how many values leaked, never values. -#}
{% test no_cleartext_pii(model, masked_columns=[]) %}
    {%- set columns = adapter.get_columns_in_relation(model) -%}

with scoped as (

    select
        s.message_id,
        s.payload
    from {{ ref('stg_sqs__login_events') }} as s
    where {{ loginvault_untested('s._transformed_at') }}

),

pii as (

    select
        sc.message_id,
        x.value
    from scoped as sc
    cross join lateral (
        values
            (sc.payload ->> 'ip'),
            (sc.payload ->> 'device_id'),
            ({{ pii_canonical("sc.payload ->> 'ip'", 'ip') }}),
            ({{ pii_canonical("sc.payload ->> 'device_id'", 'device_id') }})
    ) as x (value)
    where
        (jsonb_typeof(sc.payload -> 'ip') = 'string' or jsonb_typeof(sc.payload -> 'device_id') = 'string')
        and btrim(x.value) <> ''

),

cells as (

    -- Each column of each row of a checked message, as text. `offset 0` keeps the lookup a
    -- per-message index probe instead of a join over the whole model.
    select
        r.message_id,
        c.column_name,
        c.value
    from scoped as sc
    cross join lateral (
        select m.* from {{ model }} as m where m.message_id = sc.message_id offset 0
    ) as r
    cross join lateral (
        values
        {%- for column in columns %}
            ('{{ column.name }}', r.{{ adapter.quote(column.name) }}::text){{ "," if not loop.last }}
        {%- endfor %}
    ) as c (column_name, value)

),

findings as (

    select
        ce.column_name,
        count(*) as leaked_values
    from cells as ce
    inner join pii as p on p.message_id = ce.message_id and p.value = ce.value
    group by ce.column_name

    union all

    select
        ce.column_name || ' (any message)' as column_name,
        count(*) as leaked_values
    from cells as ce
    where
        ce.column_name in ({% for column in masked_columns %}'{{ column }}'{{ ", " if not loop.last }}{% endfor %}{{ "null" if not masked_columns }})
        and ce.value in (select p.value from pii as p)
    group by ce.column_name

)

select
    column_name,
    leaked_values
from findings

{% endtest %}
