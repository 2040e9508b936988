"""Definer functions run no one else's code: the allow-list of declared shapes
(ingest/schema/repeatable/21_shapes.sql) and the schemas where no workload may create.

The declaration is held against the dbt contracts (so that neither drifts), every declared
relation passes the check after a bootstrap and after a build, and the attacks of a workload's
own login — a retyped column, a transaction that keeps an old snapshot, an object made where a
definer resolves names — are refused. The planted-code attacks on each definer are in
test_security.py (recovery) and test_erasure_security.py (erasure).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from conftest import execute, query, role_dsn
from ingest import config

pytestmark = [pytest.mark.integration]

MODELS = Path(__file__).resolve().parents[2] / "dbt_project" / "models"
# The declared relations dbt fills, by model name (the mart schema is the test database's: public).
DBT_MODELS = {
    "vault": "pii.vault",
    "user_logins": "public.user_logins",
    "rejected_login_events": "public.rejected_login_events",
    "stg_sqs__loads": "staging.stg_sqs__loads",
    "stg_sqs__messages": "staging.stg_sqs__messages",
    "stg_sqs__login_events": "staging.stg_sqs__login_events",
}


def contract_columns() -> dict[str, list[tuple[str, str]]]:
    """Model name → its YAML columns (name, data_type), in order, for the models above."""
    found = {}
    for path in MODELS.rglob("*.yml"):
        for model in (yaml.safe_load(path.read_text()) or {}).get("models", []):
            if model["name"] in DBT_MODELS:
                found[model["name"]] = [(c["name"], c["data_type"]) for c in model.get("columns", [])]
    return found


def as_printed(dsn: str, types: list[str]) -> list[str]:
    """dbt's data types as PostgreSQL prints them (format_type): varchar(64) → character varying(64)."""
    with psycopg.connect(dsn) as conn:
        columns = ", ".join(f"c{i} {t}" for i, t in enumerate(types))
        conn.execute(f"CREATE TEMP TABLE printed ({columns})")
        rows = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'pg_temp.printed'::regclass AND attnum > 0 ORDER BY attnum"
        ).fetchall()
    return [r[0] for r in rows]


def test_declared_shapes_are_the_dbt_contracts(pg_dsn):
    contracts = contract_columns()
    assert sorted(contracts) == sorted(DBT_MODELS)
    for model, relation in DBT_MODELS.items():
        declared = query(
            pg_dsn,
            "SELECT column_name::text, column_type FROM loginvault.declared_columns WHERE relation = %s ORDER BY position",
            (relation,),
        )
        names, types = zip(*contracts[model], strict=True)
        assert [d[0] for d in declared] == list(names), model
        assert [d[1] for d in declared] == as_printed(pg_dsn, list(types)), model


def test_every_declared_relation_passes_after_a_bootstrap_and_after_a_build(pg_dsn, fresh):
    """Not vacuous: the relations the bootstrap makes (marts, vault, raw) pass before any build,
    and every declared relation passes on a built database."""
    bootstrapped = query(
        pg_dsn,
        "SELECT d.relation, loginvault.checked_relation(d.relation)::text IS NOT NULL"
        " FROM loginvault.declared_relations AS d ORDER BY 1",
    )
    made = {r for r, exists in bootstrapped if exists}
    assert {"pii.vault", "public.user_logins", "public.rejected_login_events", "raw.login_events"} <= made
    built = query(
        fresh.dsn,
        "SELECT d.relation, loginvault.checked_relation(d.relation)::text IS NOT NULL"
        " FROM loginvault.declared_relations AS d ORDER BY 1",
    )
    assert len(built) == 10 and all(exists for _, exists in built), built


def test_a_retyped_column_is_named_in_the_refusal(fresh):
    """The check refuses a relation whose column type is not the declared one, naming both."""
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute("ALTER TABLE staging.stg_sqs__messages ALTER COLUMN receive_count TYPE bigint")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        query(fresh.dsn, "SELECT loginvault.checked_relation('staging.stg_sqs__messages')")
    message = str(refused.value)
    assert "refusing to read staging.stg_sqs__messages" in message and "receive_count bigint" in message
    assert "receive_count integer" in message


