"""The bootstrap: idempotent, safe when several processes run it at once, and it brings a
database of an earlier version (loader-owned raw, pii-admin reading the vault) to the least-
privilege layout without losing a row.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from conftest import (
    REPO_ROOT,
    create_test_database,
    database_name,
    drop_test_database,
    execute,
    ingest_env,
    query,
    role_dsns,
)
from ingest import config
from ingest.local import sample
from ingest.local.pg_cluster import ensure_database, throwaway_logins
from ingest.schema import bootstrap

pytestmark = [pytest.mark.integration]


@pytest.fixture
def empty_db(pg_cluster, template_db):
    """A database with nothing in it (no bootstrap yet); the cluster's logins exist already."""
    name = f"t_{uuid.uuid4().hex}"
    ensure_database(pg_cluster.dsn("postgres"), name)
    yield pg_cluster.dsn(name)
    drop_test_database(pg_cluster, name)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bootstrap_twice_changes_nothing(pg_dsn):
    """A bootstrap of a database at head with nothing changed applies nothing: no migration, no
    definition (their record and alembic's version as they were), no DDL (the catalogs)."""
    catalog = (
        "SELECT string_agg(format('%s %s %s', c.oid::regclass, pg_get_userbyid(c.relowner), c.relacl), ';'"
        " ORDER BY c.oid::regclass::text) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('raw', 'pii', 'loginvault', 'staging')"
    )
    versions = (
        "SELECT (SELECT version_num FROM loginvault.alembic_version),"
        " (SELECT string_agg(format('%s %s %s', name, sha256, applied_at), ';' ORDER BY name)"
        " FROM loginvault.schema_definitions),"
        " (SELECT string_agg(format('%s %s', oid::regprocedure, xmin), ';' ORDER BY oid) FROM pg_proc"
        "  WHERE pronamespace IN ('raw'::regnamespace, 'pii'::regnamespace, 'loginvault'::regnamespace))"
    )
    before, versions_before = query(pg_dsn, catalog), query(pg_dsn, versions)
    applied = bootstrap.bootstrap(pg_dsn)
    assert (applied.migrations, applied.definitions, applied.head) == ([], [], "0002")
    assert query(pg_dsn, catalog) == before
    # Not a function replaced (a CREATE OR REPLACE writes its pg_proc row: a new xmin).
    assert query(pg_dsn, versions) == versions_before
    # …whereas a changed mart schema applies the definitions again (the checksums include it).
    assert bootstrap.bootstrap(pg_dsn, mart_schema="marts_elsewhere").definitions
    assert query(pg_dsn, versions) != versions_before


@pytest.mark.slow
def test_concurrent_bootstraps_and_first_runs_on_fresh_databases(pg_cluster, template_db, sqs_queue):
    """A fleet starting together: 4 bootstraps at once on a fresh database (without the advisory
    lock, 3 of 4 fail there: a duplicate key in pg_extension_name_index, or "tuple concurrently
    updated" on the grants), then 4 `run` processes at once before any load; 10 rounds. Every
    one succeeds, every message lands."""
    for round_ in range(10):
        name = f"t_{uuid.uuid4().hex}"
        ensure_database(pg_cluster.dsn("postgres"), name)
        dsn = pg_cluster.dsn(name)
        try:
            with ThreadPoolExecutor(4) as pool:
                starts = [pool.submit(bootstrap.bootstrap, dsn, logins=throwaway_logins(dsn)) for _ in range(4)]
                for start in starts:
                    start.result(timeout=120)  # raises what a bootstrap raised
            sent = sample.send_events(sqs_queue.settings, sample.synthetic_events(20, seed=round_))
            env = ingest_env(dsn, sqs_queue.url, sqs_queue.endpoint_url)
            procs = [spawn(["run", "--wait-time", "1", "--batch-size", "5"], env) for _ in range(4)]
            for proc in procs:
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, f"round {round_}: {err}"
            assert query(dsn, "SELECT count(DISTINCT message_id) FROM raw.login_events") == [(sent,)]
            assert sqs_queue.depth() == (0, 0)
        finally:
            drop_test_database(pg_cluster, name)


