{#- Catches duplicate keys made of several columns (dbt_utils' unique_combination_of_columns,
    which cannot be installed here): returns each repeated combination and its count. -#}
{% test unique_combination(model, columns) %}

select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
