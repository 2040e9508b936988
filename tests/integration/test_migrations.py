"""The upgrade from the previous, un-versioned schema (loginvault 0.1.0, commit c5aed21) to head.

The fixture is a pg_dump of a database 0.1.0 made, with rows in every table of raw, staging,
pii, loginvault and the marts, and its roles (tests/fixtures/previous_schema*.sql, made by
tests/fixtures/make_previous_schema.sh). Restored into a fresh database and bootstrapped: it
is taken over at the baseline and migrated to head; every row of every table and every grant
is kept (and is what a new database at head has); a second bootstrap applies nothing.
"""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest

from conftest import REPO_ROOT, drop_test_database, execute, query, role_dsn
from ingest import config
from ingest.local.pg_cluster import ensure_database, pg_bindir
from ingest.schema import acl, bootstrap, migrate

pytestmark = [pytest.mark.integration]

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SCHEMAS = ["raw", "staging", "pii", "loginvault", "public"]
NEW_TABLES = {"loginvault.alembic_version", "loginvault.schema_definitions"}

# Every table (partitions included) with its row count and a checksum of its rows.
TABLES = """
SELECT c.oid::regclass::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND c.relkind = 'r' ORDER BY 1
"""
# Privileges: (kind, object, owner, acl) of schemas, relations, columns and functions, and the
# memberships in loginvault's roles. An ACL as its sorted items, a default one (NULL) spelled out:
# a REVOKE and a GRANT again may reorder the items, or make the default explicit.
ACLS = """
SELECT 'schema', nspname::text, pg_get_userbyid(nspowner)::text, acl(coalesce(nspacl, acldefault('n', nspowner)))
FROM pg_namespace WHERE nspname = ANY(%(s)s)
UNION ALL
SELECT 'relation', c.oid::regclass::text, pg_get_userbyid(c.relowner)::text,
       acl(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)))
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(s)s)
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, NULL, acl(a.attacl)
FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(s)s) AND a.attacl IS NOT NULL
UNION ALL
SELECT 'function', p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text,
       acl(coalesce(p.proacl, acldefault('f', p.proowner)))
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%(s)s)
UNION ALL
SELECT 'membership', g.rolname || ' > ' || m.rolname, NULL, a.admin_option::text
FROM pg_auth_members AS a JOIN pg_roles AS g ON g.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member
WHERE g.rolname LIKE 'loginvault\\_%%' AND m.rolname <> current_user
"""
# acl(aclitem[]): its items, sorted, as text (a temporary function of the test's session).
ACL_FUNCTION = (
    "CREATE FUNCTION pg_temp.acl(items aclitem[]) RETURNS text LANGUAGE sql IMMUTABLE AS"
    " $$ SELECT string_agg(i::text, ',' ORDER BY i::text) FROM unnest(items) AS i $$"
)


def rows(dsn: str) -> dict[str, tuple]:
    """table → (row count, md5 of its rows in order), as the admin."""
    found = {}
    for (table,) in query(dsn, TABLES, (SCHEMAS,)):
        found[table] = query(
            dsn, f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} AS t"
        )[0]
    return found


def acls(dsn: str) -> dict[tuple[str, str], tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ACL_FUNCTION)
        found = conn.execute(ACLS.replace("acl(", "pg_temp.acl("), {"s": SCHEMAS}).fetchall()
    return {(kind, name): (owner, acl) for kind, name, owner, acl in found}


def catalog_versions(dsn: str) -> list[tuple]:
    """What a second bootstrap must leave as it is: alembic's version, the definitions' record,
    every function's row version (a CREATE OR REPLACE writes a new one)."""
    return query(
        dsn,
        "SELECT (SELECT string_agg(version_num, ',') FROM loginvault.alembic_version),"
        " (SELECT string_agg(format('%%s %%s %%s', name, sha256, applied_at), ';' ORDER BY name)"
        "  FROM loginvault.schema_definitions),"
        " (SELECT string_agg(format('%%s %%s', oid::regprocedure, xmin), ';' ORDER BY oid) FROM pg_proc"
        "  WHERE pronamespace::regnamespace::text = ANY(%s))",
        (SCHEMAS,),
    )


@pytest.fixture
def previous_db(pg_cluster, template_db):
    """A fresh database restored from the fixture dump (its roles first: pg_dump has none)."""
    execute(pg_cluster.dsn("postgres"), (FIXTURES / "previous_schema_roles.sql").read_text())
    name = f"t_{uuid.uuid4().hex}"
    ensure_database(pg_cluster.dsn("postgres"), name)
    dsn = pg_cluster.dsn(name)
    restored = subprocess.run(
        [
            str(pg_bindir() / "psql"),
            dsn,
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(FIXTURES / "previous_schema.sql"),
        ],
        capture_output=True,
        text=True,
    )
    assert restored.returncode == 0, restored.stderr
    yield dsn
    drop_test_database(pg_cluster, name)


def test_the_previous_schema_is_taken_over_and_migrated_keeping_every_row_and_grant(
    previous_db, pg_cluster, template_db
):
    rows_before, acls_before = rows(previous_db), acls(previous_db)
    assert rows_before and all(count > 0 for table, (count, _) in rows_before.items() if not is_always_empty(table)), (
        "the fixture must have rows in every table"
    )

    applied = bootstrap.bootstrap(previous_db)

    head = migrate.head_revision()
    assert (applied.taken_over, applied.head) == (True, head)
    assert query(previous_db, "SELECT version_num FROM loginvault.alembic_version") == [(head,)]
    rows_after = rows(previous_db)
    assert {t: r for t, r in rows_after.items() if t in rows_before} == rows_before  # every row kept
    acls_after = acls(previous_db)
    changed = {k: (v, acls_after.get(k)) for k, v in acls_before.items() if acls_after.get(k) != v}
    assert changed == {}  # every grant, owner and membership kept
    # …and as on a new database at head (its objects: no partitions of other days, no dbt tables).
    fresh = acls(pg_cluster.dsn(template_db))
    differ = {k: (v, fresh[k]) for k, v in acls_after.items() if k in fresh and fresh[k] != v}
    assert differ == {}
    # The privileges as declared (acl.toml: the database's own too), as every build checks them.
    with psycopg.connect(role_dsn(previous_db, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        assert acl.check(conn, "public") == []

    # Migrating again applies nothing and changes nothing.
    versions, catalog = catalog_versions(previous_db), acls(previous_db)
    again = bootstrap.bootstrap(previous_db)
    assert (again.migrations, again.definitions, again.taken_over) == ([], [], False)
    assert catalog_versions(previous_db) == versions
    assert acls(previous_db) == catalog
    assert rows(previous_db) == rows_after


def is_always_empty(table: str) -> bool:
    """Guards (empty by construction), partitions of days without rows, the default partitions."""
    name = table.split(".")[-1]
    return name.startswith("guard_") or "_p20" in name or name.endswith("_default")
