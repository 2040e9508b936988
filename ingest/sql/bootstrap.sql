-- loginvault bootstrap: extensions, roles, schemas, the raw table and grants.
-- Idempotent: run as an admin (superuser, or RDS's master user) on every `make stack-up`
-- and on each deploy. Role names and the raw contract are described in ARCHITECTURE.md.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['loginvault_loader', 'loginvault_transformer',
                             'loginvault_analyst', 'loginvault_pii_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        -- The admin DSN acts as each role through `-c role=…` (see config.dsn_with_role).
        IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', r, current_user);
        END IF;
    END LOOP;
END
$$;

-- Nobody gets anything by default in this database.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO loginvault_loader, loginvault_transformer,'
                   ' loginvault_analyst, loginvault_pii_admin', current_database());
    -- dbt's incremental models and unit tests stage rows in temporary tables.
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO loginvault_transformer', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- raw: restricted landing zone, written only by the loader (dlt creates its _dlt_* tables here).
CREATE SCHEMA IF NOT EXISTS raw AUTHORIZATION loginvault_loader;
ALTER SCHEMA raw OWNER TO loginvault_loader;
REVOKE ALL ON SCHEMA raw FROM PUBLIC;
GRANT USAGE ON SCHEMA raw TO loginvault_transformer;

-- The raw contract between ingest and dbt: one row per delivery, body exactly as received.
CREATE TABLE IF NOT EXISTS raw.login_events (
    message_id    text        NOT NULL,
    body          text        NOT NULL,
    sent_at       timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    receive_count integer     NOT NULL,
    queue         text        NOT NULL,
    _dlt_load_id  varchar     NOT NULL,
    _dlt_id       varchar     NOT NULL
);
ALTER TABLE raw.login_events OWNER TO loginvault_loader;
CREATE INDEX IF NOT EXISTS login_events_message_id_idx ON raw.login_events (message_id);
CREATE INDEX IF NOT EXISTS login_events_dlt_load_id_idx ON raw.login_events (_dlt_load_id);
COMMENT ON TABLE raw.login_events IS
    'Every SQS delivery of a login event, verbatim (loginvault ingest). Contains cleartext PII.';

-- The transformer reads raw, including what dlt creates later.
GRANT SELECT ON ALL TABLES IN SCHEMA raw TO loginvault_transformer;
ALTER DEFAULT PRIVILEGES FOR ROLE loginvault_loader IN SCHEMA raw
    GRANT SELECT ON TABLES TO loginvault_transformer;

-- staging and pii belong to the transformer; analysts get no usage on either.
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION loginvault_transformer;
CREATE SCHEMA IF NOT EXISTS pii AUTHORIZATION loginvault_transformer;
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
REVOKE ALL ON SCHEMA pii FROM PUBLIC;
GRANT USAGE ON SCHEMA pii TO loginvault_pii_admin;

-- The mart schema (public by default): the transformer builds there, analysts read there.
GRANT USAGE, CREATE ON SCHEMA public TO loginvault_transformer;
GRANT USAGE ON SCHEMA public TO loginvault_analyst;
