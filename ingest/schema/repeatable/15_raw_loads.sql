-- A load is closed once recorded.
-- The transform takes a load once its raw._dlt_loads row is committed and never looks at it
-- again, so a row appended under a load id already recorded would never be staged. The
-- database refuses it, and a second record of a load: statement-level triggers on both tables
-- (one call per statement, the statement's rows as a transition table: cheap for dlt's COPY of a
-- whole batch), owned by loginvault_owner and SECURITY DEFINER, so that they read
-- raw._dlt_loads, which the loader may not.
--
-- The races a loader's login could use are closed by a transaction-scoped advisory lock per
-- load id (raw.guard_loads): rows under X take it shared, a record of X exclusive, both held to
-- the commit. So X's record waits for every open transaction that added rows under X, and rows
-- under X that come after its record wait for it to commit, then see it and are refused. Each
-- check must read with a snapshot taken after its lock, which only READ COMMITTED gives: a
-- REPEATABLE READ or SERIALIZABLE transaction's snapshot may predate the record, so both tables
-- refuse rows from such a transaction (dlt and every loginvault command use READ COMMITTED).
-- dlt writes a load's rows first and its raw._dlt_loads row last: it is never refused.
--
-- Only the parent tables carry the triggers (a statement trigger of a partitioned table fires
-- for the rows routed to every partition): the loader may insert into the parents only, never
-- into a partition. The owner moves rows between raw's partitions straight into the partition
-- (loginvault.ensure_day_partitions). The shape check accepts exactly these two triggers
-- (loginvault.declared_relations.triggers, 21_shapes.sql).

-- Refuses the load ids `ids` of one statement's rows: of raw._dlt_loads rows (`recording`) when
-- one is recorded more than once, else of raw.login_events rows when one is recorded at all.
-- First it refuses a transaction that is not READ COMMITTED, then takes each id's lock (shared
-- for rows, exclusive for a record) to the end of the transaction, in key order: rows and
-- records take theirs in the same order, so no two statements wait on each other. The key:
-- (0x6c6f6164, "load", hashtext(load id)); a collision only makes two loads take turns.
CREATE OR REPLACE FUNCTION raw.guard_loads(ids text[], recording boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    isolation text := pg_catalog.current_setting('transaction_isolation');
    k integer;
    taken text;
BEGIN
    IF isolation <> 'read committed' THEN
        RAISE EXCEPTION '% takes rows in READ COMMITTED transactions only, not %: an older snapshot could miss a recorded load',
            CASE WHEN recording THEN 'raw._dlt_loads' ELSE 'raw.login_events' END, pg_catalog.upper(isolation)
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    FOR k IN SELECT DISTINCT pg_catalog.hashtext(i.id) FROM pg_catalog.unnest(ids) AS i (id) ORDER BY 1 LOOP
        IF recording THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(1819238756, k);
        ELSE
            PERFORM pg_catalog.pg_advisory_xact_lock_shared(1819238756, k);
        END IF;
    END LOOP;
    -- A statement's AFTER trigger sees its own rows: a load recorded once has one record.
    SELECT l.load_id INTO taken FROM raw._dlt_loads AS l WHERE l.load_id = ANY (ids)
    GROUP BY l.load_id HAVING count(*) > CASE WHEN recording THEN 1 ELSE 0 END LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'load % is already recorded in raw._dlt_loads: %', taken,
            CASE WHEN recording THEN 'it may be recorded once' ELSE 'no row may be added to it' END
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$fn$;

-- The triggers' functions: the statement's load ids (its rows: new_rows, new_loads).
CREATE OR REPLACE FUNCTION raw.refuse_rows_of_recorded_loads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM raw.guard_loads(ARRAY(SELECT DISTINCT n._dlt_load_id FROM new_rows AS n), false);
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION raw.refuse_second_record_of_a_load() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM raw.guard_loads(ARRAY(SELECT DISTINCT n.load_id FROM new_loads AS n), true);
    RETURN NULL;
END
$fn$;

ALTER FUNCTION raw.guard_loads(text[], boolean) OWNER TO loginvault_owner;
ALTER FUNCTION raw.refuse_rows_of_recorded_loads() OWNER TO loginvault_owner;
ALTER FUNCTION raw.refuse_second_record_of_a_load() OWNER TO loginvault_owner;
-- No one calls them: a trigger runs its function without an EXECUTE check.
REVOKE ALL ON FUNCTION raw.guard_loads(text[], boolean), raw.refuse_rows_of_recorded_loads(),
    raw.refuse_second_record_of_a_load() FROM PUBLIC;

-- Made, or made again, only when missing or not as here: a CREATE TRIGGER waits for the loads in
-- flight, and the bootstrap runs again on a live database (every upgrade).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('raw.login_events', 'refuse_rows_of_recorded_loads', 'new_rows'),
            ('raw._dlt_loads', 'refuse_second_record_of_a_load', 'new_loads')
        ) AS v (tab, name, rows)
    LOOP
        CONTINUE WHEN EXISTS (
            SELECT FROM pg_catalog.pg_trigger AS g
            WHERE g.tgrelid = t.tab::regclass AND g.tgname = t.name
              AND g.tgfoid = format('raw.%I()', t.name)::regprocedure
              AND g.tgtype = 4 AND g.tgenabled = 'O' AND g.tgnewtable = t.rows
        );
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', t.name, t.tab);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION raw.%I()', t.name, t.tab, t.rows, t.name);
    END LOOP;
END
$$;
