-- loginvault bootstrap: the mart schema.
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
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loginvault_analyst, loginvault_recovery, loginvault_eraser', mart);
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
        WHERE ((n.nspname = 'pii' AND c.relname = 'vault') OR n.nspname = mart) AND c.relkind IN ('r', 'p', 'v', 'm')
          AND has_table_privilege('loginvault_pii_admin', c.oid, 'SELECT')
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM loginvault_pii_admin', t);
    END LOOP;
END
$$;
