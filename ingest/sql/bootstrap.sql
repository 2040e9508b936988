-- loginvault bootstrap: extensions, roles, schemas, the raw tables, the project's functions,
-- the recovery functions and audit, and every grant with its reason.
--
-- Idempotent, run as an admin (superuser, or RDS's master user) in ONE transaction that holds
-- an advisory lock (ingest/bootstrap.py), so that several processes may run it at once.
-- Ownership rule: nothing that a role's session reads is owned by, or alterable by, a role
-- that should not run code in that session. Every role below is NOLOGIN; each workload logs in
-- with a login of its own that is a member of exactly one of them (docs/architecture.md).

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[
        -- workload roles: each login is a member of exactly one of these
        'loginvault_loader', 'loginvault_transformer', 'loginvault_analyst',
        'loginvault_pii_admin', 'loginvault_auditor',
        -- owner roles: never granted to a login
        'loginvault_owner', 'loginvault_recovery'
    ] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        -- The admin must be a member to hand objects to the role (ALTER … OWNER TO needs it
        -- on RDS, where the master user is not a superuser). The membership runs one way: the
        -- admin may act as the role, the role never as the admin.
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
    -- CONNECT: every workload role (their logins inherit it).
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO loginvault_loader, loginvault_transformer,'
                   ' loginvault_analyst, loginvault_pii_admin, loginvault_auditor', current_database());
    -- TEMPORARY: dbt's incremental models and unit tests stage rows in temporary tables.
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO loginvault_transformer', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- ---------------------------------------------------------------- raw
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

-- ---------------------------------------------------------------- the project's functions
-- Safe parsers and the tamper check, owned by the admin: dbt, the recovery functions and the
-- pre-flight checks call them, and no workload can replace them. The parsers run in the
-- caller's search_path (no SET clause: it would cost a settings save and restore per row);
-- the recovery functions, their only callers besides dbt, pin theirs. PostgreSQL 15 has no
-- pg_input_is_valid(), so each parser catches its own error: a malformed body or IP becomes
-- NULL, never a failed run. Catching an error opens a subtransaction, which parallel query
-- forbids: hence `parallel unsafe`.
CREATE SCHEMA IF NOT EXISTS loginvault;
ALTER SCHEMA loginvault OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA loginvault FROM PUBLIC;
GRANT USAGE ON SCHEMA loginvault TO loginvault_transformer, loginvault_recovery;

