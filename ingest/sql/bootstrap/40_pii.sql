-- loginvault bootstrap: pii.
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
