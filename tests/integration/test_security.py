"""Least privilege, tested the way an attacker works: with each workload's own login, try what
that login could do to the others' sessions (own or alter what they read, plant code there,
become another role, forge or skip the audit, read the keys).

Real PostgreSQL, real dbt and real `loginvault` commands; every refusal asserted is the
database's (or the command's pre-flight) own.
"""

from __future__ import annotations

import re
import threading

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import (
    REPO_ROOT,
    Job,
    database_name,
    drop_test_database,
    execute,
    ip_token,
    new_job,
    query,
    role_dsn,
    seeded,
)
from ingest import config
from ingest.local.pg_cluster import ADMIN_USER
from ingest.vault import audit
from ingest.vault.keys import key_options

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAW_TABLES = ("raw.login_events", "raw._dlt_loads", "raw._dlt_version")
OFFICER = config.WORKLOADS[config.PII_ADMIN_ROLE].local_login
# Where a planted function puts what it steals (created by the admin, writable by anyone).
STOLEN = "CREATE TABLE IF NOT EXISTS public.stolen (what text); GRANT INSERT ON public.stolen TO PUBLIC"
# What a planted function does when it runs: copy the session's keys where its owner can read them.
STEAL_FUNCTION = """
CREATE OR REPLACE FUNCTION public.steal() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.stolen VALUES (coalesce(current_setting('loginvault.hmac_key', true), '')
        || ' ' || coalesce(current_setting('loginvault.encryption_key', true), '') || ' as ' || current_user);
    RETURN true;
END $$;
GRANT EXECUTE ON FUNCTION public.steal() TO PUBLIC;
"""
STEAL = f"{STOLEN}; {STEAL_FUNCTION}"


def login(job: Job, role: str) -> psycopg.Connection:
    """A session as `role`'s own workload login (not the admin acting as it)."""
    return psycopg.connect(role_dsn(job.dsn, role), autocommit=True)


def keyed_login(job: Job, role: str) -> psycopg.Connection:
    """A session as `role`'s own login with the job's PII keys as session settings."""
    keys = {name: job.env[name] for name in config.KEY_ENVS}
    return psycopg.connect(role_dsn(job.dsn, role), autocommit=True, options=key_options(keys))


def assert_refused(job: Job, role: str, *statements: str) -> None:
    """Each statement, as `role`'s login, is refused by the database for want of a privilege."""
    with login(job, role) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# `origin` (conftest): 20 messages ingested and transformed, then 5 more ingested, not transformed;
# `fresh`: a copy of it of the test's own, to tamper with.
ORIGIN_MESSAGES, ORIGIN_PENDING = 20, 5


@pytest.fixture(scope="module")
def built(pg_cluster, template_db, moto_server):
    """A database with 20 messages ingested and transformed (tests here must leave it as it is)."""
    job = seeded(new_job(pg_cluster, template_db, moto_server, "sec"))
    yield job
    drop_test_database(pg_cluster, job.dsn)


def snapshot(dsn: str) -> tuple:
    return query(
        dsn,
        "SELECT (SELECT count(*) FROM staging.stg_sqs__login_events), (SELECT count(*) FROM user_logins),"
        " (SELECT max(high) FROM staging.loginvault_watermarks)",
    )[0]


# ---------------------------------------------------------------- the loader cannot plant code in raw


PLANTS = {
    "enable row-level security": "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
    "create a policy": "CREATE POLICY p ON {t} FOR SELECT USING (true)",
    "create a trigger": "CREATE TRIGGER t BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    "create a rule": "CREATE RULE r AS ON INSERT TO {t} DO ALSO NOTHING",
    "rename it (to put a view in its place)": "ALTER TABLE {t} RENAME TO replaced",
    "drop it": "DROP TABLE {t}",
    "take it over": "ALTER TABLE {t} OWNER TO loginvault_loader",
    "add a column default": "ALTER TABLE {t} ALTER COLUMN inserted_at SET DEFAULT now()",
}


