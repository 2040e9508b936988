{#- Test scope. A build's tests check the rows staged since the last build whose tests all
    passed (`tests_passed` mark, moved by loginvault_on_run_end), so a frequent incremental
    build tests what it added, and rows of a build whose tests failed are tested again until
    they pass. `--vars '{loginvault_test_scope: all}'` tests every row. -#}
{% macro loginvault_tested_mark() -%}
    '{{ loginvault_mark('tests_passed') }}'::timestamptz
{%- endmacro %}

{% macro loginvault_untested(column) -%}
    {%- if var('loginvault_test_scope', 'untested') == 'all' -%}
        true
    {%- else -%}
        {{ column }} > {{ loginvault_tested_mark() }}
    {%- endif -%}
{%- endmacro %}

{#- A test's `where` for models keyed by message_id (marts), by _transformed_at (staging). -#}
{% macro loginvault_untested_messages(column='message_id') -%}
    {%- if var('loginvault_test_scope', 'untested') == 'all' -%}
        true
    {%- else -%}
        {{ column }} in (
            select s.message_id from staging.stg_sqs__login_events as s
            where {{ loginvault_untested('s._transformed_at') }}
        )
    {%- endif -%}
{%- endmacro %}

{#- on-run-end: a complete `dbt build` / `dbt test` (no --select/--exclude) whose every node
    succeeded moves the tests_passed mark to this run's start. -#}
{% macro loginvault_on_run_end(results) %}
    {%- set complete = flags.WHICH in ('build', 'test')
        and not invocation_args_dict.get('select') and not invocation_args_dict.get('exclude') -%}
    {%- set failed = results | selectattr('status', 'in', ['error', 'fail', 'skipped', 'runtime error']) | list -%}
    {%- if execute and complete and not failed -%}
        {% if target.role %}set role {{ adapter.quote(target.role) }};{% endif %}
        insert into staging.loginvault_watermarks (model, high)
        values ('tests_passed', '{{ run_started_at }}')
        on conflict (model) do update set high = excluded.high, updated_at = now()
    {%- else -%}
        select 1 as tests_mark_unchanged
    {%- endif -%}
{% endmacro %}

{#- dbt's hook for a test's `where`, extended: a test with `meta: {loginvault_scope: staged}`
    (rows carry _transformed_at) or `{loginvault_scope: messages}` (rows carry message_id)
    checks only the untested rows. Test configs cannot call project macros, hence the meta. -#}
{% macro get_where_subquery(relation) -%}
    {%- set scope = (config.get('meta') or {}).get('loginvault_scope') -%}
    {%- set where = config.get('where') -%}
    {%- if scope == 'staged' -%}
        {%- set where = loginvault_untested('_transformed_at') -%}
    {%- elif scope == 'messages' -%}
        {%- set where = loginvault_untested_messages() -%}
    {%- endif -%}
    {%- if where -%}
        {%- do return("(select * from " ~ relation ~ " where " ~ where ~ ") as dbt_subquery") -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
