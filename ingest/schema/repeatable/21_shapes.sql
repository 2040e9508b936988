-- The shapes of the relations that SECURITY DEFINER functions read, and
-- the one function that checks them.
--
-- A definer function runs with more trust than its caller, and several read tables a workload
-- owns (the transformer owns staging, the vault and the marts; dlt's rows come from the
-- loader). Whatever such a table carries that runs code — row-level security, a policy, a
-- trigger, a rule, a child table, a column of a user-defined type with an implicit cast, a
-- domain with a CHECK, an index expression, an operator class — would run as the definer. So
-- the check is an allow-list: before a definer reads a relation it calls
-- loginvault.checked_relation(), which locks it and refuses it unless its owner, kind, column
-- names and built-in column types are exactly the declared ones and nothing else is attached.
--
-- The declaration below is the one place these shapes are written: the baseline migration
-- created the marts and the vault of these shapes (a later change to one is a migration and
-- an edit here, together), 70_mart.sql creates the marts from it in a mart schema that has
-- none, and a test holds it against the dbt contracts (tests/integration/test_shapes.py) so
-- that neither can drift from the other.
-- Relations owned by the bootstrap's admin (the audit, the requests, the key registry) are not
-- declared: only the admin can alter them, and the admin can replace the definers themselves.

REVOKE ALL ON loginvault.declared_relations, loginvault.declared_columns FROM PUBLIC;