@pytest.mark.parametrize("table", RAW_TABLES)
@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_loader_cannot_alter_what_the_transformer_reads(built, table, plant):
    with login(built, config.LOADER_ROLE) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(PLANTS[plant].format(t=table))


@pytest.mark.parametrize("table", RAW_TABLES)
def test_loader_cannot_pass_raw_on(built, table):
    with login(built, config.LOADER_ROLE) as conn:
        conn.execute(f"GRANT SELECT, INSERT ON {table} TO {config.ANALYST_ROLE}")  # a warning: nothing granted
    assert query(built.dsn, "SELECT has_table_privilege(%s, %s, 'SELECT')", (config.ANALYST_ROLE, table)) == [(False,)]


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE VIEW raw.login_events_v AS SELECT 1 AS x",
        "CREATE FUNCTION raw.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TABLE raw.extra (x int)",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TEMP TABLE scratch (x int)",
        "CREATE SCHEMA mine",
    ],
)
def test_loader_can_create_nothing(built, statement):
    with login(built, config.LOADER_ROLE) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


def test_loader_holds_exactly_what_dlt_needs(built):
    """INSERT into the deliveries and the loads; SELECT and INSERT on dlt's schema versions; nothing else."""
    privileges = {
        table: {
            p
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
            if query(built.dsn, "SELECT has_table_privilege(%s, %s, %s)", (config.LOADER_ROLE, table, p))[0][0]
        }
        for table in RAW_TABLES
    }
    assert privileges == {
        "raw.login_events": {"INSERT"},
        "raw._dlt_loads": {"INSERT"},
        "raw._dlt_version": {"SELECT", "INSERT"},
    }
    owners = query(
        built.dsn,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'raw'::regnamespace"
        " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'raw'",
    )
    assert owners == [(config.RAW_OWNER_ROLE,)]
    # Every ACL of every schema, relation, function and the database that names the loader.
    granted = query(
        built.dsn,
        "WITH acl (kind, name, acl) AS (SELECT 'schema', nspname::text, nspacl FROM pg_namespace"
        " UNION ALL SELECT 'relation', oid::regclass::text, relacl FROM pg_class"
        " UNION ALL SELECT 'function', oid::regprocedure::text, proacl FROM pg_proc"
        " UNION ALL SELECT 'database', datname::text, datacl FROM pg_database WHERE datname = current_database())"
        " SELECT kind, CASE kind WHEN 'database' THEN '' ELSE name END, a.privilege_type"
        " FROM acl, aclexplode(acl.acl) AS a WHERE a.grantee = %s::regrole ORDER BY 1, 2, 3",
        (config.LOADER_ROLE,),
    )
    assert granted == [
        ("database", "", "CONNECT"),
        ("relation", "raw._dlt_loads", "INSERT"),
        ("relation", "raw._dlt_version", "INSERT"),
        ("relation", "raw._dlt_version", "SELECT"),
        ("relation", "raw.login_events", "INSERT"),
        ("schema", "raw", "USAGE"),
    ]


# ---------------------------------------------------------------- a compromised owner plants code: the transform refuses


PLANTED = {
    "policy": "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; CREATE POLICY steal ON {t} FOR SELECT USING (public.steal())",
    "forced policy": "ALTER TABLE {t} FORCE ROW LEVEL SECURITY; CREATE POLICY steal ON {t} USING (public.steal())",
    "trigger": "CREATE TRIGGER steal BEFORE INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    "rule": "CREATE RULE steal AS ON INSERT TO {t} DO ALSO SELECT public.steal()",
    "view in its place": "ALTER TABLE {t} RENAME TO hidden; CREATE VIEW {t} AS SELECT *, public.steal() AS s FROM raw.hidden;"
    " ALTER VIEW {t} OWNER TO loginvault_owner",
    "another owner": "ALTER TABLE {t} OWNER TO loginvault_loader",
    # A partition of a partitioned table, or an inheritance child of a plain one, with a policy.
    "a child table": "DO $$ BEGIN IF (SELECT relkind FROM pg_class WHERE oid = '{t}'::regclass) = 'p' THEN"
    " CREATE TABLE raw.child PARTITION OF {t} FOR VALUES FROM ('2999-01-01') TO ('2999-01-02');"
    " ELSE CREATE TABLE raw.child () INHERITS ({t}); END IF; END $$;"
    " ALTER TABLE raw.child ENABLE ROW LEVEL SECURITY; ALTER TABLE raw.child OWNER TO loginvault_owner",
}


