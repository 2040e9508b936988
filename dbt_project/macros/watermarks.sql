{#- Incremental bookkeeping for the models that read staging: each remembers the start of the
    last run that built it, and takes the staging rows transformed after that. Staging is
    written only by dbt, stamped with run_started_at, so this never skips a row — also when an
    earlier run failed between staging and a mart. -#}

{#- raw's owner reads the marts' watermarks (raw.marts_watermark: retention stops at them). -#}
{% macro loginvault_create_watermarks() %}
create table if not exists staging.loginvault_watermarks (
    model text primary key,
    high timestamptz not null,
    updated_at timestamptz not null default now()
);
grant select on staging.loginvault_watermarks to loginvault_owner;
{% endmacro %}

{#- pre-hook of every model: once retention has removed cleartext, a full refresh would rebuild
    from partial history and silently lose rows: refused, unless deliberately overridden. -#}
{% macro loginvault_full_refresh_guard() -%}
    {%- if execute and should_full_refresh() and not var('loginvault_rebuild_from_partial_raw', false) -%}
        {%- set cutoff = run_query("select max(cutoff)::text from raw.retention_log").columns[0].values()[0] -%}
        {%- if cutoff -%}
            {{ exceptions.raise_compiler_error(
                "retention removed the cleartext received before " ~ cutoff ~ ": a --full-refresh would rebuild "
                ~ this.identifier ~ " from partial history and lose rows; to rebuild it anyway, add "
                ~ "--vars '{loginvault_rebuild_from_partial_raw: true}'"
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- A mark's value, read when the node is compiled (just before it runs) and written into the
    SQL as a literal: the planner then sees how few rows are new and reaches them through the
    indexes, where a subquery would make it assume a third of the table. -#}
{% macro loginvault_mark(name) -%}
    {%- if execute and adapter.get_relation(
        database=target.database, schema='staging', identifier='loginvault_watermarks'
    ) is not none -%}
        {#- Locked and checked first, in the same transaction (macros/locks.sql). -#}
        {{ run_query(
            "select loginvault.checked_relation('staging.loginvault_watermarks', 'ROW EXCLUSIVE');"
            ~ " select coalesce(max(high), '-infinity'::timestamptz)::text from staging.loginvault_watermarks"
            ~ " where model = '" ~ name ~ "'"
        ).columns[0].values()[0] }}
    {%- else -%}
        -infinity
    {%- endif -%}
{%- endmacro %}

{% macro loginvault_after_watermark(column) -%}
    {{ column }} > '{{ loginvault_mark(this.identifier) }}'::timestamptz
{%- endmacro %}

{#- The rows of `alias` (a view over staging) that a message-keyed model has not taken yet:
    staged after its watermark, and not already in it (a safety net should staging be rebuilt). -#}
{% macro loginvault_new_messages(alias) -%}
    {{ loginvault_after_watermark(alias ~ '._transformed_at') }}
    and not exists (select 1 from {{ this }} as t where t.message_id = {{ alias }}.message_id)
{%- endmacro %}

{#- post_hook: runs inside the model's transaction, so the mark moves only with the data. -#}
{% macro loginvault_set_watermark() %}
insert into staging.loginvault_watermarks (model, high)
values ('{{ this.identifier }}', '{{ run_started_at }}')
on conflict (model) do update set high = excluded.high, updated_at = now()
{% endmacro %}

{#- post-hook of every model: a table built from scratch (first run, full refresh) has no
    statistics until autovacuum gets to it; without them the next incremental run's planner
    guesses, and reads the whole table instead of its indexes. Analyze it once, right away. -#}
{% macro loginvault_analyze_if_new() %}
    {%- if config.get('materialized') in ('incremental', 'table', 'loginvault_declared') -%}
        do $analyze$
        begin
            if exists (
                select from pg_stat_user_tables
                where relid = '{{ this }}'::regclass and last_analyze is null and last_autoanalyze is null
            ) then
                -- ANALYZE evaluates statistics expressions, which ROW EXCLUSIVE does not keep
                -- out (macros/locks.sql): checked again under a lock that does.
                perform loginvault.checked_relation(format('%I.%I', '{{ this.schema }}', '{{ this.identifier }}'),
                                                    'SHARE UPDATE EXCLUSIVE');
                analyze {{ this }};
            end if;
        end
        $analyze$
    {%- endif -%}
{% endmacro %}
