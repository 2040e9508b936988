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
-- dlt's record of completed loads, as dlt creates it on its first load; made here too so that
-- dbt can build (nothing to do) before the first ingest.
CREATE TABLE IF NOT EXISTS raw._dlt_loads (
    load_id             varchar     NOT NULL,
    schema_name         varchar,
    status              bigint      NOT NULL,
    inserted_at         timestamptz NOT NULL,
    schema_version_hash varchar
);
ALTER TABLE raw._dlt_loads OWNER TO loginvault_loader;
CREATE INDEX IF NOT EXISTS login_events_message_id_idx ON raw.login_events (message_id);
CREATE INDEX IF NOT EXISTS login_events_dlt_load_id_idx ON raw.login_events (_dlt_load_id);
COMMENT ON TABLE raw.login_events IS
    'Every SQS delivery of a login event, verbatim (loginvault ingest). Contains cleartext PII.';

-- The transformer reads raw, including what dlt creates later.
GRANT SELECT ON ALL TABLES IN SCHEMA raw TO loginvault_transformer;
ALTER DEFAULT PRIVILEGES FOR ROLE loginvault_loader IN SCHEMA raw
    GRANT SELECT ON TABLES TO loginvault_transformer;

-- staging belongs to the transformer; analysts get no usage on it (nor on raw or pii).
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION loginvault_transformer;
REVOKE ALL ON SCHEMA staging FROM PUBLIC;

-- pii belongs to the admin, so that the transformer (which builds pii.vault there) can
-- neither drop nor rewrite the recovery audit.
CREATE SCHEMA IF NOT EXISTS pii;
ALTER SCHEMA pii OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA pii FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA pii TO loginvault_transformer;
GRANT USAGE ON SCHEMA pii TO loginvault_pii_admin;

-- Every recovery, appended by `python -m ingest recover` as loginvault_pii_admin, which may
-- insert but not read, change or delete. Never holds a cleartext value.
CREATE TABLE IF NOT EXISTS pii.recovery_audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recovered_at    timestamptz NOT NULL DEFAULT now(),
    login_user      text        NOT NULL DEFAULT session_user,
    acting_role     text        NOT NULL DEFAULT current_user,
    client_addr     inet                 DEFAULT inet_client_addr(),
    direction       text        NOT NULL CHECK (direction IN ('token_to_value', 'value_to_token')),
    kind            text                 CHECK (kind IN ('ip', 'device_id')),
    token           text        NOT NULL,
    found           boolean     NOT NULL,
    reason          text        NOT NULL CHECK (btrim(reason) <> '')
);
REVOKE ALL ON pii.recovery_audit FROM PUBLIC;
GRANT INSERT ON pii.recovery_audit TO loginvault_pii_admin;
COMMENT ON TABLE pii.recovery_audit IS 'Who recovered which token, when and why (loginvault recover).';

-- The mart schema (session setting loginvault.mart_schema, default public): the transformer
-- builds there, analysts read there. A bare user_logins of the original exercise's DDL (no
-- message_id) is replaced: dropped when empty, else kept as user_logins_before_loginvault.
DO $$
DECLARE
    mart text := coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public');
    n bigint;
BEGIN
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', mart);
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO loginvault_transformer', mart);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loginvault_analyst, loginvault_pii_admin', mart);
    IF to_regclass(format('%I.user_logins', mart)) IS NOT NULL AND NOT EXISTS (
        SELECT FROM information_schema.columns
        WHERE table_schema = mart AND table_name = 'user_logins' AND column_name = 'message_id'
    ) THEN
        EXECUTE format('SELECT count(*) FROM %I.user_logins', mart) INTO n;
        IF n = 0 THEN
            EXECUTE format('DROP TABLE %I.user_logins', mart);
            RAISE NOTICE 'dropped the empty pre-existing %.user_logins: dbt builds it with the same DDL plus message_id, app_version_text', mart;
        ELSE
            EXECUTE format('ALTER TABLE %I.user_logins RENAME TO user_logins_before_loginvault', mart);
            RAISE NOTICE 'kept the pre-existing %.user_logins (% rows) as user_logins_before_loginvault', mart, n;
        END IF;
    END IF;
END
$$;
