{#- Catches cleartext PII in an analyst-visible model: fails when any value of any column of
    `model` equals an ip or device_id (as sent, or canonical) from the staged payloads.
    Returns only the column name and how many values leaked, never the values. -#}
{% test no_cleartext_pii(model) %}
    {%- set columns = adapter.get_columns_in_relation(model) -%}

with cleartext as (

    select distinct x.value
    from {{ ref('stg_sqs__login_events') }} as s
    cross join lateral (
        values
            (s.payload ->> 'ip'),
            (s.payload ->> 'device_id'),
            ({{ pii_canonical("s.payload ->> 'ip'", 'ip') }}),
            ({{ pii_canonical("s.payload ->> 'device_id'", 'device_id') }})
    ) as x (value)
    where jsonb_typeof(s.payload) = 'object' and x.value is not null

)

{% for column in columns %}
select '{{ column.name }}' as column_name, count(*) as leaked_values
from {{ model }} as m
inner join cleartext as c on c.value = m.{{ adapter.quote(column.name) }}::text
having count(*) > 0
{% if not loop.last %}union all{% endif %}
{% endfor %}
{% endtest %}
