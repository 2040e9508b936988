{#- Incremental bookkeeping for the models that read staging: each remembers the start of the
    last run that built it, and takes the staging rows transformed after that. Staging is
    written only by dbt, stamped with run_started_at, so this never skips a row — also when an
    earlier run failed between staging and a mart. -#}

{% macro loginvault_create_watermarks() %}
create table if not exists staging.loginvault_watermarks (
    model text primary key,
    high timestamptz not null,
    updated_at timestamptz not null default now()
);
{% endmacro %}

{% macro loginvault_after_watermark(column) -%}
    {{ column }} > (
        select coalesce(max(w.high), '-infinity'::timestamptz)
        from staging.loginvault_watermarks as w
        where w.model = '{{ this.identifier }}'
    )
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
