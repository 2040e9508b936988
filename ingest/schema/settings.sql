-- The bootstrap's settings, written by every bootstrap (after the migrations and the repeatable
-- definitions), each only when it differs: rows of the admin's tables, no DDL.

-- loginvault.recovery_daily_budget: set by the bootstrap command from
-- LOGINVAULT_RECOVERY_DAILY_BUDGET; unset keeps what is there (200 on a new database).
INSERT INTO pii.recovery_budget AS b (login, daily_lookups)
VALUES ('*', coalesce(nullif(current_setting('loginvault.recovery_daily_budget', TRUE), '')::integer, 200))
ON CONFLICT (login) DO UPDATE SET daily_lookups = excluded.daily_lookups
WHERE nullif(current_setting('loginvault.recovery_daily_budget', TRUE), '') IS NOT NULL
    AND b.daily_lookups <> excluded.daily_lookups;

-- Where the marts are, for the recovery functions (value → token counts logins there).
INSERT INTO pii.settings AS s (name, value)
VALUES ('mart_schema', coalesce(nullif(current_setting('loginvault.mart_schema', TRUE), ''), 'public'))
ON CONFLICT (name) DO UPDATE SET value = excluded.value
WHERE s.value <> excluded.value;