@pytest.mark.parametrize(
    "relation", ["pii.vault", "pii.token_map", "public.user_logins", "public.rejected_login_events"]
)
def test_the_guarded_tables_keep_their_columns_and_stay_tables(fresh, relation):
    """The transformer owns them, but each has a guard (an empty child only raw's owner may
    alter): no column can be retyped, dropped, renamed or added, and an emptied table cannot be
    turned into a view (PostgreSQL 15 lets an owner do that to a childless one)."""
    (column,) = query(
        fresh.dsn, "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1", (relation,)
    )[0]
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        for change in (f"ALTER COLUMN {column} TYPE text", f"DROP COLUMN {column}", f"RENAME COLUMN {column} TO x",
                       "ADD COLUMN x text"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of table guard_"):
                conn.execute(f"ALTER TABLE {relation} {change}")
        # What the conversion needs but the guard: empty, without indexes (relhasindex cleared).
        conn.execute(f"TRUNCATE {relation}")
        for (constraint,) in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u')", (relation,)
        ).fetchall():
            conn.execute(f'ALTER TABLE ONLY {relation} DROP CONSTRAINT "{constraint}"')
        for (index,) in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", (relation,)
        ).fetchall():
            conn.execute(f"DROP INDEX {index}")
        conn.execute(f"VACUUM {relation}")
        with pytest.raises(psycopg.Error, match="because it has child tables"):
            conn.execute(f'CREATE RULE "_RETURN" AS ON SELECT TO {relation} DO INSTEAD SELECT * FROM {relation}')
    assert query(fresh.dsn, "SELECT relkind::text FROM pg_class WHERE oid = %s::regclass", (relation,)) == [("r",)]


def test_partition_bounds_are_utc_days_whatever_the_callers_time_zone(fresh):
    """raw's owner writes a day partition's bounds into SQL text: a caller's TimeZone or DateStyle
    (an abbreviation printed in one meaning, read back in another) must not move them."""
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute("SET DateStyle = 'Postgres'")
        conn.execute("SET TimeZone = 'EST-150'")
        conn.execute(
            "SELECT raw.ensure_partitions(utc_day, utc_day) FROM (SELECT (now() AT TIME ZONE 'UTC')::date + 40) AS d (utc_day)"
        )
    exact = query(
        fresh.dsn,
        "SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz"
        " = d.utc_day::timestamp AT TIME ZONE 'UTC'"
        " FROM (SELECT (now() AT TIME ZONE 'UTC')::date + 40) AS d (utc_day), pg_class AS c"
        " WHERE c.oid = format('raw.login_events_p%%s', to_char(d.utc_day, 'YYYYMMDD'))::regclass",
        (),
    )
    assert exact == [(True,)]


STOLEN = """
CREATE TABLE IF NOT EXISTS public.stolen (what text); GRANT INSERT ON public.stolen TO PUBLIC;
CREATE OR REPLACE FUNCTION public.steal() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO public.stolen VALUES (current_user); RETURN true; END $$;
GRANT EXECUTE ON FUNCTION public.steal() TO PUBLIC;
"""


def test_retention_refuses_a_retyped_load_id(fresh):
    """The transformer retypes staging's load id to a type of its own with an implicit cast:
    raw.apply_retention (raw's owner) would run the cast's code when it compares load ids. It
    refuses first, naming the table, and nothing of the transformer's runs as raw's owner."""
    execute(fresh.dsn, STOLEN)
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(
            "CREATE TYPE staging.evil AS (v varchar);"
            " CREATE FUNCTION staging.evil_text(staging.evil) RETURNS varchar LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM public.steal(); RETURN ($1).v; END $$;"
            " CREATE CAST (staging.evil AS varchar) WITH FUNCTION staging.evil_text(staging.evil) AS IMPLICIT;"
            " ALTER TABLE staging.stg_sqs__loads ALTER COLUMN load_id TYPE staging.evil USING ROW(load_id)::staging.evil"
        )
    execute(fresh.dsn, "TRUNCATE public.stolen")
    refused = fresh.run("retention", "apply", "--days", "7", ok=False)
    assert refused.returncode == 1
    assert "refusing to read staging.stg_sqs__loads" in refused.stderr, refused.stderr
    assert query(fresh.dsn, "SELECT count(*) FROM public.stolen") == [(0,)]


def test_the_check_refuses_an_older_snapshot(fresh):
    """A REPEATABLE READ transaction keeps the catalog of its first statement: the shape it would
    check need not be the one its queries run against. Refused."""
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="needs a READ COMMITTED transaction"):
            conn.execute("SELECT * FROM raw.apply_retention(now() - interval '7 days', true)")


# What a workload could make where a definer function resolves names, or where an officer's
# call is resolved: an overload that wins (or makes the call ambiguous), a type, a view.
CREATIONS = [
    "CREATE FUNCTION pii.request_value(token text, reason text, n integer DEFAULT 0) RETURNS TABLE"
    " (request_id bigint, request_state text, refusal text) LANGUAGE sql AS 'SELECT 1::bigint, NULL, NULL'",
    "CREATE FUNCTION public.pgp_sym_decrypt(bytea, text, n integer DEFAULT 0) RETURNS text LANGUAGE sql AS 'SELECT NULL'",
    "CREATE FUNCTION loginvault.try_jsonb(body text, n integer DEFAULT 0) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL'",
    "CREATE VIEW public.user_logins_copy AS SELECT 1 AS x",
    "CREATE INDEX steal ON public.user_logins (user_id)",
    # An analysts' index made again over the workload's own code, as before a bootstrap whose
    # CREATE INDEX IF NOT EXISTS would keep it: the tables' owner may drop the index, but
    # CREATE INDEX needs CREATE on the table's schema, which no workload holds there.
    "DROP INDEX public.user_logins_user_id_idx;"
    " CREATE FUNCTION staging.same_user(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT $1';"
    " CREATE INDEX user_logins_user_id_idx ON public.user_logins (staging.same_user(user_id))",
    "CREATE INDEX steal ON pii.vault (ciphertext)",
    "CREATE TYPE pii.evil AS (v text)",
    "CREATE TABLE raw.evil (v text)",
]