@pytest.mark.parametrize("table", ["raw.login_events", "raw._dlt_loads"])
@pytest.mark.parametrize("plant", sorted(PLANTED))
def test_transform_refuses_planted_code_before_any_model(fresh, table, plant):
    execute(fresh.dsn, STEAL)
    execute(fresh.dsn, PLANTED[plant].format(t=table))
    before = snapshot(fresh.dsn)

    refused = fresh.transform(ok=False)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == refused.error_lines()  # one line, no traceback
    (line,) = refused.error_lines()
    assert line.startswith("error: refusing to read raw."), line
    assert "Running with dbt" not in refused.stdout  # dbt never started
    assert snapshot(fresh.dsn) == before
    assert query(fresh.dsn, "SELECT count(*) FROM public.stolen") == [(0,)]


def test_plain_dbt_build_refuses_planted_code_too(fresh):
    """`dbt build` run directly (no pre-flight of the `transform` command): the staging model's
    pre-hook fails before raw is read, every model after it is skipped, nothing is stolen."""
    execute(fresh.dsn, STEAL)
    execute(fresh.dsn, PLANTED["policy"].format(t="raw.login_events"))
    before = snapshot(fresh.dsn)
    out = fresh.dbt("build")
    assert out.returncode == 1
    assert "refusing to read raw.login_events" in out.stdout
    assert snapshot(fresh.dsn) == before
    assert query(fresh.dsn, "SELECT count(*) FROM public.stolen") == [(0,)]


# ---------------------------------------------------------------- no login can become another role


@pytest.mark.parametrize("role", sorted(config.WORKLOADS))
def test_no_login_can_become_a_superuser_or_another_role(built, role):
    superusers = [r[0] for r in query(built.dsn, "SELECT rolname FROM pg_roles WHERE rolsuper")]
    assert ADMIN_USER in superusers
    owners = (config.RAW_OWNER_ROLE, config.RECOVERY_ROLE, "loginvault_eraser", config.KEY_ADMIN_ROLE)
    others = [r for r in (*config.WORKLOADS, *owners) if r != role]
    logins = {r: conninfo_to_dict(role_dsn(built.dsn, r))["user"] for r in config.WORKLOADS}
    others += [name for r, name in logins.items() if r != role]  # the other workloads' logins
    with login(built, role) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user").fetchone() == (False,)
        # The catalog, not only SET ROLE: the login's memberships, followed through every level.
        memberships = conn.execute(
            "WITH RECURSIVE m (roleid, admin_option) AS (SELECT roleid, admin_option FROM pg_auth_members"
            " WHERE member = session_user::regrole UNION SELECT a.roleid, a.admin_option FROM pg_auth_members a"
            " JOIN m ON a.member = m.roleid) SELECT roleid::regrole::text, admin_option FROM m"
        ).fetchall()
        assert memberships == [(role, False)]
        for target in [*superusers, *others]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'SET ROLE "{target}"')
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'SET SESSION AUTHORIZATION "{target}"')
        conn.execute(f'SET ROLE "{role}"')  # its own role, and only that


# ---------------------------------------------------------------- recovery: requests to the service only


