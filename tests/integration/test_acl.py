"""`loginvault check`: the database's privileges against ingest/schema/sql/acl.toml (real PostgreSQL).

A freshly bootstrapped database and a built one are as declared; each kind of drift is named
(a privilege granted or missing, an owner, an object nobody declared, a membership), and the
transform refuses to build on a database that drifted: a GRANT made by an owner (the transformer
owns staging: it can give the analyst its cleartext) is caught before dbt starts.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import Job, query, role_dsn

# `origin` (conftest): 20 messages ingested and built; `fresh`: a copy of it to tamper with.
from ingest import config
from ingest.schema import acl

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANALYST_LOGIN = "loginvault_analyst_1"
DBT_LOGIN = config.WORKLOADS[config.TRANSFORMER_ROLE].local_login


def drift(job: Job, *plant: str) -> list[str]:
    """`loginvault check`'s differences after `plant` (as the admin), rolled back afterwards."""
    with psycopg.connect(job.dsn) as conn:
        for statement in plant:
            conn.execute(statement)
        found = acl.check(conn, "public")
        conn.rollback()
    return found


def test_a_bootstrapped_and_a_built_database_are_as_declared(job, origin):
    for database in (job, origin):
        out = database.run("check")
        assert out.stdout == "check: every privilege, owner and membership is as ingest/schema/sql/acl.toml declares\n"


def test_the_transformer_granting_staging_to_the_analyst_is_caught_and_stops_the_transform(fresh):
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute("GRANT SELECT ON staging.stg_sqs__login_events TO loginvault_analyst")  # its own table
    named = "relation staging.stg_sqs__login_events: SELECT to loginvault_analyst is granted, but not declared"
    out = fresh.run("check", ok=False)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [named]
    assert out.error_lines() == ["error: 1 differences from ingest/schema/sql/acl.toml (listed above)"]
    marks = query(fresh.dsn, "SELECT model, high FROM staging.loginvault_watermarks ORDER BY model")
    build = fresh.transform(ok=False)
    assert build.returncode == 1
    assert build.error_lines() == [f"error: the database's privileges differ from ingest/schema/sql/acl.toml: {named}"]
    assert "Running with dbt" not in build.stdout  # refused before dbt started
    assert query(fresh.dsn, "SELECT model, high FROM staging.loginvault_watermarks ORDER BY model") == marks


