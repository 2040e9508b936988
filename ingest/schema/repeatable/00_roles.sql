-- Loginvault's repeatable definitions, in the order of the file names: the database's
-- privileges (here), raw's grants and load guards, the project's functions, the shape
-- declaration, staging, pii and the key registry, the recovery functions, the marts; every
-- grant with its reason. The tables they name are the migrations' (ingest/schema/migrations).
--
-- Safe to run again, and run again whole whenever any of them changes (or the mart schema
-- does): by the bootstrap, as an admin (superuser, or RDS's master user), after the
-- migrations, in the same ONE transaction that holds the bootstrap's advisory lock
-- (ingest/schema/bootstrap.py). They never read or write a workload's rows.

-- Nobody gets anything by default in this database.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    -- CONNECT: every workload role (their logins inherit it).
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO loginvault_loader, loginvault_transformer,'
                   ' loginvault_analyst, loginvault_pii_admin, loginvault_auditor, loginvault_recovery_service',
                   current_database());
    -- TEMPORARY: dbt's incremental models and unit tests stage rows in temporary tables; the
    -- erasure function collects a subject's messages in one.
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO loginvault_transformer, loginvault_eraser', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;


-- Advisory locks coordinate the project's work: the bootstrap's, and the transform lock that a
-- build, a key rotation, a retention run and an erasure take so as never to run together. A login
-- that could take them could hold them and stop the pipeline (or the recovery service). Only the
-- roles that take them keep them: the transformer (its commands' lock), the recovery
-- functions' owner (an erasure's) and raw's owner (its load guards' transaction locks). Changing
-- a pg_catalog function's privileges needs a superuser; where the admin is none (RDS's master
-- user), nothing changes here: docs/operations.md says what that leaves open and how to see it.
DO $$
DECLARE
    f text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'not a superuser: the advisory lock functions stay executable by every login';
        RETURN;
    END IF;
    FOREACH f IN ARRAY ARRAY[
        'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared',
        'pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared', 'pg_try_advisory_xact_lock',
        'pg_try_advisory_xact_lock_shared'
    ] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION pg_catalog.%I(bigint), pg_catalog.%I(integer, integer) FROM PUBLIC', f, f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION pg_catalog.%I(bigint), pg_catalog.%I(integer, integer)'
                       ' TO loginvault_transformer, loginvault_recovery', f, f);
    END LOOP;
    -- Raw's owner (NOLOGIN, no members): its load guards take a transaction lock per load id, so
    -- that rows under a load and the load's record take turns (15_raw_loads.sql).
    GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(integer, integer),
        pg_catalog.pg_advisory_xact_lock_shared(integer, integer) TO loginvault_owner;
END
$$;