def test_privacy_officer_cannot_read_the_vault_or_write_the_audit(built):
    assert_refused(
        built,
        config.PII_ADMIN_ROLE,
        "SELECT ciphertext FROM pii.vault",
        "SELECT count(*) FROM user_logins",
        "SELECT * FROM pii.recovery_audit",
        "INSERT INTO pii.recovery_audit (login_user, direction, token, found, reason, recovered_at)"
        " VALUES ('someone_else', 'token_to_value', 'x', true, 'forged', now() - interval '1 year')",
        "UPDATE pii.recovery_audit SET reason = 'x'",
        "DELETE FROM pii.recovery_audit",
        "UPDATE pii.recovery_budget SET daily_lookups = 100000",
        "SELECT * FROM pii.recovery_requests",
        "UPDATE pii.recovery_requests SET state = 'approved'",
        "SELECT * FROM pii.recovery_answers",
        "SELECT * FROM pii.recovery_inputs",
        "SELECT * FROM pii.recovery_admit('x')",
        "SELECT * FROM pii.lookup_value(repeat('0', 64))",
        "SELECT * FROM pii.lookup_token('ip', '10.0.0.1')",
        "SELECT * FROM pii.serve_next_request('{}', 300, 0)",
        "SELECT pii.expire_requests(0)",
        "SELECT * FROM pii.erase_subject('u', 'r', false, 1)",
        "SELECT * FROM pii.key_versions",
    )


def test_transformer_cannot_read_or_forge_the_audit(built):
    assert_refused(
        built,
        config.TRANSFORMER_ROLE,
        "SELECT * FROM pii.recovery_audit",
        "INSERT INTO pii.recovery_audit (direction, token, found, reason) VALUES ('token_to_value', 'x', true, 'f')",
        "SELECT * FROM pii.request_value(repeat('0', 64), 'x')",
        "SELECT * FROM pii.serve_next_request('{}', 300, 0)",
        "SELECT * FROM pii.lookup_value(repeat('0', 64))",
        "CREATE OR REPLACE FUNCTION pii.lookup_value(token text) RETURNS TABLE (kind text, value text,"
        " outcome text, current_token text) LANGUAGE sql AS 'SELECT NULL, NULL, NULL, NULL'",
        "CREATE OR REPLACE FUNCTION loginvault.try_inet(value text) RETURNS inet LANGUAGE sql AS 'SELECT NULL::inet'",
    )


def _audit(job: Job) -> list[tuple]:
    return query(job.dsn, "SELECT login_user, direction, outcome, found, reason FROM pii.recovery_audit ORDER BY id")


# A composite type of the transformer's own schema that casts itself to integer implicitly:
# put on a vault column, the cast function (planted code) would run wherever the column is used
# as an integer (the recovery's key lookup by version).
EVIL_INTEGER = """
CREATE TYPE staging.evil AS (v integer);
CREATE FUNCTION staging.evil_int(staging.evil) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM public.steal(); RETURN ($1).v; END $$;
CREATE CAST (staging.evil AS integer) WITH FUNCTION staging.evil_int(staging.evil) AS IMPLICIT;
ALTER TABLE pii.vault ALTER COLUMN encryption_key_version TYPE staging.evil USING ROW(encryption_key_version)::staging.evil
"""


