-- The project's functions.
-- Safe parsers and the tamper check, owned by the admin: dbt, the recovery functions and the
-- pre-flight checks call them, and no workload can replace them. The parsers run in the
-- caller's search_path (no SET clause: it would cost a settings save and restore per row);
-- the recovery functions, their only callers besides dbt, pin theirs. PostgreSQL 15 has no
-- pg_input_is_valid(), so each parser catches its own error: a malformed body or IP becomes
-- NULL, never a failed run. Catching an error opens a subtransaction, which parallel query
-- forbids: hence `parallel unsafe`.
REVOKE ALL ON SCHEMA loginvault FROM PUBLIC;
GRANT USAGE ON SCHEMA loginvault TO loginvault_transformer, loginvault_recovery, loginvault_owner, loginvault_eraser;

-- jsonb of a body, or NULL when it is not JSON or holds what jsonb cannot store.
CREATE OR REPLACE FUNCTION loginvault.try_jsonb(body text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$fn$;

-- Why a body does not parse: unsupported_json_escape (\u0000; jsonb cannot store it) or
-- invalid_json (syntax, lone surrogates, nesting too deep, numbers beyond numeric's range);
-- NULL when it parses.
CREATE OR REPLACE FUNCTION loginvault.json_error(body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    PERFORM body::jsonb;
    RETURN NULL;
EXCEPTION
    WHEN untranslatable_character THEN
        -- jsonb stops at the first \u0000, before it has seen the rest: the body is
        -- invalid_json if it still does not parse with every \u0000 escape replaced (escaped
        -- backslashes first, so that "\\u0000" stays text).
        BEGIN
            PERFORM regexp_replace(regexp_replace(body, '\\\\', 'x', 'g'), '\\u0000', 'x', 'g')::jsonb;
            RETURN 'unsupported_json_escape';
        EXCEPTION WHEN others THEN
            RETURN 'invalid_json';
        END;
    WHEN others THEN RETURN 'invalid_json';
END
$fn$;

-- inet of a single IPv4/IPv6 address, or NULL: no masks, zone ids, spaces, or IPv4 octets
-- with leading zeros (ambiguous: octal to some parsers). A dotted IPv4 part must be four
-- octets at the end: inet itself also takes "1.2.3.4." and "::1.2.3" (as ::1.2.3.0).
CREATE OR REPLACE FUNCTION loginvault.try_inet(value text) RETURNS inet
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $fn$
BEGIN
    IF value !~ '^[0-9A-Fa-f:.]+$'
        OR (value ~ '\.' AND (
            value !~ '(^|:)([0-9]{1,3}\.){3}[0-9]{1,3}$' OR value ~ '(^|[:.])0[0-9]+(\.|$)'
        )) THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN value::inet;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$fn$;

-- The form a PII value is tokenized and encrypted in: host(inet) for an IP (valid IPv4/IPv6
-- only), the space-trimmed string for a device id; NULL when it is not a valid value of kind.
-- A plain SQL expression (not strict, no SET clause), so that the planner inlines it into
-- dbt's queries. A dotted quad of decimal octets 0-255 without leading zeros (what try_inet
-- takes as IPv4, and most IPs are) is cast directly: the same result without a call of
-- try_inet and its subtransaction (half the cost of validating and tokenizing an IP).
CREATE OR REPLACE FUNCTION loginvault.canonical_pii(kind text, value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL UNSAFE AS $fn$
    SELECT CASE kind
        WHEN 'ip' THEN CASE
            WHEN value ~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$'
                THEN host(value::inet)
            ELSE host(loginvault.try_inet(value))
        END
        WHEN 'device_id' THEN nullif(btrim(value), '')
    END
$fn$;

-- What a transform reads that another role owns, checked before any model runs: by the
-- `transform` command before dbt starts, and by the staging model's pre-hook in the
-- transaction that reads raw (locked first, so nothing can change between check and read).
CREATE OR REPLACE FUNCTION loginvault.assert_transform_inputs() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'raw') <> 'loginvault_owner' THEN
        RAISE EXCEPTION 'refusing to read schema raw: it is not owned by loginvault_owner (run the bootstrap)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Locked, then checked against their declared shapes (nothing can change until the
    -- transaction ends).
    PERFORM loginvault.checked_relation('raw.login_events', 'ACCESS SHARE');
    PERFORM loginvault.checked_relation('raw._dlt_loads', 'ACCESS SHARE');
END
$fn$;

-- Day partitions (the UTC day of `received_at`) of a table partitioned by range on it, named
-- <table>_pYYYYMMDD: raw.login_events and staging.stg_sqs__login_events.
CREATE OR REPLACE FUNCTION loginvault.day_partitions(parent regclass)
RETURNS TABLE (partition regclass, day date)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT c.oid::regclass, to_date(right(c.relname, 8), 'YYYYMMDD')
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND c.relname ~ '_p[0-9]{8}$'
    ORDER BY 2
$fn$;

-- Creates the missing day partitions of `parent` for each day in [first_day, last_day] (their
-- bounds written in UTC and ISO whatever the caller's TimeZone and DateStyle), as the
-- caller (who must own `parent`: the partitions are the caller's). Rows of such a day that
-- sit in the default partition are moved into the new one (a partition cannot be created
-- over rows of its range in the default). Returns how many it created.
CREATE OR REPLACE FUNCTION loginvault.ensure_day_partitions(parent regclass, first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC' SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' AS $fn$
DECLARE
    schema_name text := (SELECT nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent);
    table_name text := (SELECT relname FROM pg_class WHERE oid = parent);
    fallback regclass := (
        SELECT i.inhrelid::regclass FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    );
    d date;
    lo timestamptz;
    hi timestamptz;
    name text;
    moving boolean;
    created integer := 0;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = parent) <> 'p' THEN
        RETURN 0;  -- not partitioned (a database of an earlier version)
    END IF;
    FOR d IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        name := table_name || '_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('%I.%I', schema_name, name)) IS NOT NULL;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        moving := false;
        IF fallback IS NOT NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE received_at >= $1 AND received_at < $2)', fallback)
                INTO moving USING lo, hi;
        END IF;
        IF moving THEN
            EXECUTE format('CREATE TABLE %I.%I (LIKE %s)', schema_name, name || '_moving', parent);
            EXECUTE format('WITH m AS (DELETE FROM %s WHERE received_at >= $1 AND received_at < $2 RETURNING *)'
                           ' INSERT INTO %I.%I SELECT * FROM m', fallback, schema_name, name || '_moving') USING lo, hi;
        END IF;
        BEGIN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', schema_name, name, parent, lo, hi);
        EXCEPTION WHEN duplicate_table THEN
            CONTINUE;  -- made by a session that ran this at the same time
        END;
        IF moving THEN
            -- Into the partition itself: an INSERT through the parent would fire its triggers
            -- (raw's refuses rows of recorded loads, and these rows are of such loads).
            EXECUTE format('INSERT INTO %I.%I SELECT * FROM %I.%I', schema_name, name, schema_name, name || '_moving');
            EXECUTE format('DROP TABLE %I.%I', schema_name, name || '_moving');
        END IF;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA loginvault FROM PUBLIC;
-- The transformer: the parsers (staging, validation, masking) and its pre-flight check.
GRANT EXECUTE ON FUNCTION loginvault.try_jsonb(text), loginvault.json_error(text), loginvault.try_inet(text),
    loginvault.canonical_pii(text, text), loginvault.assert_transform_inputs(), loginvault.day_partitions(regclass),
    loginvault.ensure_day_partitions(regclass, date, date)
    TO loginvault_transformer;
-- The raw tables' owner (retention and partition upkeep, as SECURITY DEFINER functions).
GRANT EXECUTE ON FUNCTION loginvault.day_partitions(regclass), loginvault.ensure_day_partitions(regclass, date, date)
    TO loginvault_owner;
-- The recovery functions' owner: canonical values.
GRANT EXECUTE ON FUNCTION loginvault.try_inet(text), loginvault.canonical_pii(text, text) TO loginvault_recovery;