-- The declaration (tables of the baseline), replaced whole each time the repeatable definitions
-- are applied (the mart schema is part of their checksum).
DELETE FROM loginvault.declared_relations;
-- Laid out as tables, a row a line (sqlfluff's layout and aliasing rules would break that up);
-- "char" is pg_class.relkind's one-byte type, not char(1).
-- noqa: disable=LT05,LT08,LT09,LT14,AL03,RF02,RF06
WITH mart AS (SELECT coalesce(nullif(current_setting('loginvault.mart_schema', TRUE), ''), 'public') AS schema),
relations (relation, owner, kind, triggers) AS (
    VALUES
        ('raw.login_events', 'loginvault_owner', 'p', '{refuse_rows_of_recorded_loads}'::name[]),
        ('raw._dlt_loads', 'loginvault_owner', 'r', '{refuse_second_record_of_a_load}'),
        ('staging.stg_sqs__loads', 'loginvault_transformer', 'r', '{}'),
        ('staging.stg_sqs__messages', 'loginvault_transformer', 'r', '{}'),
        ('staging.stg_sqs__login_events', 'loginvault_transformer', 'p', '{}'),
        ('staging.loginvault_watermarks', 'loginvault_transformer', 'r', '{}'),
        ('pii.vault', 'loginvault_transformer', 'r', '{}'),
        ('pii.token_map', 'loginvault_transformer', 'r', '{}'),
        ('mart.user_logins', 'loginvault_transformer', 'r', '{}'),
        ('mart.rejected_login_events', 'loginvault_transformer', 'r', '{}')
),
columns (relation, position, column_name, column_type, not_null) AS (
    VALUES
        ('raw.login_events', 1, 'message_id', 'text', TRUE),
        ('raw.login_events', 2, 'body', 'text', TRUE),
        ('raw.login_events', 3, 'sent_at', 'timestamp with time zone', TRUE),
        ('raw.login_events', 4, 'received_at', 'timestamp with time zone', TRUE),
        ('raw.login_events', 5, 'receive_count', 'integer', TRUE),
        ('raw.login_events', 6, 'queue', 'text', TRUE),
        ('raw.login_events', 7, '_dlt_load_id', 'character varying', TRUE),
        ('raw.login_events', 8, '_dlt_id', 'character varying', TRUE),
        ('raw._dlt_loads', 1, 'load_id', 'character varying', TRUE),
        ('raw._dlt_loads', 2, 'schema_name', 'character varying', FALSE),
        ('raw._dlt_loads', 3, 'status', 'bigint', TRUE),
        ('raw._dlt_loads', 4, 'inserted_at', 'timestamp with time zone', TRUE),
        ('raw._dlt_loads', 5, 'schema_version_hash', 'character varying', FALSE),
        ('staging.stg_sqs__loads', 1, 'load_id', 'character varying', FALSE),
        ('staging.stg_sqs__loads', 2, 'completed_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__loads', 3, '_transformed_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__messages', 1, 'message_id', 'text', FALSE),
        ('staging.stg_sqs__messages', 2, 'sent_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__messages', 3, 'received_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__messages', 4, 'receive_count', 'integer', FALSE),
        ('staging.stg_sqs__messages', 5, '_dlt_load_id', 'character varying', FALSE),
        ('staging.stg_sqs__messages', 6, '_dlt_id', 'character varying', FALSE),
        ('staging.stg_sqs__messages', 7, '_transformed_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__login_events', 1, 'message_id', 'text', FALSE),
        ('staging.stg_sqs__login_events', 2, 'sent_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__login_events', 3, 'received_at', 'timestamp with time zone', FALSE),
        ('staging.stg_sqs__login_events', 4, 'receive_count', 'integer', FALSE),
        ('staging.stg_sqs__login_events', 5, 'payload', 'jsonb', FALSE),
        ('staging.stg_sqs__login_events', 6, 'parse_error', 'text', FALSE),
        ('staging.stg_sqs__login_events', 7, '_dlt_load_id', 'character varying', FALSE),
        ('staging.stg_sqs__login_events', 8, '_transformed_at', 'timestamp with time zone', FALSE),
        ('staging.loginvault_watermarks', 1, 'model', 'text', TRUE),
        ('staging.loginvault_watermarks', 2, 'high', 'timestamp with time zone', TRUE),
        ('staging.loginvault_watermarks', 3, 'updated_at', 'timestamp with time zone', TRUE),
        ('pii.vault', 1, 'token', 'character varying(64)', TRUE),
        ('pii.vault', 2, 'kind', 'character varying(16)', TRUE),
        ('pii.vault', 3, 'ciphertext', 'bytea', TRUE),
        ('pii.vault', 4, 'first_seen_at', 'timestamp with time zone', FALSE),
        ('pii.vault', 5, 'hmac_key_version', 'integer', FALSE),
        ('pii.vault', 6, 'encryption_key_version', 'integer', FALSE),
        ('pii.token_map', 1, 'kind', 'text', TRUE),
        ('pii.token_map', 2, 'old_token', 'text', TRUE),
        ('pii.token_map', 3, 'new_token', 'text', TRUE),
        ('pii.token_map', 4, 'from_version', 'integer', TRUE),
        ('pii.token_map', 5, 'to_version', 'integer', TRUE),
        ('mart.user_logins', 1, 'user_id', 'character varying(128)', TRUE),
        ('mart.user_logins', 2, 'device_type', 'character varying(32)', FALSE),
        ('mart.user_logins', 3, 'masked_ip', 'character varying(256)', FALSE),
        ('mart.user_logins', 4, 'masked_device_id', 'character varying(256)', FALSE),
        ('mart.user_logins', 5, 'locale', 'character varying(32)', FALSE),
        ('mart.user_logins', 6, 'app_version', 'integer', FALSE),
        ('mart.user_logins', 7, 'create_date', 'date', TRUE),
        ('mart.user_logins', 8, 'message_id', 'text', TRUE),
        ('mart.user_logins', 9, 'app_version_text', 'text', FALSE),
        ('mart.rejected_login_events', 1, 'message_id', 'text', TRUE),
        ('mart.rejected_login_events', 2, 'reason', 'text', TRUE),
        ('mart.rejected_login_events', 3, 'sent_at', 'timestamp with time zone', FALSE),
        ('mart.rejected_login_events', 4, 'received_at', 'timestamp with time zone', FALSE)
),
named AS (
    SELECT r.relation AS declared,
           CASE WHEN r.relation LIKE 'mart.%' THEN quote_ident((SELECT schema FROM mart)) || substr(r.relation, 5)
                ELSE r.relation END AS relation
    FROM relations AS r
),
inserted AS (
    INSERT INTO loginvault.declared_relations (relation, owner, kind, triggers, guarded)
    SELECT n.relation, r.owner, r.kind::"char", r.triggers, r.relation LIKE 'mart.%' OR r.relation LIKE 'pii.%'
    FROM relations AS r INNER JOIN named AS n ON r.relation = n.declared
    RETURNING relation
)
INSERT INTO loginvault.declared_columns (relation, position, column_name, column_type, not_null)
SELECT n.relation, c.position, c.column_name, c.column_type, c.not_null
FROM columns AS c INNER JOIN named AS n ON c.relation = n.declared
WHERE EXISTS (SELECT FROM inserted AS i WHERE i.relation = n.relation);
-- noqa: enable=all

-- The guard of the declared relation `relation` (its name in schema loginvault).
CREATE OR REPLACE FUNCTION loginvault.guard_of(relation text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT 'loginvault.' || quote_ident(left('guard_' || replace(replace(relation, '"', ''), '.', '_'), 63))
$fn$;

-- What is wrong with `rel` (one of the declared relations, or a partition of one), NULL when
-- nothing: checked against `decl` (its declaration). Every test is of what is allowed.
CREATE OR REPLACE FUNCTION loginvault.shape_problem(rel oid, decl text, is_partition boolean) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    c pg_class := (SELECT x FROM pg_class AS x WHERE x.oid = rel);
    d loginvault.declared_relations := (SELECT x FROM loginvault.declared_relations AS x WHERE x.relation = decl);
    want text;
    have text;
    kind "char" := CASE WHEN is_partition THEN 'r' ELSE d.kind END;
    first_user_oid CONSTANT oid := 16384;  -- FirstNormalObjectId: below it, objects of initdb
BEGIN
    IF c IS NULL THEN
        RETURN 'is gone';
    END IF;
    IF c.relkind <> kind THEN
        RETURN format('is of kind %s, not %s', c.relkind, kind);
    END IF;
    IF c.relpersistence <> 'p' THEN
        -- Unlogged: a crash empties it (and no standby or point-in-time recovery has it).
        RETURN 'is not a logged table';
    END IF;
    IF pg_get_userbyid(c.relowner) <> d.owner THEN
        RETURN format('is owned by %s, not %s', pg_get_userbyid(c.relowner), d.owner);
    END IF;
    IF c.relrowsecurity OR c.relforcerowsecurity OR EXISTS (SELECT FROM pg_policy AS p WHERE p.polrelid = rel) THEN
        RETURN 'has row-level security or policies';
    END IF;
    IF EXISTS (
        SELECT FROM pg_trigger AS t JOIN pg_proc AS f ON f.oid = t.tgfoid
        WHERE t.tgrelid = rel AND NOT (
            NOT is_partition AND t.tgname = ANY (d.triggers) AND t.tgtype = 4 AND t.tgenabled = 'O'
            AND f.proname = t.tgname AND f.pronamespace = c.relnamespace AND f.pronargs = 0 AND f.prosecdef
            AND pg_get_userbyid(f.proowner) = d.owner)
    ) THEN
        RETURN 'has triggers';
    END IF;
    IF EXISTS (SELECT FROM pg_rewrite AS w WHERE w.ev_class = rel) THEN
        RETURN 'has rules';
    END IF;
    -- Constraints and column defaults: exactly the declared ones (as PostgreSQL prints them),
    -- and the marts keep the unique index on message_id that deduplication and the erasure
    -- rely on. Built-in functions alone are enough to do harm: a CHECK or a default runs in the
    -- session that writes the table, and the transform's holds the keys (pg_notify of
    -- current_setting('loginvault.hmac_key') needs no code of anyone's).
    WITH declared (relation, name, definition) AS (
        VALUES
            ('staging.loginvault_watermarks', 'loginvault_watermarks_pkey', 'PRIMARY KEY (model)'),
            ('pii.vault', 'vault_token_kind_key', 'UNIQUE (token, kind)'),
            ('pii.vault', 'vault_kind_check',
             'CHECK (((kind)::text = ANY ((ARRAY[''ip''::character varying, ''device_id''::character varying])::text[])))'),
            -- The same, as a database of loginvault 0.1.0 restored from a dump prints it.
            ('pii.vault', 'vault_kind_check',
             'CHECK (((kind)::text = ANY (ARRAY[(''ip''::character varying)::text, (''device_id''::character varying)::text])))'),
            ('pii.token_map', 'token_map_pkey', 'PRIMARY KEY (kind, old_token)')
    ),
    want AS (SELECT x.name, x.definition FROM declared AS x WHERE x.relation = decl AND NOT is_partition),
    held AS (SELECT k.conname::text AS name, pg_get_constraintdef(k.oid) AS definition FROM pg_constraint AS k WHERE k.conrelid = rel)
    SELECT string_agg(DISTINCT x.name, ', ' ORDER BY x.name) INTO have
    FROM ((SELECT * FROM held EXCEPT SELECT * FROM want)  -- one not declared, or not as declared
          UNION (SELECT w.name, NULL FROM want AS w WHERE w.name NOT IN (SELECT h.name FROM held AS h))) AS x;  -- lost
    IF have IS NOT NULL THEN
        RETURN format('has constraints other than the declared ones (%s)', have);
    END IF;
    IF EXISTS (
        SELECT FROM pg_attrdef AS f JOIN pg_attribute AS a ON a.attrelid = f.adrelid AND a.attnum = f.adnum
        WHERE f.adrelid = rel AND (decl, a.attname::text, pg_get_expr(f.adbin, f.adrelid)) NOT IN (
            VALUES ('staging.loginvault_watermarks', 'updated_at', 'now()')
        )
    ) THEN
        RETURN 'has a column default that is not declared';
    END IF;
    IF d.guarded AND NOT is_partition AND d.relation NOT LIKE 'pii.%' AND NOT EXISTS (
        SELECT FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indnatts = 1
          AND i.indexprs IS NULL AND i.indpred IS NULL AND a.attname = 'message_id'
    ) THEN
        RETURN 'has lost its unique index on message_id';
    END IF;
    IF c.relispartition <> is_partition OR (NOT is_partition AND EXISTS (SELECT FROM pg_inherits AS i WHERE i.inhrelid = rel)) THEN
        RETURN 'is attached to another table';
    END IF;
    IF EXISTS (SELECT FROM pg_inherits AS i JOIN pg_class AS k ON k.oid = i.inhrelid
               WHERE i.inhparent = rel AND NOT (d.kind = 'p' AND NOT is_partition AND k.relispartition)
                 AND NOT (d.guarded AND NOT is_partition AND k.oid = to_regclass(loginvault.guard_of(decl))
                          AND k.relkind = 'r' AND pg_get_userbyid(k.relowner) = 'loginvault_owner')) THEN
        RETURN 'has child tables';
    END IF;
    IF d.guarded AND NOT is_partition AND NOT EXISTS (
        SELECT FROM pg_inherits AS i WHERE i.inhparent = rel AND i.inhrelid = to_regclass(loginvault.guard_of(decl))
    ) THEN
        RETURN 'has lost its guard (' || loginvault.guard_of(decl) || '): run the bootstrap';
    END IF;
    -- A partitioned table of the transformer's keeps its default partition: locking it is what
    -- makes ATTACH PARTITION wait for a reader (checked_transform_relations).
    IF kind = 'p' AND d.owner = 'loginvault_transformer'
        AND (SELECT t.partdefid FROM pg_partitioned_table AS t WHERE t.partrelid = rel) = 0 THEN
        RETURN 'has lost its default partition';
    END IF;
    IF EXISTS (SELECT FROM pg_statistic_ext AS s WHERE s.stxrelid = rel) THEN
        RETURN 'has extended statistics';
    END IF;
    -- Columns: exactly the declared names, in order, of the declared built-in types, with the
    -- type's own collation.
    SELECT string_agg(format('%s %s', x.column_name, x.column_type), ', ' ORDER BY x.position) INTO want
    FROM loginvault.declared_columns AS x WHERE x.relation = decl;
    SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum) INTO have
    FROM pg_attribute AS a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
    IF have IS DISTINCT FROM want THEN
        RETURN format('has the columns (%s), not (%s)', have, want);
    END IF;
    IF EXISTS (
        SELECT FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
          AND (a.atttypid >= first_user_oid OR a.attcollation <> t.typcollation OR a.attgenerated <> '')
    ) THEN
        RETURN 'has a column of a type, collation or generation not built in';
    END IF;
    -- Nothing it or its indexes, constraints and defaults depend on may be a function,
    -- operator, type, collation, operator class or family, access method or extension that
    -- initdb did not make: such an object is code somebody chose.
    IF EXISTS (
        SELECT FROM pg_depend AS dep
        WHERE dep.refobjid >= first_user_oid
          AND dep.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass, 'pg_type'::regclass,
                                 'pg_collation'::regclass, 'pg_opclass'::regclass, 'pg_opfamily'::regclass,
                                 'pg_am'::regclass, 'pg_extension'::regclass, 'pg_foreign_server'::regclass)
          AND ((dep.classid = 'pg_class'::regclass
                AND (dep.objid = rel OR dep.objid IN (SELECT i.indexrelid FROM pg_index AS i WHERE i.indrelid = rel)))
               OR (dep.classid = 'pg_constraint'::regclass
                   AND dep.objid IN (SELECT k.oid FROM pg_constraint AS k WHERE k.conrelid = rel))
               OR (dep.classid = 'pg_attrdef'::regclass
                   AND dep.objid IN (SELECT f.oid FROM pg_attrdef AS f WHERE f.adrelid = rel)))
    ) THEN
        RETURN 'depends on a function, operator, type or collation that is not built in';
    END IF;
    RETURN NULL;
