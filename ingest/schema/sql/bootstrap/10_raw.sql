-- loginvault bootstrap: raw.
-- Owned by loginvault_owner (NOLOGIN, no members but the admin): the loader appends rows and
-- can neither alter a table (row-level security, policies, rules), nor create a trigger, view
-- or function that the transformer's session would run. dlt creates nothing at run time: every
-- table it writes is created here, so the loader needs no CREATE on the schema.
CREATE SCHEMA IF NOT EXISTS raw AUTHORIZATION loginvault_owner;
ALTER SCHEMA raw OWNER TO loginvault_owner;
REVOKE ALL ON SCHEMA raw FROM PUBLIC, loginvault_loader, loginvault_transformer;
-- USAGE: to name the tables below (loader: to append; transformer: to read).
GRANT USAGE ON SCHEMA raw TO loginvault_loader, loginvault_transformer;

-- The raw contract between ingest and dbt: one row per delivery, body exactly as received.
-- Partitioned by the UTC day of received_at (raw.login_events_pYYYYMMDD, made ahead of time
-- by raw.ensure_partitions; a default partition takes a row of any other day, so that a load
-- never fails for lack of one): retention drops whole days. A database of an earlier version
-- has a plain table: `loginvault raw partition` converts it.
DO $$
BEGIN
    IF to_regclass('raw.login_events') IS NULL THEN
        CREATE TABLE raw.login_events (
            message_id    text        NOT NULL,
            body          text        NOT NULL,
            sent_at       timestamptz NOT NULL,
            received_at   timestamptz NOT NULL,
            receive_count integer     NOT NULL,
            queue         text        NOT NULL,
            _dlt_load_id  varchar     NOT NULL,
            _dlt_id       varchar     NOT NULL
        ) PARTITION BY RANGE (received_at);
        CREATE TABLE raw.login_events_default PARTITION OF raw.login_events DEFAULT;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS login_events_message_id_idx ON raw.login_events (message_id);
CREATE INDEX IF NOT EXISTS login_events_dlt_load_id_idx ON raw.login_events (_dlt_load_id);
COMMENT ON TABLE raw.login_events IS
    'Every SQS delivery of a login event, verbatim (loginvault ingest). Contains cleartext PII.';
-- dlt's record of completed loads (dbt reads only rows of completed loads).
CREATE TABLE IF NOT EXISTS raw._dlt_loads (
    load_id             varchar     NOT NULL,
    schema_name         varchar,
    status              bigint      NOT NULL,
    inserted_at         timestamptz NOT NULL,
    schema_version_hash varchar
);
-- dlt's stored schema versions (dlt looks its schema up by hash and stores a new version).
CREATE TABLE IF NOT EXISTS raw._dlt_version (
    version        bigint      NOT NULL,
    engine_version bigint      NOT NULL,
    inserted_at    timestamptz NOT NULL,
    schema_name    varchar     NOT NULL,
    version_hash   varchar     NOT NULL,
    schema         varchar     NOT NULL
);

-- Databases bootstrapped before: the loader owned raw and its tables (dlt's included). Hand
-- them to the owner and take back every privilege; the grants below are the whole set.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'raw'::regnamespace AND c.relkind IN ('r', 'p')
          AND pg_get_userbyid(c.relowner) <> 'loginvault_owner'
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO loginvault_owner', t);
    END LOOP;
END
$$;
ALTER DEFAULT PRIVILEGES FOR ROLE loginvault_loader IN SCHEMA raw REVOKE ALL ON TABLES FROM loginvault_transformer;
REVOKE ALL ON ALL TABLES IN SCHEMA raw FROM PUBLIC, loginvault_loader, loginvault_transformer;
-- The loader: append deliveries; record each completed load; look up and store dlt's schema.
GRANT INSERT ON raw.login_events, raw._dlt_loads TO loginvault_loader;
GRANT SELECT, INSERT ON raw._dlt_version TO loginvault_loader;
-- The transformer: read the deliveries of completed loads. Nothing else in raw.
GRANT SELECT ON raw.login_events, raw._dlt_loads TO loginvault_transformer;

-- What `retention apply` removed (read by the transform: a full refresh after it is refused).
CREATE TABLE IF NOT EXISTS raw.retention_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    login_user      text        NOT NULL DEFAULT session_user,
    cutoff          timestamptz NOT NULL,
    raw_partitions  integer     NOT NULL,
    raw_rows        bigint      NOT NULL
);
ALTER TABLE raw.retention_log OWNER TO loginvault_owner;
GRANT SELECT ON raw.retention_log TO loginvault_transformer;