def test_bootstrap_refuses_a_layout_older_than_0_1_0(pg_cluster, template_db):
    """An un-versioned database (loginvault's schemas, no version table) that lacks a column of
    0.1.0's (here: the approvals' application_name) is refused with what to do, and
    nothing changes; with the column back it is taken over at the baseline."""
    name = create_test_database(pg_cluster, template_db)
    dsn = pg_cluster.dsn(name)
    try:
        execute(
            dsn,
            "DROP TABLE loginvault.alembic_version, loginvault.schema_definitions;"
            " ALTER TABLE pii.recovery_approvals DROP COLUMN application_name",
        )
        with pytest.raises(bootstrap.migrate.OlderSchema) as refused:
            bootstrap.bootstrap(dsn)
        assert "pii.recovery_approvals.application_name (text) is missing or differs" in str(refused.value)
        assert "run the bootstrap of loginvault 0.1.0 (commit c5aed21) on it first" in str(refused.value)
        assert query(dsn, "SELECT to_regclass('loginvault.alembic_version')::text") == [(None,)]
        execute(dsn, "ALTER TABLE pii.recovery_approvals ADD COLUMN application_name text")
        applied = bootstrap.bootstrap(dsn)
        assert (applied.taken_over, applied.migrations, applied.head) == (True, ["0002"], "0002")
        assert query(dsn, "SELECT version_num FROM loginvault.alembic_version") == [("0002",)]
    finally:
        drop_test_database(pg_cluster, name)


@pytest.mark.parametrize("schema", ["raw", "pii", "loginvault", "staging"])
def test_mart_schema_cannot_be_one_of_the_project_schemas(pg_dsn, schema):
    with pytest.raises(Exception, match=f"LOGINVAULT_MART_SCHEMA may not be {schema}"):
        bootstrap.bootstrap(pg_dsn, mart_schema=schema)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("the admin", "logs in as the admin"),
        ("a superuser", "a superuser"),
        ("the role itself", "logs in as the role loginvault_loader itself"),
        ("a login of two roles", "also a member of loginvault_transformer"),
    ],
)
def test_bootstrap_refuses_logins_that_would_hold_more_than_their_role(pg_cluster, pg_dsn, case, expected):
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    base = f"@{params['host']}:{params['port']}/{params['dbname']}"
    execute(
        pg_dsn,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lv_root') THEN CREATE ROLE lv_root LOGIN SUPERUSER; END IF; END $$",
    )
    execute(
        pg_dsn,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lv_two') THEN CREATE ROLE lv_two LOGIN IN ROLE loginvault_transformer; END IF; END $$",
    )
    dsn = {
        "the admin": pg_dsn,
        "a superuser": f"postgresql://lv_root:pw{base}",
        "the role itself": f"postgresql://loginvault_loader:pw{base}",
        "a login of two roles": f"postgresql://lv_two:pw{base}",
    }[case]
    with pytest.raises(Exception, match=expected):
        bootstrap.bootstrap(pg_dsn, logins={config.LOADER_ROLE: dsn})
    # Nothing of the refused bootstrap stayed: it is one transaction.
    assert query(pg_dsn, "SELECT pg_has_role('lv_two', 'loginvault_loader', 'MEMBER')") == [(False,)]


def test_login_passwords_never_reach_a_statement(pg_cluster, pg_dsn):
    database = database_name(pg_dsn)
    execute(pg_dsn, f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    start = pg_cluster.log.stat().st_size
    bootstrap.bootstrap(pg_dsn, logins=throwaway_logins(pg_dsn))
    with open(pg_cluster.log, errors="replace") as f:
        f.seek(start)
        logged = f.read()
    assert "CREATE EXTENSION IF NOT EXISTS pgcrypto" in logged or "ALTER ROLE" in logged
    assert "SCRAM-SHA-256$" in logged  # what the statement holds: the verifier
    for dsn in role_dsns(pg_dsn).values():
        assert psycopg.conninfo.conninfo_to_dict(dsn)["password"] not in logged