END
$fn$;

-- The first of the declared relation `relation` and its partitions (not its guard) whose shape
-- is not the declared one, with what is wrong; no row when all are as declared (or it does not
-- exist). Read by the check below and by `loginvault check`.
CREATE OR REPLACE FUNCTION loginvault.relation_problem(relation text) RETURNS TABLE (object text, problem text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT o.oid::regclass::text, loginvault.shape_problem(o.oid, relation, o.is_partition)
    FROM (
        SELECT to_regclass(relation)::oid AS oid, false AS is_partition, 0 AS rank
        UNION ALL
        SELECT i.inhrelid, true, 1 FROM pg_inherits AS i
        WHERE i.inhparent = to_regclass(relation) AND i.inhrelid IS DISTINCT FROM to_regclass(loginvault.guard_of(relation))
    ) AS o
    WHERE o.oid IS NOT NULL AND loginvault.shape_problem(o.oid, relation, o.is_partition) IS NOT NULL
    ORDER BY o.rank
    LIMIT 1
$fn$;

-- The declared relation `relation` (as declared: schema-qualified), locked in `lock_mode` and
-- then checked, with each of its partitions; NULL when it does not exist (not built yet).
-- Raises, naming the object, when its shape is not the declared one. The lock holds until the
-- caller's transaction ends, and is one that nothing which could add code conflicts less with:
-- SHARE UPDATE EXCLUSIVE (the default, to read) waits for and blocks CREATE INDEX, CREATE
-- STATISTICS, CREATE TRIGGER, ATTACH PARTITION and every ALTER TABLE (an index or statistics
-- expression made after the check would be evaluated when the caller's query is planned);
-- SHARE ROW EXCLUSIVE (to delete) blocks writes too; ACCESS SHARE only for raw, whose owner no
-- login can act as. A SECURITY DEFINER function of the admin's, so that the definers' owners
-- may take these locks with no more than SELECT on the tables: its only acts are the lock and
-- reads of the catalogs. READ COMMITTED only: a snapshot older than the lock could show a
-- catalog that is no longer the one the caller's queries run against.
CREATE OR REPLACE FUNCTION loginvault.checked_relation(relation text, lock_mode text DEFAULT 'SHARE UPDATE EXCLUSIVE')
RETURNS regclass
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    rel regclass;
    problem text;
    failing record;
BEGIN
    IF NOT EXISTS (SELECT FROM loginvault.declared_relations AS d WHERE d.relation = checked_relation.relation) THEN
        RAISE EXCEPTION 'no shape is declared for %', relation USING ERRCODE = 'undefined_table';
    END IF;
    IF lock_mode NOT IN ('ACCESS SHARE', 'SHARE UPDATE EXCLUSIVE', 'SHARE ROW EXCLUSIVE', 'ROW EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
        RAISE EXCEPTION 'lock mode % is not one the shape check takes', lock_mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The two modes of the transform's own sessions (checked_transform_relations), on what its
    -- role owns (and could lock itself) only.
    IF lock_mode IN ('ROW EXCLUSIVE', 'ACCESS EXCLUSIVE') AND (
        SELECT d.owner <> 'loginvault_transformer' FROM loginvault.declared_relations AS d WHERE d.relation = checked_relation.relation
    ) THEN
        RAISE EXCEPTION '% is for the transformer''s tables only, not %', lock_mode, relation USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'refusing to read %: the shape check needs a READ COMMITTED transaction, not %',
            relation, current_setting('transaction_isolation') USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    rel := to_regclass(relation);
    IF rel IS NULL THEN
        RETURN NULL;
    END IF;
    -- Only a table is locked (locking a view would need rights on it, and tell nothing).
    IF (SELECT c.relkind NOT IN ('r', 'p') FROM pg_class AS c WHERE c.oid = rel) THEN
        problem := loginvault.shape_problem(rel, relation, false);
        RAISE EXCEPTION 'refusing to read %: it %; loginvault did not set that up, and it could run another role''s code in this session', relation, problem
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format('LOCK TABLE %s IN %s MODE', rel, lock_mode);
    IF lock_mode = 'ACCESS SHARE' AND (SELECT c.relnamespace <> 'raw'::regnamespace FROM pg_class AS c WHERE c.oid = rel) THEN
        RAISE EXCEPTION 'ACCESS SHARE is for raw''s tables only, not %', relation USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(relation) IS DISTINCT FROM rel THEN
        RAISE EXCEPTION 'refusing to read %: it was replaced while the check waited for it', relation
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT f.object, f.problem INTO failing FROM loginvault.relation_problem(relation) AS f;
    IF FOUND THEN
        RAISE EXCEPTION 'refusing to read %: it %; loginvault did not set that up, and it could run another role''s code in this session', failing.object, failing.problem
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN rel;
END
$fn$;

-- Every declared relation the transformer owns, locked and checked (checked_relation) at the
-- start of each transaction of a build that reads or writes them (dbt's macros/locks.sql: every
-- model's and every data test's). The transform's sessions hold the keys, and the transformer's
-- login could add code to its tables between `loginvault check` and a statement: a CHECK or a
-- trigger run by an insert, a policy by a read, an index predicate folded by the planner.
-- ROW EXCLUSIVE waits for and blocks each way to add such code (ALTER TABLE, CREATE TRIGGER,
-- CREATE INDEX — CONCURRENTLY waits for it too —, ATTACH PARTITION, which locks the default
-- partition), and not the build's other sessions; `targets` (the model's own table) in
-- `target_mode`: ACCESS EXCLUSIVE when a full refresh empties it, SHARE ROW EXCLUSIVE for a key
-- rotation's rewrite (ingest/vault/rotation.py, which does the same). In the erasure's order (then
-- the rest), so that an erasure and a build wait for each other instead of deadlocking.
CREATE OR REPLACE FUNCTION loginvault.checked_transform_relations(targets text[], target_mode text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r text;
BEGIN
    IF target_mode NOT IN ('ROW EXCLUSIVE', 'SHARE ROW EXCLUSIVE', 'ACCESS EXCLUSIVE') THEN
        RAISE EXCEPTION 'lock mode % is not one a build takes', target_mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN
        SELECT d.relation FROM loginvault.declared_relations AS d
        WHERE d.owner = 'loginvault_transformer'
        ORDER BY CASE
            WHEN d.relation = 'staging.stg_sqs__messages' THEN 1
            WHEN d.relation = 'staging.stg_sqs__login_events' THEN 2
            WHEN d.relation LIKE '%.user\_logins' THEN 3
            WHEN d.relation LIKE '%.rejected\_login\_events' THEN 4
            WHEN d.relation = 'pii.vault' THEN 5
            WHEN d.relation = 'pii.token_map' THEN 6
            ELSE 7
        END, d.relation
    LOOP
        PERFORM loginvault.checked_relation(r, CASE WHEN r = ANY (targets) THEN target_mode ELSE 'ROW EXCLUSIVE' END);
    END LOOP;
END
$fn$;

-- Creates the declared table `relation` from its declaration (columns, NOT NULL), owned by its
-- declared owner, unless it exists. The bootstrap's: the marts and the vault live in schemas
-- where no workload may create (a definer function resolves names there).
CREATE OR REPLACE FUNCTION loginvault.create_declared_table(relation text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    d loginvault.declared_relations := (SELECT x FROM loginvault.declared_relations AS x WHERE x.relation = create_declared_table.relation);
BEGIN
    IF d IS NULL OR d.kind <> 'r' THEN
        RAISE EXCEPTION 'no declared table %', relation USING ERRCODE = 'undefined_table';
    END IF;
    IF to_regclass(relation) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %s (%s)', relation, (
        SELECT string_agg(format('%I %s%s', c.column_name, c.column_type, CASE WHEN c.not_null THEN ' NOT NULL' ELSE '' END),
                          ', ' ORDER BY c.position)
        FROM loginvault.declared_columns AS c WHERE c.relation = d.relation));
    EXECUTE format('ALTER TABLE %s OWNER TO %I', relation, d.owner);
    RETURN true;
END
$fn$;

-- Gives the declared relation `relation` its guard, unless it has it (or does not exist).
-- The bootstrap's, as the admin (a member of the table's owner: adding a child needs it).
CREATE OR REPLACE FUNCTION loginvault.ensure_guard(relation text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    guard text := loginvault.guard_of(relation);
BEGIN
    IF to_regclass(relation) IS NULL OR to_regclass(guard) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE %s () INHERITS (%s)', guard, relation);
    EXECUTE format('ALTER TABLE %s OWNER TO loginvault_owner', guard);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', guard);
    EXECUTE format('COMMENT ON TABLE %s IS %L', guard,
                   'Always empty: keeps ' || relation || ' a table with its declared columns (21_shapes.sql).');
END
$fn$;

REVOKE ALL ON FUNCTION loginvault.shape_problem(oid, text, boolean), loginvault.relation_problem(text),
    loginvault.checked_relation(text, text), loginvault.checked_transform_relations(text[], text),
    loginvault.create_declared_table(text), loginvault.ensure_guard(text), loginvault.guard_of(text) FROM PUBLIC;
-- The roles that own definer functions (raw's owner, the erasure's and the recovery's), and the
-- transformer (its pre-flight checks raw before reading it), check shapes; they read the
-- declaration to do so.
GRANT EXECUTE ON FUNCTION loginvault.shape_problem(oid, text, boolean), loginvault.relation_problem(text),
    loginvault.checked_relation(text, text), loginvault.guard_of(text)
    TO loginvault_owner, loginvault_eraser, loginvault_recovery, loginvault_transformer;
-- The transform's sessions (dbt's).
GRANT EXECUTE ON FUNCTION loginvault.checked_transform_relations(text[], text) TO loginvault_transformer;
GRANT SELECT ON loginvault.declared_relations, loginvault.declared_columns
    TO loginvault_owner, loginvault_eraser, loginvault_recovery, loginvault_transformer;