@pytest.mark.parametrize(
    "plant",
    [
        "ALTER TABLE pii.vault ENABLE ROW LEVEL SECURITY; CREATE POLICY steal ON pii.vault USING (public.steal())",
        "ALTER TABLE user_logins ENABLE ROW LEVEL SECURITY; CREATE POLICY steal ON user_logins USING (public.steal())",
        "CREATE STATISTICS staging.steal ON user_id, locale FROM user_logins",
        "CREATE TRIGGER steal BEFORE DELETE ON pii.token_map FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    ],
    ids=["policy on the vault", "policy on the mart", "extended statistics on the mart", "trigger on the token map"],
)
def test_recovery_refuses_what_the_transformer_planted(fresh, plant):
    """The transformer owns the vault and the mart: code it attaches would run as the recovery
    functions' owner in the service's session (which holds the keys and may write the audit).
    The service refuses before reading, naming the relation, and audits the refusal. (The
    planted function is made by the admin here: no workload may create in public.)"""
    token, _ = ip_token(fresh)
    execute(fresh.dsn, STEAL)
    with login(fresh, config.TRANSFORMER_ROLE) as conn:  # dbt's own login
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(plant)
    execute(fresh.dsn, "TRUNCATE public.stolen")  # what planting itself ran, as the transformer
    refused = fresh.run("recover", "lookup", "--token", token, "--reason", "INC-9", ok=False)
    assert refused.returncode == 1 and not refused.stdout
    assert "refusing to read" in refused.stderr
    assert _audit(fresh)[-1] == (OFFICER, "token_to_value", "refused", False, "INC-9")
    assert query(fresh.dsn, "SELECT count(*) FROM public.stolen") == [(0,)]


@pytest.mark.parametrize(
    "plant",
    [
        EVIL_INTEGER,
        "CREATE DOMAIN staging.checked AS text CHECK (public.steal());"
        " ALTER TABLE pii.token_map ALTER COLUMN old_token TYPE staging.checked",
        "ALTER TABLE user_logins ALTER COLUMN locale SET DEFAULT public.steal()::text",
    ],
    ids=["vault column of a type with an implicit cast", "token map column of a domain", "mart column default"],
)
def test_the_vaults_and_marts_guards_refuse_a_column_change(fresh, plant):
    """A column change of the vault, the token map or a mart must reach its guard (an empty child
    only raw's owner may alter): refused where it is made."""
    execute(fresh.dsn, STEAL)
    with login(fresh, config.TRANSFORMER_ROLE) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of table guard_"):
            conn.execute(plant)


def test_recovery_is_audited_with_the_real_login_and_time(built):
    token, ip = ip_token(built)
    out = built.run("recover", "lookup", "--token", token, "--reason", "INC-1")
    assert out.stdout == f"ip\t{ip}\n"
    ((who, role, addr, recent),) = query(
        built.dsn,
        "SELECT login_user, acting_role, host(client_addr), recovered_at BETWEEN now() - interval '2 minutes' AND now()"
        " FROM pii.recovery_audit WHERE reason = 'INC-1'",
    )
    assert (who, role, addr, recent) == (OFFICER, OFFICER, "127.0.0.1", True)


def test_no_audit_row_no_answer(fresh):
    """The service cannot write the audit: nothing is answered, the officer's command gives up
    at its timeout and cancels, and the service says why in its log."""
    token, ip = ip_token(fresh)
    execute(fresh.dsn, f"REVOKE INSERT ON pii.recovery_audit FROM {config.RECOVERY_ROLE}")
    for args in (("--token", token), ("--ip", ip)):
        refused = fresh.run("recover", "lookup", *args, "--reason", "INC-2", "--timeout", "3", ok=False)
        assert refused.returncode == 1 and refused.stdout == ""
        assert ip not in refused.stderr and "no answer from the recovery service" in refused.stderr
    assert query(fresh.dsn, "SELECT count(*) FROM pii.recovery_audit") == [(0,)]
    assert query(fresh.dsn, "SELECT count(*) FROM pii.recovery_answers") == [(0,)]
    assert query(fresh.dsn, "SELECT DISTINCT state FROM pii.recovery_requests") == [("cancelled",)]
    assert "permission denied for table recovery_audit" in fresh.service.stderr
    # The service survived the failed requests: it serves once the audit can be written again.
    execute(fresh.dsn, f"GRANT INSERT ON pii.recovery_audit TO {config.RECOVERY_ROLE}")
    assert fresh.run("recover", "lookup", "--token", token, "--reason", "INC-2b").stdout == f"ip\t{ip}\n"


def test_a_service_with_unregistered_keys_does_not_start(fresh):
    env = {**fresh.env, config.ENCRYPTION_KEY_ENV: "f" * 64}
    result = fresh.run("recovery", "serve", ok=False, env=env)
    assert result.returncode == 1 and result.error_lines() == [
        line
        for line in result.stderr.splitlines()
        if "LOGINVAULT_ENCRYPTION_KEY is not the active encryption key" in line
    ]


def test_wrong_key_and_failed_decrypt_are_audited(fresh):
    token, ip = ip_token(fresh)
    fresh.ensure_service()
    # The registry moves on under a running service (a rotation elsewhere): refused, audited.
    execute(fresh.dsn, "UPDATE pii.key_versions SET fingerprint = 'feedfeedfeedfeed' WHERE kind = 'encryption'")
    refused = fresh.run("recover", "lookup", "--token", token, "--reason", "INC-3", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "recovery service's keys are not the registered ones" in refused.stderr and ip not in refused.stderr
    assert _audit(fresh)[-1] == (OFFICER, "token_to_value", "wrong_key", False, "INC-3")
    execute(
        fresh.dsn,
        "UPDATE pii.key_versions SET fingerprint = loginvault.key_fingerprint('encryption', %s) WHERE kind = 'encryption'".replace(
            "%s", f"'{fresh.env[config.ENCRYPTION_KEY_ENV]}'"
        ),
    )
    # A vault entry that the registered key cannot decrypt: the failed decrypt is audited.
    execute(
        fresh.dsn,
        f"UPDATE pii.vault SET ciphertext = public.pgp_sym_encrypt('x', '{'e' * 64}') WHERE token = '{token}'",
    )
    failed = fresh.run("recover", "lookup", "--token", token, "--reason", "INC-3b", ok=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "holds no key of the vault entry" in failed.stderr and ip not in failed.stderr
    assert _audit(fresh)[-1] == (OFFICER, "token_to_value", "decrypt_failed", False, "INC-3b")


def test_budget_refuses_the_next_lookup_and_audits_the_refusal(fresh):
    token, ip = ip_token(fresh)
    execute(fresh.dsn, f"INSERT INTO pii.recovery_budget (login, daily_lookups) VALUES ('{OFFICER}', 3)")
    fresh.run("recover", "lookup", "--token", token, "--reason", "B-1")
    fresh.run("recover", "lookup", "--ip", ip, "--reason", "B-2")
    fresh.run("recover", "lookup", "--device-id", "000-00-0000", "--reason", "B-3")  # unknown values count too
    refused = fresh.run("recover", "lookup", "--token", token, "--reason", "B-4", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "daily recovery budget of 3 lookups is used up (3 today" in refused.stderr
    assert re.search(r"resets at \d{4}-\d\d-\d\dT00:00:00\+00:00", refused.stderr), refused.stderr
    outcomes = [(reason, outcome) for _, _, outcome, _, reason in _audit(fresh)]
    assert outcomes == [("B-1", "found"), ("B-2", "found"), ("B-3", "not_found"), ("B-4", "over_budget")]


def test_the_default_budget_is_200_and_the_bootstrap_sets_it(built):
    assert query(built.dsn, "SELECT daily_lookups FROM pii.recovery_budget WHERE login = '*'") == [(200,)]


def test_auditor_reads_the_audit_and_nothing_else(built):
    built.run("recover", "lookup", "--device-id", "999-99-9999", "--reason", "AUD-1")
    out = built.run("audit", "--since", "1h")
    header, *rows = out.stdout.splitlines()
    assert header.split("\t") == list(audit.COLUMNS)
    assert any(r.split("\t")[1] == "lookup" and r.split("\t")[3] == OFFICER and r.endswith("\tAUD-1") for r in rows)
    assert_refused(
        built,
        config.AUDITOR_ROLE,
        "SELECT * FROM pii.vault",
        "SELECT * FROM user_logins",
        "SELECT * FROM pii.recovery_answers",
        "SELECT * FROM pii.recovery_inputs",
        "DELETE FROM pii.recovery_audit",
        "UPDATE pii.recovery_requests SET reason = 'x'",
    )
    refused = built.run(
        "audit", ok=False, env={**built.env, "LOGINVAULT_AUDITOR_DSN": role_dsn(built.dsn, config.ANALYST_ROLE)}
    )
    assert refused.returncode == 1 and "not a member of loginvault_auditor" in refused.stderr


# ---------------------------------------------------------------- no key material where another role could read it


def test_no_key_in_server_log_artifacts_or_catalogs(pg_cluster, fresh):
    keys = [fresh.env[name] for name in config.KEY_ENVS]
    database = database_name(fresh.dsn)
    execute(fresh.dsn, f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
    log_start = pg_cluster.log.stat().st_size
    fresh.run("seed", "--count", "5")
    fresh.run("run", "--wait-time", "1")
    fresh.transform()
    token, ip = ip_token(fresh)
    fresh.run("recover", "lookup", "--token", token, "--reason", "LOG-1")
    fresh.run("recover", "lookup", "--ip", ip, "--reason", "LOG-2")

    with open(pg_cluster.log, errors="replace") as f:
        f.seek(log_start)
        server_log = f.read()
    assert "request_value" in server_log  # the statements were logged: the check is not vacuous
    for key in keys:
        assert key not in server_log
    for path in fresh.dbt_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(key in text for key in keys), f"a key in {path}"

    # While a session holds the keys, no other workload's session can see them.
    holding = threading.Event()
    release = threading.Event()
    holder_pid: list[int] = []

    def hold_keys() -> None:
        with psycopg.connect(
            role_dsn(fresh.dsn, config.TRANSFORMER_ROLE),
            autocommit=True,
            options=key_options(dict(zip(config.KEY_ENVS, keys, strict=True))),
        ) as conn:
            assert conn.execute("SELECT current_setting('loginvault.hmac_key')").fetchone() == (keys[0],)
            conn.execute("BEGIN")
            conn.execute("SELECT current_setting('loginvault.encryption_key')")
            holder_pid.append(conn.info.backend_pid)
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_keys)
    holder.start()
    try:
        assert holding.wait(30)
        for role in (config.LOADER_ROLE, config.ANALYST_ROLE, config.PII_ADMIN_ROLE, config.AUDITOR_ROLE):
            with login(fresh, role) as conn:
                seen = conn.execute(
                    "SELECT concat_ws('|',"
                    " (SELECT string_agg(name || '=' || setting, ',') FROM pg_settings),"
                    " (SELECT string_agg(a::text, ',') FROM pg_stat_activity AS a),"
                    " (SELECT string_agg(s::text, ',') FROM pg_db_role_setting AS s),"
                    " (SELECT string_agg(r::text, ',') FROM pg_roles AS r))"
                ).fetchone()[0]
                # Not vacuous: the session holding the keys was live, and this login saw it.
                (visible,) = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", holder_pid).fetchone()
                assert visible == 1, f"{role} does not see the session holding the keys"
                for key in keys:
                    assert key not in seen, f"{role} sees a key"
    finally:
        release.set()
        holder.join(30)


# ---------------------------------------------------------------- the docs put no key in SQL


def test_no_documented_procedure_puts_a_key_in_sql_text():
    """A key in a statement lands in the server log (log_statement) and pg_stat_activity: the
    docs pass keys only as session settings (PGOPTIONS, set by the commands)."""
    patterns = (
        r"\\set\s+\w*key",  # psql variables holding a key
        r":'?\w*key\w*'?",  # … and their use
        r"pgp_sym_(?:en|de)crypt\([^)]*'",  # a literal key
        r"set_config\(\s*'loginvault\.\w+_key'",
        r"SET\s+loginvault\.\w+_key",
    )
    for path in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]:
        text = path.read_text()
        for pattern in patterns:
            found = re.findall(pattern, text, flags=re.IGNORECASE)
            assert not found, f"{path.name}: {found}"
