-- raw's partition upkeep and retention.
-- SECURITY DEFINER functions owned by loginvault_owner (the raw tables' owner), search_path
-- pinned, and the time zone and date style too (a day's bounds are written into SQL text: a
-- caller's TimeZone or DateStyle must not move them): the transform makes partitions ahead of
-- time, and `loginvault retention apply` (as dbt's login) drops whole days of cleartext,
-- without either holding more than these functions do. They decide for themselves what may go:
-- a caller cannot make them drop a day whose messages have not reached the marts.

-- The day partitions of raw.login_events for [first_day, last_day] (UTC), made if missing.
CREATE OR REPLACE FUNCTION raw.ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
    SELECT loginvault.ensure_day_partitions('raw.login_events', first_day, last_day)
$fn$;

-- The marts' watermark: the start of the last run whose user_logins, rejected_login_events and
-- vault all took what staging had; NULL before the first such run. Every load the staging
-- took by then (staging.stg_sqs__loads) is in the marts and the vault.
CREATE OR REPLACE FUNCTION raw.marts_watermark() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    high timestamptz;
    -- The transformer's tables: locked and checked against their declared shapes (the locks
    -- hold until the caller's transaction ends: apply_retention reads stg_sqs__loads again).
    marks regclass := loginvault.checked_relation('staging.loginvault_watermarks');
    loads regclass := loginvault.checked_relation('staging.stg_sqs__loads');
BEGIN
    IF marks IS NULL OR loads IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT min(w.high) INTO high FROM staging.loginvault_watermarks AS w
    WHERE w.model IN ('user_logins', 'rejected_login_events', 'vault')
    HAVING count(*) = 3;
    RETURN high;
END
$fn$;

-- The rows (their ctid) of raw.login_events's partition `part` received in [lo, hi) (hi NULL:
-- no end; the range prunes the scan to the partitions it covers) whose message is in neither
-- user_logins nor rejected_login_events (the mart schema of pii.settings); every such row
-- before the marts are built. Owned by loginvault_eraser (the NOLOGIN role that reads both raw
-- and the marts); only raw's owner may call it, from raw.apply_retention, which so checks the
-- marts themselves, not staging's bookkeeping alone.
-- The anti-joins probe the marts' unique message_id indexes row by row (hash and merge joins
-- off): a day's rows against marts of any size, not a hash of the whole mart for every day
-- (bench `scale`: 73 vs 361 ms a day at 1,000,000 messages, and the hash grew with history); no
-- JIT (it compiled the hash join's plan for every partition: ~180 ms a day).
CREATE OR REPLACE FUNCTION raw.rows_outside_marts(part regclass, lo timestamptz, hi timestamptz)
RETURNS TABLE (row_id tid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres'
SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $fn$
DECLARE
    mart text := (SELECT s.value FROM pii.settings AS s WHERE s.name = 'mart_schema');
    logins_rel regclass;
    rejected_rel regclass;
    bounds text := format('r.tableoid = %s AND r.received_at >= %L', part::oid, lo)
        || CASE WHEN hi IS NULL THEN '' ELSE format(' AND r.received_at < %L', hi) END;
BEGIN
    PERFORM loginvault.checked_relation('raw.login_events', 'ACCESS SHARE');
    logins_rel := loginvault.checked_relation(format('%I.user_logins', mart));
    rejected_rel := loginvault.checked_relation(format('%I.rejected_login_events', mart));
    IF logins_rel IS NULL OR rejected_rel IS NULL THEN
        RETURN QUERY EXECUTE format('SELECT r.ctid FROM raw.login_events AS r WHERE %s', bounds);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT r.ctid FROM raw.login_events AS r WHERE %s'
        ' AND NOT EXISTS (SELECT FROM %s AS u WHERE u.message_id = r.message_id)'
        ' AND NOT EXISTS (SELECT FROM %s AS j WHERE j.message_id = r.message_id)', bounds, logins_rel, rejected_rel);
END
$fn$;

-- Drops each day partition of raw.login_events that lies wholly before `cutoff` and whose
-- every load reached the marts (or never completed: its messages were not deleted from the
-- queue, so they were delivered again) and every message is in user_logins or
-- rejected_login_events (raw.rows_outside_marts); deletes such rows from the default
-- partition, with those received after now + 1 day (rejected: received_at_out_of_range).
-- Keeps, and says why, every other day before the cutoff. A cutoff later than now - 1 day is
-- refused: no caller makes it drop the cleartext of the day being loaded. With `dry_run`, only says. One row per day
-- looked at (and one for the default partition when it held such rows).
CREATE OR REPLACE FUNCTION raw.apply_retention(cutoff timestamptz, dry_run boolean)
RETURNS TABLE (day date, partition text, rows bigint, removed boolean, kept_because text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    watermark timestamptz := raw.marts_watermark();
    p record;
    loads text[];
    waiting integer;
    removed_parts integer := 0;
    removed_rows bigint := 0;
    fallback regclass := to_regclass('raw.login_events_default');
BEGIN
    IF cutoff IS NULL OR NOT isfinite(cutoff) OR cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'a retention cutoff must be at least 1 day ago, got %', cutoff
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('lock_timeout', '60s', true);
    PERFORM loginvault.checked_relation('raw.login_events', 'ACCESS SHARE');
    PERFORM loginvault.checked_relation('raw._dlt_loads', 'ACCESS SHARE');
    FOR p IN
        SELECT d.partition, d.day FROM loginvault.day_partitions('raw.login_events') AS d
        WHERE (d.day + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff
    LOOP
        -- The partition's distinct loads, by a skip scan of its _dlt_load_id index.
        EXECUTE format(
            'WITH RECURSIVE l (id) AS ('
            '  (SELECT _dlt_load_id FROM %1$s ORDER BY _dlt_load_id LIMIT 1)'
            '  UNION ALL'
            '  SELECT (SELECT _dlt_load_id FROM %1$s WHERE _dlt_load_id > l.id ORDER BY _dlt_load_id LIMIT 1)'
            '  FROM l WHERE l.id IS NOT NULL'
            ') SELECT coalesce(array_agg(id) FILTER (WHERE id IS NOT NULL), ''{}'') FROM l', p.partition)
            INTO loads;
        SELECT count(*) INTO waiting FROM unnest(loads) AS l (id)
        WHERE EXISTS (SELECT FROM raw._dlt_loads AS d WHERE d.load_id = l.id)
          AND (watermark IS NULL OR NOT EXISTS (
              SELECT FROM staging.stg_sqs__loads AS s WHERE s.load_id = l.id AND s._transformed_at <= watermark));
        rows := loginvault.row_count(p.partition);
        IF waiting > 0 THEN
            RETURN QUERY SELECT p.day, p.partition::text, rows, false,
                format('%s of its %s loads have not reached the marts yet (their watermark: %s): run a transform first',
                       waiting, cardinality(loads), coalesce(watermark::text, 'no build yet'));
            CONTINUE;
        END IF;
        SELECT count(*) INTO waiting FROM raw.rows_outside_marts(
            p.partition, p.day::timestamp AT TIME ZONE 'UTC', (p.day + 1)::timestamp AT TIME ZONE 'UTC');
        IF waiting > 0 THEN
            RETURN QUERY SELECT p.day, p.partition::text, rows, false,
                format('%s of its rows are in neither user_logins nor rejected_login_events: run a transform first', waiting);
            CONTINUE;
        END IF;
        IF NOT dry_run THEN
            EXECUTE format('DROP TABLE %s', p.partition);
        END IF;
        removed_parts := removed_parts + 1;
        removed_rows := removed_rows + rows;
        RETURN QUERY SELECT p.day, p.partition::text, rows, true, NULL::text;
    END LOOP;
    -- Rows in the default partition of old days (a day without a partition when they landed)
    -- or outside the accepted window (a hostile received_at: rejected), once in the marts.
    IF fallback IS NOT NULL AND watermark IS NOT NULL THEN
        EXECUTE format(
            'WITH outside AS ('
            '  SELECT o.row_id FROM raw.rows_outside_marts($3, ''-infinity'', $1) AS o'
            '  UNION ALL SELECT o.row_id FROM raw.rows_outside_marts($3, now() + interval ''1 day'', NULL) AS o'
            '), gone AS (DELETE FROM %s AS r WHERE NOT $4 AND (r.received_at < $1 OR r.received_at >= now() + interval ''1 day'')'
            ' AND r.ctid NOT IN (SELECT row_id FROM outside) AND ('
            '  NOT EXISTS (SELECT FROM raw._dlt_loads AS d WHERE d.load_id = r._dlt_load_id)'
            '  OR EXISTS (SELECT FROM staging.stg_sqs__loads AS s WHERE s.load_id = r._dlt_load_id AND s._transformed_at <= $2))'
            ' RETURNING 1) '
            'SELECT CASE WHEN $4 THEN (SELECT count(*) FROM %s AS r WHERE (r.received_at < $1 OR r.received_at >= now() + interval ''1 day'')'
            ' AND r.ctid NOT IN (SELECT row_id FROM outside) AND ('
            '  NOT EXISTS (SELECT FROM raw._dlt_loads AS d WHERE d.load_id = r._dlt_load_id)'
            '  OR EXISTS (SELECT FROM staging.stg_sqs__loads AS s WHERE s.load_id = r._dlt_load_id AND s._transformed_at <= $2)))'
            ' ELSE (SELECT count(*) FROM gone) END',
            fallback, fallback) INTO rows USING greatest(cutoff, now() - interval '400 days'), watermark, fallback, dry_run;
        IF rows > 0 THEN
            removed_rows := removed_rows + rows;
            RETURN QUERY SELECT NULL::date, fallback::text, rows, true, NULL::text;
        END IF;
    END IF;
    IF NOT dry_run AND removed_rows > 0 THEN
        INSERT INTO raw.retention_log (cutoff, raw_partitions, raw_rows) VALUES (cutoff, removed_parts, removed_rows);
    END IF;
END
$fn$;

-- A table's rows without reading it when PostgreSQL's statistics know them (reltuples, kept by
-- VACUUM, ANALYZE and autovacuum: exact for a day partition that no longer changes once it
-- has been vacuumed); counted otherwise. Retention then costs per day, not per row.
CREATE OR REPLACE FUNCTION loginvault.row_count(rel regclass) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    n bigint := (SELECT reltuples::bigint FROM pg_class WHERE oid = rel);
BEGIN
    IF n IS NULL OR n < 0 THEN
        EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
    END IF;
    RETURN n;
END
$fn$;

-- The start of the oldest cleartext in `parent`: the oldest received_at in its default
-- partition (a finite one: `-infinity` is a hostile row, rejected), or else the start of its
-- oldest day partition that holds a row (a probe of one page each, oldest first); the exact time
-- for a table that is not partitioned. NULL: empty.
CREATE OR REPLACE FUNCTION loginvault.oldest_received(parent regclass) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    p record;
    held boolean;
    oldest timestamptz;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = parent) <> 'p' THEN
        EXECUTE format('SELECT min(received_at) FROM %s WHERE isfinite(received_at)', parent) INTO oldest;
        RETURN oldest;
    END IF;
    FOR p IN
        SELECT i.inhrelid::regclass AS rel FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    LOOP
        EXECUTE format('SELECT min(received_at) FROM %s WHERE isfinite(received_at)', p.rel) INTO oldest;
    END LOOP;
    FOR p IN SELECT d.partition, d.day FROM loginvault.day_partitions(parent) AS d ORDER BY d.day LOOP
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', p.partition) INTO held;
        IF held THEN
            RETURN least(oldest, p.day::timestamp AT TIME ZONE 'UTC');
        END IF;
    END LOOP;
    RETURN oldest;
END
$fn$;
REVOKE ALL ON FUNCTION loginvault.oldest_received(regclass), loginvault.row_count(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION loginvault.oldest_received(regclass), loginvault.row_count(regclass)
    TO loginvault_transformer, loginvault_owner;

-- raw's oldest cleartext (for `retention apply`'s report and its age line).
CREATE OR REPLACE FUNCTION raw.oldest_cleartext() RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
    SELECT loginvault.oldest_received('raw.login_events')
$fn$;

ALTER FUNCTION raw.ensure_partitions(date, date) OWNER TO loginvault_owner;
ALTER FUNCTION raw.oldest_cleartext() OWNER TO loginvault_owner;
ALTER FUNCTION raw.marts_watermark() OWNER TO loginvault_owner;
ALTER FUNCTION raw.apply_retention(timestamptz, boolean) OWNER TO loginvault_owner;
ALTER FUNCTION raw.rows_outside_marts(regclass, timestamptz, timestamptz) OWNER TO loginvault_eraser;
REVOKE ALL ON FUNCTION raw.rows_outside_marts(regclass, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION raw.rows_outside_marts(regclass, timestamptz, timestamptz) TO loginvault_owner;
REVOKE ALL ON FUNCTION raw.ensure_partitions(date, date), raw.marts_watermark(),
    raw.apply_retention(timestamptz, boolean), raw.oldest_cleartext() FROM PUBLIC;
-- The transformer: partitions ahead of each build; `retention apply` (as dbt's login).
GRANT EXECUTE ON FUNCTION raw.ensure_partitions(date, date), raw.marts_watermark(),
    raw.apply_retention(timestamptz, boolean), raw.oldest_cleartext() TO loginvault_transformer;

-- A week ahead, and yesterday (a row received just before midnight, loaded just after).
SELECT raw.ensure_partitions(((now() AT TIME ZONE 'UTC')::date - 1), ((now() AT TIME ZONE 'UTC')::date + 7));
