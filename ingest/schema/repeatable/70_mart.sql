-- The mart schema and its tables (session setting loginvault.mart_schema, default public):
-- analysts read there; the
-- transformer fills user_logins and rejected_login_events, which the bootstrap creates from
-- their declared shapes (21_shapes.sql) and hands to it. No workload may create in the mart
-- schema: `public` holds pgcrypto's functions, which the definer functions call, and an
-- overload made there could change what they call. A bare user_logins of the original
-- exercise's DDL (no message_id) is replaced: dropped when empty, else kept as
-- user_logins_before_loginvault.
--
-- Here and not in a migration: the mart schema is named at each bootstrap, and one named
-- later gets its marts too. A one-off change of a mart is a migration for the databases that
-- have it (to_regclass) and an edit of its declaration (21_shapes.sql) for the new ones.
DO $$
DECLARE
    mart text := coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public');
    existing regclass;
BEGIN
    IF mart IN ('raw', 'staging', 'pii', 'loginvault', 'pg_catalog', 'information_schema') THEN
        RAISE EXCEPTION 'LOGINVAULT_MART_SCHEMA may not be %: that schema has another owner and purpose', mart;
    END IF;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', mart);
    -- USAGE: dbt fills the marts, analysts read them, the recovery functions count logins
    -- there, the erasure deletes a subject's rows. CREATE: nobody (on `public` too, which
    -- PUBLIC held before PostgreSQL 15).
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC, loginvault_transformer', mart);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loginvault_transformer, loginvault_analyst, loginvault_recovery, loginvault_eraser', mart);
    existing := to_regclass(format('%I.user_logins', mart));
    IF existing IS NOT NULL AND NOT EXISTS (
        SELECT FROM pg_attribute WHERE attrelid = existing AND attname = 'message_id' AND NOT attisdropped
    ) THEN
        -- Loginvault's own mart (its guard is its child) that lost message_id was altered after
        -- a bootstrap made it (its owner can drop the column from the table ONLY): not a table
        -- of the original exercise to keep aside. Renamed, it would keep the guard, and the new
        -- mart would get none and none of its indexes; the admin decides what becomes of it.
        IF EXISTS (
            SELECT FROM pg_inherits AS i
            WHERE i.inhparent = existing AND i.inhrelid = to_regclass(loginvault.guard_of(quote_ident(mart) || '.user_logins'))
        ) THEN
            RAISE EXCEPTION '%.user_logins is loginvault''s mart but has lost its column message_id: it was altered after the bootstrap made it (`loginvault check` names it); restore the column, or drop the table as the admin, then run the bootstrap again', mart
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        -- Never read (a view, a policy or an expression of its owner's would run in the admin's
        -- session, and SET ROLE is no boundary: such code could RESET it): a plain table with no
        -- data pages at all is empty; anything else is kept.
        IF (SELECT c.relkind = 'r' AND NOT c.relhassubclass FROM pg_class AS c WHERE c.oid = existing)
            AND pg_relation_size(existing) = 0 THEN
            EXECUTE format('DROP TABLE %s', existing);
            RAISE NOTICE 'dropped the empty pre-existing %.user_logins: dbt builds it with the same DDL plus message_id, app_version_text', mart;
        ELSE
            EXECUTE format('ALTER TABLE %s RENAME TO user_logins_before_loginvault', existing);
            RAISE NOTICE 'kept the pre-existing %.user_logins (not empty, or not a plain table) as user_logins_before_loginvault', mart;
        END IF;
    END IF;
END
$$;

-- The marts, from their declared shapes, owned by the transformer (dbt fills them: the
-- loginvault_declared materialization), with the index the incremental models and the
-- erasure look messages up by. Grants as the models' +grants (dbt keeps them so).
DO $$
DECLARE
    mart text := quote_ident(coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public'));
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_logins', 'rejected_login_events'] LOOP
        IF loginvault.create_declared_table(mart || '.' || t) THEN
            EXECUTE format('CREATE UNIQUE INDEX %I ON %s.%I (message_id)', t || '_message_id_key', mart, t);
        END IF;
        PERFORM loginvault.ensure_guard(mart || '.' || t);
        EXECUTE format('GRANT SELECT ON %s.%I TO loginvault_analyst, loginvault_recovery, loginvault_eraser', mart, t);
        EXECUTE format('GRANT DELETE ON %s.%I TO loginvault_eraser', mart, t);
    END LOOP;
END
$$;

-- The analysts' indexes on user_logins (docs/operations.md, "Scale"; bench/scale.py): one
-- user's logins (user_id), the users sharing a masked IP (masked_ip), and counts over a range
-- of days (create_date, app_version: read from the index alone). Plain btree indexes on
-- columns (built-in operator classes: the shape check accepts them), made by the bootstrap
-- and owned with the table: the transformer creates nothing. Here, not in a migration: a mart
-- schema named at a later bootstrap gets them too, and a database that has the marts already
-- gets them when it is bootstrapped again (IF NOT EXISTS: nothing for one that has them). No
-- workload can have made one of these names first: CREATE INDEX needs CREATE on the schema,
-- which none holds here, not even the tables' owner (test_shapes.py, CREATIONS).
DO $$
DECLARE
    mart text := quote_ident(coalesce(nullif(current_setting('loginvault.mart_schema', true), ''), 'public'));
BEGIN
    EXECUTE format('CREATE INDEX IF NOT EXISTS user_logins_user_id_idx ON %s.user_logins (user_id)', mart);
    EXECUTE format('CREATE INDEX IF NOT EXISTS user_logins_masked_ip_idx ON %s.user_logins (masked_ip)', mart);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS user_logins_create_date_idx ON %s.user_logins (create_date, app_version)', mart
    );
END
$$;
