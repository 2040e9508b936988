{#- Test scope. By default (`loginvault_test_scope: all`) every data test checks every row.
    The transform service opts into `incremental` (LOGINVAULT_TEST_SCOPE, set from its
    --test-scope): a test then checks the rows staged since the last build in which every data
    test ran and passed (the `tests_passed` mark, moved by loginvault_on_run_end), so a build
    every few minutes tests what it added, and rows of a build whose tests failed are tested
    again until they pass. `--vars '{loginvault_test_scope: incremental}'` chooses it too. -#}
{% macro loginvault_test_scope() -%}
    {%- set scope = var('loginvault_test_scope', env_var('LOGINVAULT_TEST_SCOPE', 'all') or 'all') -%}
    {%- if scope not in ('all', 'incremental') -%}
        {{ exceptions.raise_compiler_error(
            "loginvault_test_scope must be all or incremental, not " ~ scope | string
        ) }}
    {%- endif -%}
    {{- scope -}}
{%- endmacro %}

{% macro loginvault_tested_mark() -%}
    '{{ loginvault_mark('tests_passed') }}'::timestamptz
{%- endmacro %}

{% macro loginvault_untested(column) -%}
    {%- if loginvault_test_scope() == 'all' -%}
        true
    {%- else -%}
        {{ column }} > {{ loginvault_tested_mark() }}
    {%- endif -%}
{%- endmacro %}

{#- A test's `where` for models keyed by message_id (marts), by _transformed_at (staging).
    Before any build's tests passed (no mark yet), every row is untested: no filter. -#}
{% macro loginvault_untested_messages(column='message_id') -%}
    {%- if loginvault_test_scope() == 'all' or loginvault_mark('tests_passed') | trim == '-infinity' -%}
        true
    {%- else -%}
        {{ column }} in (
            select s.message_id from staging.stg_sqs__login_events as s
            where {{ loginvault_untested('s._transformed_at') }}
        )
    {%- endif -%}
{%- endmacro %}

{#- on-run-end: a `dbt build` / `dbt test` in which every data test of the project ran and
    passed (none excluded, deselected or skipped; no node failed) moves the tests_passed mark
    to this run's start. A build that excludes tests, or selects some of them, leaves it. -#}
{% macro loginvault_on_run_end(results) %}
    {%- if execute -%}
        {%- set passed = [] -%}
        {%- for result in results -%}
            {%- if result.node.resource_type == 'test' and result.status == 'pass' -%}
                {%- do passed.append(result.node.unique_id) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set failed = results | selectattr('status', 'in', ['error', 'fail', 'warn', 'skipped', 'runtime error']) | list -%}
        {%- set missing = [] -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'test' and node.unique_id not in passed -%}
                {%- do missing.append(node.unique_id) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- if execute and flags.WHICH in ('build', 'test') and passed and not failed and not missing -%}
        {% if target.role %}set role {{ adapter.quote(target.role) }};{% endif %}
        {#- This session holds the keys: what it writes is locked and checked first, in the same
            transaction (macros/locks.sql). -#}
        {{ loginvault_lock_relations() }};
        insert into staging.loginvault_watermarks (model, high)
        values ('tests_passed', '{{ run_started_at }}')
        on conflict (model) do update set high = excluded.high, updated_at = now()
    {%- else -%}
        select 1 as tests_mark_unchanged
    {%- endif -%}
{% endmacro %}

{#- dbt's hook for a test's `where`, extended: a test with `meta: {loginvault_scope: staged}`
    (rows carry _transformed_at) or `{loginvault_scope: messages}` (rows carry message_id)
    checks only the untested rows in the incremental scope. Test configs cannot call project
    macros, hence the meta. -#}
{% macro get_where_subquery(relation) -%}
    {%- set scope = (config.get('meta') or {}).get('loginvault_scope') -%}
    {%- set where = config.get('where') -%}
    {%- if scope == 'staged' -%}
        {%- set where = loginvault_untested('_transformed_at') -%}
    {%- elif scope == 'messages' -%}
        {%- set where = loginvault_untested_messages() -%}
    {%- endif -%}
    {%- if where and where != 'true' -%}
        {%- do return("(select * from " ~ relation ~ " where " ~ where ~ ") as dbt_subquery") -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