@pytest.mark.parametrize(
    ("plant", "named"),
    [
        (
            "GRANT EXECUTE ON FUNCTION pii.request_value(text, text) TO PUBLIC",
            "function pii.request_value(text,text): EXECUTE to PUBLIC is granted, but not declared",
        ),
        (
            "REVOKE SELECT ON raw.login_events FROM loginvault_transformer",
            "relation raw.login_events: SELECT to loginvault_transformer is declared, but not granted",
        ),
        (
            "GRANT USAGE ON SEQUENCE pii.recovery_audit_id_seq TO loginvault_auditor",
            "relation pii.recovery_audit_id_seq: USAGE to loginvault_auditor is granted, but not declared",
        ),
        (
            "GRANT CREATE ON SCHEMA raw TO loginvault_loader",
            "schema raw: CREATE to loginvault_loader is granted, but not declared",
        ),
        (
            "ALTER TABLE pii.settings OWNER TO loginvault_transformer",
            "relation pii.settings: owned by loginvault_transformer, declared owner loginvault_admin",
        ),
        (
            "CREATE TABLE staging.copy_of_payloads (payload jsonb)",
            "relation staging.copy_of_payloads: exists, but is not declared",
        ),
        (
            "DROP FUNCTION raw.oldest_cleartext()",
            "function raw.oldest_cleartext(): declared, but does not exist",
        ),
        (
            "GRANT TEMPORARY ON DATABASE {db} TO loginvault_analyst",
            "database: TEMPORARY to loginvault_analyst: held, but not declared",
        ),
        (
            "ALTER DEFAULT PRIVILEGES FOR ROLE loginvault_transformer IN SCHEMA staging GRANT SELECT ON TABLES TO loginvault_analyst",
            "default privileges of loginvault_transformer in staging on r: SELECT to loginvault_analyst: held, but not declared",
        ),
        (
            "GRANT loginvault_owner TO loginvault_transformer",
            "role loginvault_transformer: a member of loginvault_owner, but not declared",
        ),
        (
            f"GRANT loginvault_eraser TO {ANALYST_LOGIN}",
            f"login {ANALYST_LOGIN}: a member of loginvault_analyst, loginvault_eraser; a login is a member of one workload role",
        ),
        (
            f"GRANT loginvault_analyst TO {ANALYST_LOGIN} WITH ADMIN OPTION",
            f"login {ANALYST_LOGIN}: a member of loginvault_analyst WITH ADMIN OPTION",
        ),
        (
            "CREATE ROLE lv_side NOLOGIN; GRANT loginvault_recovery TO lv_side",
            "role lv_side: a member of loginvault_recovery, but not declared",
        ),
        # What a login may set on itself (ALTER ROLE … SET), named by setting, never by value.
        (
            f"ALTER ROLE {DBT_LOGIN} SET search_path = staging, public",
            f"role {DBT_LOGIN}: setting search_path is held, but not allowed (ALTER ROLE … RESET search_path)",
        ),
        (
            f"ALTER ROLE {DBT_LOGIN} SET row_security = off",
            f"role {DBT_LOGIN}: setting row_security is held, but not allowed (ALTER ROLE … RESET row_security)",
        ),
        (
            f"ALTER ROLE {ANALYST_LOGIN} IN DATABASE {{db}} SET loginvault.hmac_key = 'k'",
            f"role {ANALYST_LOGIN}: setting loginvault.hmac_key in this database is held, but not allowed"
            " (ALTER ROLE … RESET loginvault.hmac_key)",
        ),
        (
            "ALTER ROLE loginvault_transformer SET statement_timeout = 1",
            "role loginvault_transformer: setting statement_timeout is held, but not allowed"
            " (ALTER ROLE … RESET statement_timeout)",
        ),
        # Built-in functions alone, in a table the transform writes: they run in its session.
        (
            "ALTER TABLE staging.stg_sqs__messages ADD CONSTRAINT sane"
            " CHECK (pg_notify('loot', current_setting('loginvault.hmac_key', true)) IS NULL) NOT VALID",
            "relation staging.stg_sqs__messages: it has constraints other than the declared ones (sane)",
        ),
        (
            "ALTER TABLE pii.vault DROP CONSTRAINT vault_kind_check;"
            " ALTER TABLE pii.vault ADD CONSTRAINT vault_kind_check CHECK (kind IS NOT NULL)",
            "relation pii.vault: it has constraints other than the declared ones (vault_kind_check)",
        ),
        (  # a crash would empty it, and no standby has it
            "ALTER TABLE pii.vault SET UNLOGGED",
            "relation pii.vault: it is not a logged table",
        ),
        # A copy that no retention or erasure reaches, shared with another role.
        (
            "SELECT lo_from_bytea(424242, 'a copy of raw'); ALTER LARGE OBJECT 424242 OWNER TO loginvault_transformer",
            "large object 424242: owned by loginvault_transformer, or readable by a loginvault role; none is declared",
        ),
        (
            "SELECT lo_from_bytea(424243, 'a copy of raw'); GRANT SELECT ON LARGE OBJECT 424243 TO loginvault_analyst",
            "large object 424243: owned by loginvault_admin, or readable by a loginvault role; none is declared",
        ),
        (
            "ALTER TABLE pii.token_map DROP CONSTRAINT token_map_pkey",
            "relation pii.token_map: it has constraints other than the declared ones (token_map_pkey)",
        ),
        (
            "DROP INDEX public.rejected_login_events_message_id_key",
            "relation public.rejected_login_events: it has lost its unique index on message_id",
        ),
        (
            "ALTER TABLE staging.loginvault_watermarks ALTER COLUMN updated_at SET DEFAULT clock_timestamp()",
            "relation staging.loginvault_watermarks: it has a column default that is not declared",
        ),
    ],
)
def test_each_kind_of_drift_is_named(origin, plant, named):
    assert drift(origin) == []
    database = conninfo_to_dict(origin.dsn)["dbname"]
    assert drift(origin, plant.format(db=database)) == [named]
