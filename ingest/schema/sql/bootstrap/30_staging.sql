-- loginvault bootstrap: staging.
-- Owned by the transformer and read only by it (and by nobody's session but its own).
CREATE SCHEMA IF NOT EXISTS staging AUTHORIZATION loginvault_transformer;
REVOKE ALL ON SCHEMA staging FROM PUBLIC;
-- USAGE for raw's owner (retention reads the staged loads and the marts' watermark) and for the
-- erasure functions' owner (it deletes a subject's staged rows).
GRANT USAGE ON SCHEMA staging TO loginvault_owner, loginvault_eraser;
-- Earlier versions created the parsers in staging, as the transformer, on each dbt run.
DROP FUNCTION IF EXISTS staging.loginvault_try_jsonb(text), staging.loginvault_json_error(text),
    staging.loginvault_try_inet(text);

-- Databases of an earlier version kept each message's payload and its deduplication in one
-- unpartitioned staging.stg_sqs__login_events. The next build re-stages raw (which still holds
-- every body then) into stg_sqs__loads, stg_sqs__messages and a day-partitioned
-- stg_sqs__login_events; the marts and the vault keep their rows (they take a message or a
-- value once).
DO $$
BEGIN
    IF to_regclass('staging.stg_sqs__messages') IS NULL
        AND (SELECT relkind FROM pg_class WHERE oid = to_regclass('staging.stg_sqs__login_events')) = 'r' THEN
        DROP TABLE staging.stg_sqs__login_events CASCADE;  -- and the intermediate view: dbt makes it again
    END IF;
END
$$;
