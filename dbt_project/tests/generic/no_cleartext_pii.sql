{#- Catches cleartext PII in an analyst-visible model, keyed by message_id:
    - a column of a row holding an ip or device_id (as sent, or canonical) of its own message
      (a masking rule bypassed: the value copied instead of tokenized);
    - a column of `masked_columns` holding any of the checked messages' ip or device_id (a
      token column that is not a token).
    Only string values count, and blank ones hold nothing to leak. Values of other messages
    in unmasked columns are not compared: a device_id "android" of one message and the
    device_type "android" of another are a coincidence, not a leak, and must not stop the
    pipeline. Each message's values are computed once and compared within its own row. Scope:
    the messages staged since the last build whose tests all passed (loginvault_untested). Returns the column name and how many values leaked, never values. -#}
{% test no_cleartext_pii(model, masked_columns=[]) %}
    {%- set columns = adapter.get_columns_in_relation(model) -%}

with scoped as (

    -- Each checked message with its ip and device_id, as sent and canonical (each computed
    -- once per message, `offset 0` keeping them from being recomputed per compared cell).
    -- Without masked columns, only the messages that have a row in the model are compared.
    select
        sc.message_id,
        o.pii_values
    from {{ ref('stg_sqs__login_events') }} as sc
    cross join lateral (
        select
            case
                when jsonb_typeof(sc.payload -> 'ip') = 'string' or jsonb_typeof(sc.payload -> 'device_id') = 'string'
                    then array(
                        select x.value
                        from unnest(array[
                            sc.payload ->> 'ip',
                            sc.payload ->> 'device_id',
                            {{ pii_canonical("sc.payload ->> 'ip'", 'ip') }},
                            {{ pii_canonical("sc.payload ->> 'device_id'", 'device_id') }}
                        ]) as x (value)
                        where btrim(x.value) <> ''
                    )
                else '{}'::text[]
            end as pii_values
        offset 0
    ) as o
    where
        {{ loginvault_untested('sc._transformed_at') }}
        {%- if not masked_columns %}
            and exists (select 1 from {{ model }} as m where m.message_id = sc.message_id)
        {%- endif %}

),

findings as (

    -- A cell of a checked message's row holding one of that message's values.
    select
        c.column_name,
        count(*) as leaked_values
    from scoped as sc
    inner join {{ model }} as r on r.message_id = sc.message_id
    cross join lateral (
        values
        {%- for column in columns %}
            ('{{ column.name }}', r.{{ adapter.quote(column.name) }}::text){{ "," if not loop.last }}
        {%- endfor %}
    ) as c (column_name, value)
    where c.value = any(sc.pii_values)
    group by c.column_name
    {%- if masked_columns %}

    union all

    -- A token column of a checked message's row holding any checked message's value.
    select
        c.column_name || ' (any message)' as column_name,
        count(*) as leaked_values
    from scoped as sc
    inner join {{ model }} as r on r.message_id = sc.message_id
    cross join lateral (
        values
        {%- for column in masked_columns %}
            ('{{ column }}', r.{{ adapter.quote(column) }}::text){{ "," if not loop.last }}
        {%- endfor %}
    ) as c (column_name, value)
    where c.value in (select unnest(p.pii_values) from scoped as p)
    group by c.column_name
    {%- endif %}

)

select
    column_name,
    leaked_values
from findings

{% endtest %}
