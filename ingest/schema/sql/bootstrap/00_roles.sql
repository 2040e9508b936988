-- loginvault bootstrap, in the order of the file names: extensions, roles (here), the raw
-- tables, the project's functions, staging, pii and the key registry, the recovery functions,
-- the mart schema; every grant with its reason.
--
-- Idempotent, run as an admin (superuser, or RDS's master user) in ONE transaction that holds
-- an advisory lock (ingest/schema/bootstrap.py), so that several processes may run it at once.
-- Ownership rule: nothing that a role's session reads is owned by, or alterable by, a role
-- that should not run code in that session. Every role below is NOLOGIN; each workload logs in
-- with a login of its own that is a member of exactly one of them (docs/architecture.md).

CREATE EXTENSION IF NOT EXISTS pgcrypto;
-- The functions below name pgcrypto's functions in public (with a pinned search_path).
DO $$
DECLARE
    home text := (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto');
BEGIN
    IF home <> 'public' THEN
        RAISE EXCEPTION 'pgcrypto is installed in schema %, loginvault expects public: ALTER EXTENSION pgcrypto SET SCHEMA public', home;
    END IF;
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[
        -- workload roles: each login is a member of exactly one of these
        'loginvault_loader', 'loginvault_transformer', 'loginvault_analyst',
        'loginvault_pii_admin', 'loginvault_auditor', 'loginvault_recovery_service',
        -- owner roles: never granted to a login
        'loginvault_owner', 'loginvault_recovery', 'loginvault_eraser',
        -- the key administrator: the only writer of the key registry (45_keys.sql)
        'loginvault_key_admin'
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
