{#- Catches broken masking of one token column of a model keyed by message_id:
    - nondeterministic: one cleartext value got more than one token;
    - collision: one token stands for more than one cleartext value;
    - mismatch: the stored token is not the keyed HMAC of the value (wrong key or rule);
    - orphan_row: a token without a value, or a value without a token;
    - not_in_vault / vault_orphan: the token is missing from pii.vault, or the vault holds a
      token of this kind that no row carries.
    Scope: every row (loginvault_test_scope all, the default), or in the incremental scope the
    messages staged since the last build whose tests all passed, without vault_orphan (which
    must read the whole vault).
    Each distinct (token, value) pair is checked once (one HMAC per pair, not per row), counted
    by its rows. Returns the failure kind, the token (never the cleartext) and a count. -#}
{% test pii_token_is_bijective(model, column_name, kind) %}

with pairs as (

    select
        m.{{ column_name }} as token,
        {{ pii_canonical('v.' ~ kind, kind) }} as value
    from {{ model }} as m
    inner join ({{ loginvault_validated_rows() }}) as v on v.message_id = m.message_id
    where {{ loginvault_untested('v._transformed_at') }}

),

distinct_pairs as (

    select
        token,
        value,
        count(*) as n
    from pairs
    group by token, value

),

failures as (

    select 'nondeterministic' as failure, min(token) as token, count(distinct token) as n
    from distinct_pairs
    where value is not null
    group by value
    having count(distinct token) > 1

    union all

    select 'collision', token, count(distinct value)
    from distinct_pairs
    where token is not null
    group by token
    having count(distinct value) > 1

    union all

    select 'mismatch', token, sum(n)
    from distinct_pairs
    where token <> {{ pii_hmac('value', "'" ~ kind ~ "'") }}
    group by token

    union all

    select 'orphan_row', token, sum(n)
    from distinct_pairs
    where (token is null) <> (value is null)
    group by token

    union all

    select 'not_in_vault', p.token, sum(p.n)
    from distinct_pairs as p
    where p.token is not null
        and not exists (
            select 1 from {{ ref('vault') }} as vt
            where vt.token = p.token and vt.kind = '{{ kind }}'
        )
    group by p.token

    {% if loginvault_test_scope() == 'all' %}
    union all

    select 'vault_orphan', vt.token, 1
    from {{ ref('vault') }} as vt
    where vt.kind = '{{ kind }}'
        and not exists (select 1 from {{ model }} as m where m.{{ column_name }} = vt.token)
    {% endif %}

)

select * from failures

{% endtest %}