@pytest.mark.parametrize("role", sorted(config.WORKLOADS))
@pytest.mark.parametrize("statement", CREATIONS, ids=lambda s: " ".join(s.split()[:3]))
def test_no_workload_creates_where_a_definer_resolves_names(fresh, role, statement):
    with psycopg.connect(role_dsn(fresh.dsn, role), autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_only_the_transformer_creates_and_only_in_staging(fresh):
    """The allow-list of CREATE on schemas: every schema of the database, every role and login
    of the cluster but the admin's (whose bootstrap creates everything): raw's owner in raw, and
    in staging the transformer and the logins that are its members (dbt's, and any other a test
    of the same cluster made), nothing else anywhere."""
    granted = query(
        fresh.dsn,
        "SELECT r.rolname::text, n.nspname::text, pg_has_role(r.oid, %s, 'MEMBER')"
        " FROM pg_roles AS r CROSS JOIN pg_namespace AS n"
        " WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper AND r.rolname <> current_user"
        " AND has_schema_privilege(r.oid, n.oid, 'CREATE') ORDER BY 1, 2",
        (config.TRANSFORMER_ROLE,),
    )
    allowed = [(role, schema) for role, schema, member in granted if schema == "staging" and member]
    others = sorted((role, schema) for role, schema, member in granted if (role, schema) not in allowed)
    assert others == [(config.RAW_OWNER_ROLE, "raw")]  # raw's owner, NOLOGIN (its retention and partition functions)
    assert {role for role, _ in allowed} >= {  # dbt builds staging (a schema it owns)
        config.TRANSFORMER_ROLE,
        config.WORKLOADS[config.TRANSFORMER_ROLE].local_login,
    }


def test_every_definer_pins_its_search_path(pg_dsn):
    """Each SECURITY DEFINER function of the project resolves unqualified names in pg_catalog
    (and temporary tables in pg_temp) only; the test lists those that do not (none), and that
    there are definers to look at."""
    definers = query(
        pg_dsn,
        "SELECT p.oid::regprocedure::text, coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']"
        " FROM pg_proc AS p WHERE p.prosecdef"
        " AND p.pronamespace IN ('raw'::regnamespace, 'pii'::regnamespace, 'loginvault'::regnamespace)",
    )
    assert len(definers) >= 20
    assert [name for name, pinned in definers if not pinned] == []


# user_logins's indexes: the bootstrap's (ingest/schema/repeatable/70_mart.sql), the last three
# for the analysts' queries (docs/operations.md, "Scale").
USER_LOGINS_INDEXES = {
    "user_logins_message_id_key": "CREATE UNIQUE INDEX user_logins_message_id_key ON public.user_logins USING btree (message_id)",
    "user_logins_user_id_idx": "CREATE INDEX user_logins_user_id_idx ON public.user_logins USING btree (user_id)",
    "user_logins_masked_ip_idx": "CREATE INDEX user_logins_masked_ip_idx ON public.user_logins USING btree (masked_ip)",
    "user_logins_create_date_idx": (
        "CREATE INDEX user_logins_create_date_idx ON public.user_logins USING btree (create_date, app_version)"
    ),
}


def test_the_analysts_indexes_are_the_bootstraps_and_pass_the_checks(fresh):
    """The analysts' indexes on user_logins are plain btree indexes on columns that the bootstrap
    makes (the transformer creates nothing): after a build the shape check accepts the indexed
    mart, `loginvault check` finds no difference, and the analyst's queries can use them."""
    indexes = dict(query(fresh.dsn, "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'user_logins'"))
    assert indexes == USER_LOGINS_INDEXES
    assert query(fresh.dsn, "SELECT loginvault.checked_relation('public.user_logins') IS NOT NULL") == [(True,)]
    fresh.run("check")
    with psycopg.connect(role_dsn(fresh.dsn, config.ANALYST_ROLE), autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        for where, index in (
            ("user_id = 'u'", "user_logins_user_id_idx"),
            ("masked_ip = 't'", "user_logins_masked_ip_idx"),
            ("create_date >= current_date - 30", "user_logins_create_date_idx"),
        ):
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN SELECT * FROM user_logins WHERE {where}").fetchall())
            assert index in plan, plan