-- jsonb of a body, or NULL when it is not JSON or holds what jsonb cannot store.
CREATE OR REPLACE FUNCTION loginvault.try_jsonb(body text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$fn$;

-- Why a body does not parse: unsupported_json_escape (\u0000; jsonb cannot store it) or
-- invalid_json (syntax, lone surrogates, nesting too deep, numbers beyond numeric's range);
-- NULL when it parses.
CREATE OR REPLACE FUNCTION loginvault.json_error(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    PERFORM body::jsonb;
    RETURN NULL;
EXCEPTION
    WHEN untranslatable_character THEN
        -- jsonb stops at the first \u0000, before it has seen the rest: the body is
        -- invalid_json if it still does not parse with every \u0000 escape replaced (escaped
        -- backslashes first, so that "\\u0000" stays text).
        BEGIN
            PERFORM regexp_replace(regexp_replace(body, '\\\\', 'x', 'g'), '\\u0000', 'x', 'g')::jsonb;
            RETURN 'unsupported_json_escape';
        EXCEPTION WHEN others THEN
            RETURN 'invalid_json';
        END;
    WHEN others THEN RETURN 'invalid_json';
END
$fn$;

-- inet of a single IPv4/IPv6 address, or NULL: no masks, zone ids, spaces, or IPv4 octets
-- with leading zeros (ambiguous: octal to some parsers). A dotted IPv4 part must be four
-- octets at the end: inet itself also takes "1.2.3.4." and "::1.2.3" (as ::1.2.3.0).
CREATE OR REPLACE FUNCTION loginvault.try_inet(value text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    IF value !~ '^[0-9A-Fa-f:.]+$'
        OR (value ~ '\.' AND (
            value !~ '(^|:)([0-9]{1,3}\.){3}[0-9]{1,3}$' OR value ~ '(^|[:.])0[0-9]+(\.|$)'
        )) THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN value::inet;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$fn$;

-- The form a PII value is tokenized and encrypted in: host(inet) for an IP (valid IPv4/IPv6
-- only), the space-trimmed string for a device id; NULL when it is not a valid value of kind.
-- A plain SQL expression (not strict, no SET clause), so that the planner inlines it into
-- dbt's queries.
CREATE OR REPLACE FUNCTION loginvault.canonical_pii(kind text, value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL UNSAFE AS $fn$
    SELECT CASE kind
        WHEN 'ip' THEN host(loginvault.try_inet(value))
        WHEN 'device_id' THEN nullif(btrim(value), '')
    END
$fn$;

-- Refuses (raises, naming the object) unless `rel` and every partition or child of it is a
-- plain table owned by `expected_owner`, without row-level security, policies, triggers or
-- rules: each of those would run code chosen by the table's owner in the reading session.
-- Read by the pre-flight of every transform (dbt on-run-start) and in every recovery.
CREATE OR REPLACE FUNCTION loginvault.assert_untampered(rel regclass, expected_owner name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    c record;
    problem text;
BEGIN
    FOR c IN
        WITH RECURSIVE tree (oid) AS (
            SELECT rel::oid
            UNION
            SELECT i.inhrelid FROM pg_inherits AS i JOIN tree AS t ON i.inhparent = t.oid
        )
        SELECT cl.oid::regclass AS name, cl.relkind, pg_get_userbyid(cl.relowner) AS owner,
               cl.relrowsecurity OR cl.relforcerowsecurity
                   OR EXISTS (SELECT FROM pg_policy AS p WHERE p.polrelid = cl.oid) AS rls,
               EXISTS (SELECT FROM pg_trigger AS g WHERE g.tgrelid = cl.oid AND NOT g.tgisinternal) AS triggers,
               EXISTS (SELECT FROM pg_rewrite AS w WHERE w.ev_class = cl.oid) AS rules
        FROM tree JOIN pg_class AS cl ON cl.oid = tree.oid
    LOOP
        problem := CASE
            WHEN c.relkind NOT IN ('r', 'p') THEN 'is not a plain table (relkind ' || c.relkind::text || ')'
            WHEN c.owner <> expected_owner THEN format('is owned by %s, not %s', c.owner, expected_owner)
            WHEN c.rls THEN 'has row-level security or policies'
            WHEN c.triggers THEN 'has triggers'
            WHEN c.rules THEN 'has rules'
        END;
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'refusing to read %: it %; loginvault did not set that up, and it could run another role''s code in this session', c.name, problem
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
END
$fn$;

-- What a transform reads that another role owns, checked before any model runs: by the
-- `transform` command before dbt starts, and by the staging model's pre-hook in the
-- transaction that reads raw (locked first, so nothing can change between check and read).
CREATE OR REPLACE FUNCTION loginvault.assert_transform_inputs() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'raw') <> 'loginvault_owner' THEN
        RAISE EXCEPTION 'refusing to read schema raw: it is not owned by loginvault_owner (run the bootstrap)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Checked, locked (nothing can be attached until the transaction ends), checked again.
    FOR i IN 1..2 LOOP
        PERFORM loginvault.assert_untampered('raw.login_events', 'loginvault_owner');
        PERFORM loginvault.assert_untampered('raw._dlt_loads', 'loginvault_owner');
        IF i = 1 THEN
            LOCK TABLE raw.login_events, raw._dlt_loads IN ACCESS SHARE MODE;
        END IF;
    END LOOP;
END
$fn$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loginvault FROM PUBLIC;
-- The transformer: the parsers (staging, validation, masking) and its pre-flight check.
GRANT EXECUTE ON FUNCTION loginvault.try_jsonb(text), loginvault.json_error(text), loginvault.try_inet(text),
    loginvault.canonical_pii(text, text), loginvault.assert_transform_inputs(),
    loginvault.assert_untampered(regclass, name)
    TO loginvault_transformer;
-- The recovery functions' owner: canonical values and the tamper check.
GRANT EXECUTE ON FUNCTION loginvault.try_inet(text), loginvault.canonical_pii(text, text),
    loginvault.assert_untampered(regclass, name)
    TO loginvault_recovery;

-- ---------------------------------------------------------------- staging
-- Owned by the transformer and read only by it (and by nobody's session but its own).
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION loginvault_transformer;
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
-- Earlier versions created the parsers in staging, as the transformer, on each dbt run.
DROP FUNCTION IF EXISTS staging.loginvault_try_jsonb(text), staging.loginvault_json_error(text),
    staging.loginvault_try_inet(text);

-- ---------------------------------------------------------------- pii
-- Owned by the admin, so that the transformer (which builds pii.vault here) can neither drop
-- nor rewrite the recovery audit or the recovery functions.
CREATE SCHEMA IF NOT EXISTS pii;
ALTER SCHEMA pii OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA pii FROM PUBLIC, loginvault_pii_admin;
-- USAGE+CREATE: dbt builds pii.vault. USAGE: to call the recovery functions (pii-admin), to
-- read the audit (auditor), and for the functions' owner to reach the vault.
GRANT USAGE, CREATE ON SCHEMA pii TO loginvault_transformer;
GRANT USAGE ON SCHEMA pii TO loginvault_pii_admin, loginvault_auditor, loginvault_recovery;

-- Every recovery, written by the recovery functions in the transaction of the lookup. Never
-- holds a cleartext value. Append-only: only the functions' owner inserts, nobody updates or
-- deletes (but the admin).
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
-- found | not_found | decrypt_failed | over_budget (NULL on rows written before outcomes).
ALTER TABLE pii.recovery_audit ADD COLUMN IF NOT EXISTS outcome text;
ALTER TABLE pii.recovery_audit ADD COLUMN IF NOT EXISTS application_name text;
ALTER TABLE pii.recovery_audit ALTER COLUMN token DROP NOT NULL;  -- no token when refused before lookup
CREATE INDEX IF NOT EXISTS recovery_audit_login_day_idx ON pii.recovery_audit (login_user, recovered_at);
ALTER TABLE pii.recovery_audit OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_audit FROM PUBLIC, loginvault_pii_admin;
-- The functions' owner: append the audit row; count a login's lookups of the day (budget).
GRANT INSERT, SELECT ON pii.recovery_audit TO loginvault_recovery;
-- The auditor: read it (`loginvault audit`).
GRANT SELECT ON pii.recovery_audit TO loginvault_auditor;
COMMENT ON TABLE pii.recovery_audit IS
    'Who recovered which token, when, from where and why (loginvault recover): written only by the recovery functions.';

-- Lookups per login per UTC day; the row '*' is the default for logins without a row of
-- their own. Written by the admin only (a pii-admin cannot raise its own budget).
CREATE TABLE IF NOT EXISTS pii.recovery_budget (
    login         text PRIMARY KEY,
    daily_lookups integer NOT NULL CHECK (daily_lookups >= 0)
);
ALTER TABLE pii.recovery_budget OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_budget FROM PUBLIC;
GRANT SELECT ON pii.recovery_budget TO loginvault_recovery, loginvault_auditor;
-- loginvault.recovery_daily_budget: set by the bootstrap command from
-- LOGINVAULT_RECOVERY_DAILY_BUDGET; unset keeps what is there (200 on a new database).
INSERT INTO pii.recovery_budget (login, daily_lookups)
VALUES ('*', coalesce(nullif(current_setting('loginvault.recovery_daily_budget', true), '')::integer, 200))
ON CONFLICT (login) DO UPDATE SET daily_lookups = excluded.daily_lookups
WHERE nullif(current_setting('loginvault.recovery_daily_budget', true), '') IS NOT NULL;

-- Where the marts are, for the recovery functions (value → token counts logins there).
CREATE TABLE IF NOT EXISTS pii.settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
ALTER TABLE pii.settings OWNER TO CURRENT_USER;
REVOKE ALL ON pii.settings FROM PUBLIC;
GRANT SELECT ON pii.settings TO loginvault_recovery;
INSERT INTO pii.settings (name, value)
VALUES ('mart_schema', coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public'))
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- ---------------------------------------------------------------- recovery functions
-- SECURITY DEFINER, owned by loginvault_recovery (NOLOGIN: it has SELECT on the vault and the
-- mart, INSERT on the audit, and nothing else), search_path pinned, row security off (a
-- planted policy makes the read fail instead of running), EXECUTE for the pii-admin role only.
-- Who, when and from where come from the session (session_user, now(), inet_client_addr()),
-- never from the caller. The audit row is written in the transaction of the lookup, before
-- the answer is returned: no audit row, no answer. The keys come from the caller's session
-- (loginvault.encryption_key, loginvault.hmac_key: startup options, never SQL text).

-- Admits one lookup of the session's login against its daily budget; false when over it.
CREATE OR REPLACE FUNCTION pii.recovery_admit() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    allowed integer;
    used bigint;
BEGIN
    -- One lookup at a time per login, so that parallel calls cannot overrun the budget.
    PERFORM pg_advisory_xact_lock(hashtext('loginvault.recovery_budget'), hashtext(session_user));
    SELECT coalesce(
        (SELECT daily_lookups FROM pii.recovery_budget WHERE login = session_user),
        (SELECT daily_lookups FROM pii.recovery_budget WHERE login = '*'),
        0
    ) INTO allowed;
    SELECT count(*) INTO used FROM pii.recovery_audit
    WHERE login_user = session_user
      AND recovered_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
      AND outcome IS DISTINCT FROM 'over_budget';
    RETURN used < allowed;
END
$fn$;

CREATE OR REPLACE FUNCTION pii.recovery_write_audit(
    direction text, kind text, token text, outcome text, reason text
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    INSERT INTO pii.recovery_audit (
        recovered_at, login_user, acting_role, client_addr, application_name,
        direction, kind, token, found, outcome, reason
    ) VALUES (
        now(), session_user,
        CASE current_setting('role') WHEN 'none' THEN session_user ELSE current_setting('role') END,
        inet_client_addr(), current_setting('application_name'),
        direction, kind, token, outcome = 'found', outcome, btrim(reason)
    )
$fn$;

-- Every lookup starts here: a reason, the vault and the mart untampered (checked, locked,
-- checked again: nothing can be attached until the transaction ends), and the budget; false
-- (the refusal audited) when the login's budget for the day is used up.
CREATE OR REPLACE FUNCTION pii.recovery_begin(direction text, kind text, token text, reason text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    mart text := (SELECT value FROM pii.settings WHERE name = 'mart_schema');
    vault regclass := to_regclass('pii.vault');
    logins regclass := to_regclass(format('%I.user_logins', mart));
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a reason is required: it is written to the recovery audit' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF vault IS NULL OR logins IS NULL THEN
        RAISE EXCEPTION 'the vault or the mart does not exist yet: run the transform first' USING ERRCODE = 'undefined_table';
    END IF;
    FOR i IN 1..2 LOOP
        PERFORM loginvault.assert_untampered(vault, 'loginvault_transformer');
        PERFORM loginvault.assert_untampered(logins, 'loginvault_transformer');
        IF i = 1 THEN
            EXECUTE format('LOCK TABLE %s, %s IN ACCESS SHARE MODE', vault, logins);
        END IF;
    END LOOP;
    IF pii.recovery_admit() THEN
        RETURN true;
    END IF;
    PERFORM pii.recovery_write_audit(direction, kind, token, 'over_budget', reason);
    RETURN false;
END
$fn$;

-- token → (kind, cleartext): one row per kind the token is known under; outcome found,
-- not_found, decrypt_failed (the session's encryption key does not open it) or over_budget.
CREATE OR REPLACE FUNCTION pii.recover_value(token text, reason text)
RETURNS TABLE (kind text, value text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    entry record;
    clear text;
    results text[] := '{}';
    kinds text[] := '{}';
    verdict text;
BEGIN
    IF NOT pii.recovery_begin('token_to_value', NULL, token, reason) THEN
        RETURN QUERY SELECT NULL::text, NULL::text, 'over_budget'::text;
        RETURN;
    END IF;
    verdict := 'not_found';
    FOR entry IN SELECT v.kind::text AS kind, v.ciphertext FROM pii.vault AS v WHERE v.token = recover_value.token ORDER BY v.kind LOOP
        BEGIN
            clear := public.pgp_sym_decrypt(entry.ciphertext, current_setting('loginvault.encryption_key')::text);
            verdict := 'found';
            kinds := kinds || entry.kind;
            results := results || clear;
        EXCEPTION WHEN others THEN
            -- Wrong key, or no key in the session: audited as failed, nothing returned.
            verdict := 'decrypt_failed';
            kinds := ARRAY[entry.kind];
            results := '{}';
            EXIT;
        END;
    END LOOP;
    PERFORM pii.recovery_write_audit('token_to_value', kinds[1], token, verdict, reason);
    IF verdict = 'found' THEN
        RETURN QUERY SELECT k, v, verdict FROM unnest(kinds, results) AS u (k, v);
    ELSE
        RETURN QUERY SELECT kinds[1], NULL::text, verdict;
    END IF;
END
$fn$;

-- (kind, cleartext) → (token, logins carrying it in user_logins); outcome found (some login
-- carries it), not_found, invalid (not a valid value of kind) or over_budget. The token is
-- computed here, with the session's HMAC key: the client never tokenizes.
CREATE OR REPLACE FUNCTION pii.recover_token(kind text, value text, reason text)
RETURNS TABLE (token text, logins bigint, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET row_security = off AS $fn$
DECLARE
    canonical text := loginvault.canonical_pii(kind, value);
    computed text;
    carried bigint := 0;
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
BEGIN
    IF kind IS NULL OR kind NOT IN ('ip', 'device_id') THEN
        RAISE EXCEPTION 'kind must be ip or device_id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pii.recovery_begin('value_to_token', kind, NULL, reason) THEN
        RETURN QUERY SELECT NULL::text, NULL::bigint, 'over_budget'::text;
        RETURN;
    END IF;
    IF canonical IS NULL THEN
        PERFORM pii.recovery_write_audit('value_to_token', kind, NULL, 'invalid', reason);
        RETURN QUERY SELECT NULL::text, 0::bigint, 'invalid'::text;
        RETURN;
    END IF;
    computed := encode(public.hmac(canonical, current_setting('loginvault.hmac_key')::text, 'sha256'::text), 'hex');
    EXECUTE format('SELECT count(*) FROM %I.user_logins WHERE %I = $1', mart,
                   CASE kind WHEN 'ip' THEN 'masked_ip' ELSE 'masked_device_id' END)
        INTO carried USING computed;
    PERFORM pii.recovery_write_audit('value_to_token', kind, computed,
                                     CASE WHEN carried > 0 THEN 'found' ELSE 'not_found' END, reason);
    RETURN QUERY SELECT computed, carried, CASE WHEN carried > 0 THEN 'found' ELSE 'not_found' END;
END
$fn$;

ALTER FUNCTION pii.recovery_admit() OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recovery_write_audit(text, text, text, text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recovery_begin(text, text, text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recover_value(text, text) OWNER TO loginvault_recovery;
ALTER FUNCTION pii.recover_token(text, text, text) OWNER TO loginvault_recovery;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pii FROM PUBLIC;
-- The pii-admin role: the two lookups, nothing else (the helpers run as their owner).
GRANT EXECUTE ON FUNCTION pii.recover_value(text, text), pii.recover_token(text, text, text)
    TO loginvault_pii_admin;

-- ---------------------------------------------------------------- the mart schema
-- (session setting loginvault.mart_schema, default public): the transformer builds there,
-- analysts read there. A bare user_logins of the original exercise's DDL (no message_id) is
-- replaced: dropped when empty, else kept as user_logins_before_loginvault.
DO $$
DECLARE
    mart text := coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public');
    existing regclass;
    n bigint;
BEGIN
    IF mart IN ('raw', 'staging', 'pii', 'loginvault', 'pg_catalog', 'information_schema') THEN
        RAISE EXCEPTION 'LOGINVAULT_MART_SCHEMA may not be %: that schema has another owner and purpose', mart;
    END IF;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', mart);
    -- USAGE+CREATE: dbt builds the marts. USAGE: analysts read them, the recovery functions
    -- count logins there.
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO loginvault_transformer', mart);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loginvault_analyst, loginvault_recovery', mart);
    -- Earlier versions let the pii-admin read the marts; the recovery functions do it now.
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM loginvault_pii_admin', mart);
    existing := to_regclass(format('%I.user_logins', mart));
    IF existing IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = existing AND attname = 'message_id' AND NOT attisdropped
    ) THEN
        -- Counted as the admin: only if it is a plain table (a view or a table with policies
        -- could run its owner's code here).
        PERFORM loginvault.assert_untampered(existing, pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = existing)));
        EXECUTE format('SELECT count(*) FROM %s', existing) INTO n;
        IF n = 0 THEN
            EXECUTE format('DROP TABLE %s', existing);
            RAISE NOTICE 'dropped the empty pre-existing %.user_logins: dbt builds it with the same DDL plus message_id, app_version_text', mart;
        ELSE
            EXECUTE format('ALTER TABLE %s RENAME TO user_logins_before_loginvault', existing);
            RAISE NOTICE 'kept the pre-existing %.user_logins (% rows) as user_logins_before_loginvault', mart, n;
        END IF;
    END IF;
END
$$;

-- Earlier versions let the pii-admin read the vault and the marts directly (dbt's grants
-- config revokes it too, at the next build of each).
DO $$
DECLARE
    mart text := coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public');
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('pii', mart) AND c.relkind IN ('r', 'p', 'v', 'm')
          AND has_table_privilege('loginvault_pii_admin', c.oid, 'SELECT')
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM loginvault_pii_admin', t);
    END LOOP;
END
$$;
