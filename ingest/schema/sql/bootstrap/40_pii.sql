-- loginvault bootstrap: pii.
-- Owned by the admin, so that the transformer (which fills pii.vault here) can neither drop
-- nor rewrite the recovery audit or the recovery functions. Nobody creates here: the officers'
-- functions live here, and an overload made here could catch their calls.
CREATE SCHEMA IF NOT EXISTS pii;
ALTER SCHEMA pii OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA pii FROM PUBLIC, loginvault_pii_admin, loginvault_transformer;
-- USAGE: dbt fills pii.vault and the rotation pii.token_map (transformer), to file and read
-- requests (pii-admin), to serve them (the recovery service), to read the audit (auditor), and
-- for the functions' owner to reach the vault.
GRANT USAGE ON SCHEMA pii TO loginvault_transformer, loginvault_pii_admin, loginvault_auditor, loginvault_recovery,
    loginvault_recovery_service;

-- The vault, from its declared shape (21_shapes.sql), owned by the transformer: dbt fills it
-- (the loginvault_declared materialization). Each (token, kind) once. Grants as the model's
-- +grants: the recovery functions' owner reads it, the erasure's reads and shreds.
DO $$
BEGIN
    IF loginvault.create_declared_table('pii.vault') THEN
        ALTER TABLE pii.vault ADD CONSTRAINT vault_token_kind_key UNIQUE (token, kind),
            ADD CONSTRAINT vault_kind_check CHECK (kind IN ('ip', 'device_id'));
    END IF;
END
$$;
SELECT loginvault.ensure_guard('pii.vault');
GRANT SELECT ON pii.vault TO loginvault_recovery, loginvault_eraser;
GRANT DELETE ON pii.vault TO loginvault_eraser;

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

-- Recovery and erasure are requests (65_requests.sql): a privacy officer's session commits
-- one through a SECURITY DEFINER function that records who, when, from where and why from the
-- session; the recovery service (its own login, the keys in its session) takes it, does the
-- lookup or the erasure, and commits the audit row and the answer in one transaction. Nothing
-- the officer's session does to its own transaction can yield an answer without that audit.
-- All owned by the admin; only the functions' owner (loginvault_recovery) writes them.
CREATE TABLE IF NOT EXISTS pii.recovery_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    login_user       text        NOT NULL,
    client_addr      inet,
    application_name text,
    kind             text        NOT NULL CHECK (kind IN ('recover_value', 'recover_token', 'erase')),
    -- recover_value: the token asked about; recover_token: the computed token, once answered.
    token            text,
    value_kind       text        CHECK (value_kind IN ('ip', 'device_id')),
    dry_run          boolean     NOT NULL DEFAULT false,
    reason           text        NOT NULL,
    -- pending → (awaiting_approval → approved | rejected) → answered | refused | failed;
    -- cancelled (by the asker), expired (not taken, or its answer not read, in time); read.
    state            text        NOT NULL CHECK (state IN ('pending', 'awaiting_approval', 'approved', 'rejected',
                                                           'answered', 'read', 'refused', 'failed', 'cancelled', 'expired')),
    outcome          text,
    finished_at      timestamptz
);
CREATE INDEX IF NOT EXISTS recovery_requests_waiting_idx ON pii.recovery_requests (id)
    WHERE state IN ('pending', 'awaiting_approval', 'approved');
ALTER TABLE pii.recovery_requests OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_requests FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON pii.recovery_requests TO loginvault_recovery;
-- The auditor: who asked for what and why (no cleartext is ever in this table).
GRANT SELECT ON pii.recovery_requests TO loginvault_auditor;
COMMENT ON TABLE pii.recovery_requests IS
    'Recovery and erasure requests: who asked, when, from where, why, and what became of them (no cleartext).';

-- The cleartext a request carries (the value of recover_token, the user id of erase), until
-- the service takes it (or the request ends otherwise): never readable but by the functions.
CREATE TABLE IF NOT EXISTS pii.recovery_inputs (
    request_id bigint PRIMARY KEY REFERENCES pii.recovery_requests (id),
    value      text   NOT NULL
);
ALTER TABLE pii.recovery_inputs OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_inputs FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON pii.recovery_inputs TO loginvault_recovery;

-- Answers, readable once by the requesting login (pii.take_answer), gone at expires_at.
CREATE TABLE IF NOT EXISTS pii.recovery_answers (
    request_id bigint      PRIMARY KEY REFERENCES pii.recovery_requests (id),
    answer     jsonb       NOT NULL,
    expires_at timestamptz NOT NULL
);
ALTER TABLE pii.recovery_answers OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_answers FROM PUBLIC;
-- UPDATE: only to lock an expired answer before deleting it (one its asker holds is left).
GRANT SELECT, INSERT, UPDATE, DELETE ON pii.recovery_answers TO loginvault_recovery;

-- Four eyes (the service's LOGINVAULT_RECOVERY_APPROVALS=1): each approval or rejection.
CREATE TABLE IF NOT EXISTS pii.recovery_approvals (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at       timestamptz NOT NULL DEFAULT now(),
    request_id       bigint      NOT NULL REFERENCES pii.recovery_requests (id),
    login_user       text        NOT NULL,
    client_addr      inet,
    application_name text,
    decision         text        NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reason           text        NOT NULL
);
ALTER TABLE pii.recovery_approvals OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_approvals FROM PUBLIC;
GRANT SELECT, INSERT ON pii.recovery_approvals TO loginvault_recovery;
GRANT SELECT ON pii.recovery_approvals TO loginvault_auditor;
COMMENT ON TABLE pii.recovery_approvals IS 'Four eyes: who approved or rejected which recovery or erasure request, and why.';

-- One row per login that asked: the recovery service locks it (FOR UPDATE) while it counts and
-- uses the login's budget, so that concurrent requests are counted one at a time. A table, not
-- an advisory lock: no other role can take (and hold) this lock.
CREATE TABLE IF NOT EXISTS pii.recovery_budget_locks (
    login text PRIMARY KEY
);
ALTER TABLE pii.recovery_budget_locks OWNER TO CURRENT_USER;
REVOKE ALL ON pii.recovery_budget_locks FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON pii.recovery_budget_locks TO loginvault_recovery;

-- Which request a lookup's audit row answered (NULL on rows from before requests).
ALTER TABLE pii.recovery_audit ADD COLUMN IF NOT EXISTS request_id bigint;
