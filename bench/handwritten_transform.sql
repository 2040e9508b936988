-- The hand-written limit for the transform benchmark: the same parsing, deduplication,
-- validation, masking, vault encryption and inserts as the dbt project, as one script in one
-- session, materializing the validated rows once. Run as loginvault_transformer with the keys
-- in the session (loginvault.hmac_key, loginvault.encryption_key), after a dbt run created the
-- loginvault.* parsers (ingest/schema/repeatable/). Writes to schema bench_hw.
--
-- `parsed` is MATERIALIZED: the JSON is parsed once per row. Without it PostgreSQL inlines the
-- CTE and parses the JSON once per reference to `payload` (a dozen times per row); the bench
-- times that version too, as information. The tokens are an HMAC per row, not per distinct value.
-- Tokens use the same rule as the project (loginvault.pii_token: kind-separated under the
-- active key), so that the outputs can be compared.

drop table if exists bench_hw.validated, bench_hw.user_logins, bench_hw.rejected, bench_hw.vault;

create table bench_hw.validated as
with first_delivery as (
    select distinct on (r.message_id)
        r.message_id, r.body, r.sent_at, r.received_at
    from raw.login_events as r
    where r._dlt_load_id in (select l.load_id from raw._dlt_loads as l where l.status = 0)
    order by r.message_id, r.received_at, r.receive_count, r._dlt_id
),
parsed as materialized (
    select f.*, loginvault.try_jsonb(f.body) as payload from first_delivery as f
),
fields as (
    select
        message_id, sent_at, received_at,
        case when payload is null then loginvault.json_error(body) end as parse_error,
        jsonb_typeof(payload) as payload_type,
        jsonb_typeof(payload -> 'user_id') as user_id_type,
        jsonb_typeof(payload -> 'device_type') as device_type_type,
        jsonb_typeof(payload -> 'ip') as ip_type,
        jsonb_typeof(payload -> 'locale') as locale_type,
        jsonb_typeof(payload -> 'device_id') as device_id_type,
        payload ->> 'user_id' as user_id,
        payload ->> 'device_type' as device_type,
        payload ->> 'ip' as ip,
        payload ->> 'locale' as locale,
        payload ->> 'device_id' as device_id,
        payload ->> 'app_version' as app_version_text
    from parsed
),
canonical as (
    select *, loginvault.canonical_pii('ip', ip) as ip_canonical, loginvault.canonical_pii('device_id', device_id) as device_canonical
    from fields
)
select
    *,
    case
        when not coalesce(received_at >= now() - interval '400 days' and received_at < now() + interval '1 day', false)
            then 'received_at_out_of_range'
        when parse_error is not null then parse_error
        when payload_type <> 'object' then 'not_an_object'
        when user_id_type is null or user_id_type = 'null' then 'user_id_missing'
        when user_id_type <> 'string' then 'user_id_not_string'
        when btrim(user_id) = '' then 'user_id_empty'
        when char_length(user_id) > 128 then 'user_id_too_long'
        when device_type_type not in ('string', 'null') then 'device_type_not_string'
        when char_length(device_type) > 32 then 'device_type_too_long'
        when locale_type not in ('string', 'null') then 'locale_not_string'
        when char_length(locale) > 32 then 'locale_too_long'
        when ip_type not in ('string', 'null') then 'ip_not_string'
        when ip is not null and ip_canonical is null then 'ip_invalid'
        when device_id_type not in ('string', 'null') then 'device_id_not_string'
        when device_id is not null and btrim(device_id) = '' then 'device_id_empty'
        when char_length(device_id) > 256 then 'device_id_too_long'
    end as reason
from canonical;

create table bench_hw.user_logins (
    user_id varchar(128), device_type varchar(32), masked_ip varchar(256), masked_device_id varchar(256),
    locale varchar(32), app_version integer, create_date date, message_id text not null, app_version_text text
);
insert into bench_hw.user_logins
select
    user_id, device_type,
    loginvault.pii_token('ip', ip_canonical, current_setting('loginvault.hmac_key'), (select kind_separated from pii.key_versions where kind = 'hmac' and state = 'active')),
    loginvault.pii_token('device_id', device_canonical, current_setting('loginvault.hmac_key'), (select kind_separated from pii.key_versions where kind = 'hmac' and state = 'active')),
    locale,
    case
        when app_version_text ~ '^[0-9]+(\.[0-9]+){0,2}$'
            and split_part(app_version_text, '.', 1)::numeric < 1000
            and coalesce(nullif(split_part(app_version_text, '.', 2), '')::numeric, 0) < 1000
            and coalesce(nullif(split_part(app_version_text, '.', 3), '')::numeric, 0) < 1000
            then (split_part(app_version_text, '.', 1)::numeric * 1000000
                + coalesce(nullif(split_part(app_version_text, '.', 2), '')::numeric, 0) * 1000
                + coalesce(nullif(split_part(app_version_text, '.', 3), '')::numeric, 0))::integer
    end,
    (sent_at at time zone 'UTC')::date,
    message_id,
    app_version_text
from bench_hw.validated
where reason is null;
create unique index on bench_hw.user_logins (message_id);
create index on bench_hw.user_logins (user_id);
create index on bench_hw.user_logins (masked_ip);
create index on bench_hw.user_logins (create_date, app_version);

create table bench_hw.rejected as
select message_id, reason, sent_at, received_at from bench_hw.validated where reason is not null;
create unique index on bench_hw.rejected (message_id);

create table bench_hw.vault as
with cleartext as (
    select 'ip' as kind, ip_canonical as value, sent_at from bench_hw.validated where reason is null and ip_canonical is not null
    union all
    select 'device_id', device_canonical, sent_at from bench_hw.validated where reason is null and device_canonical is not null
),
distinct_values as (
    select kind, value, min(sent_at) as first_seen_at from cleartext group by kind, value
)
select
    loginvault.pii_token(kind, value, current_setting('loginvault.hmac_key'), (select kind_separated from pii.key_versions where kind = 'hmac' and state = 'active'))::varchar(64) as token,
    kind::varchar(16) as kind,
    pgp_sym_encrypt(value, current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1') as ciphertext,
    first_seen_at
from distinct_values;
create unique index on bench_hw.vault (token, kind);
