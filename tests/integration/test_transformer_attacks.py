"""What dbt's own login (the transformer: it owns staging, the vault and the marts, and holds the
keys) tried against the roles that trust its tables, each now refused or harmless:

- code in the bootstrap's admin session, through a trigger or a forced policy on a table the
  bootstrap updated or counted (SET ROLE is no boundary: such code can RESET it);
- an index or statistics expression added between a definer's shape check and its query (the
  planner evaluates it): the check's lock waits for and blocks both;
- a vault ciphertext rewritten to answer an officer with another value;
- column grants, grant options and a policy on a mart, which `loginvault check` did not see;
- a policy on a mart that ran in an analyst's session;
- the erasure function serving a request that is not an erasure of that subject.
"""

from __future__ import annotations

import re
import secrets

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import Job, execute, ip_token, query, role_dsn
from ingest import config, db
from ingest.schema import bootstrap
from ingest.transform import metrics
from ingest.vault import keys

pytestmark = [pytest.mark.integration]


def as_transformer(job: Job, *statements: str, params: tuple | None = None) -> None:
    """Run statements with dbt's own login, acting as its role (the owner of its tables)."""
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        for statement in statements:
            conn.execute(statement, params)


# The transformer's code for the bootstrap's session: if it runs as anyone but the transformer,
# it leaves a superuser behind (a RESET ROLE would undo any SET ROLE the bootstrap made).
ESCALATE = """
CREATE TABLE staging.ran_as (who text);
GRANT INSERT ON staging.ran_as TO PUBLIC;
CREATE FUNCTION staging.escalate() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO staging.ran_as VALUES (current_user);
    RESET ROLE;
    IF current_user <> 'loginvault_transformer' THEN
        EXECUTE 'CREATE ROLE planted_superuser LOGIN SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION staging.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM staging.escalate(); RETURN NULL; END $$;
"""


def assert_nothing_ran(job: Job) -> None:
    assert query(job.dsn, "SELECT count(*) FROM staging.ran_as") == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM pg_roles WHERE rolname = 'planted_superuser'") == [(0,)]


def test_the_bootstrap_never_reads_or_writes_the_vault(fresh):
    """The repeatable definitions applied again (as when one of them changes) give a vault without
    its guard the guard back without a row being read or written: the transformer's trigger and
    forced policy on it never run in the admin's session."""
    execute(fresh.dsn, "DROP TABLE loginvault.guard_pii_vault; DELETE FROM loginvault.schema_definitions")
    values = query(fresh.dsn, "SELECT count(*) FROM pii.vault")
    as_transformer(
        fresh,
        ESCALATE,
        "CREATE TRIGGER escalate BEFORE UPDATE ON pii.vault FOR EACH STATEMENT EXECUTE FUNCTION staging.escalate_trigger()",
        "ALTER TABLE pii.vault ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE pii.vault FORCE ROW LEVEL SECURITY",
        "CREATE POLICY escalate ON pii.vault USING (staging.escalate())",
    )
    bootstrap.bootstrap(fresh.dsn)
    assert_nothing_ran(fresh)
    assert query(fresh.dsn, "SELECT count(*) FROM pii.vault") == values
    assert query(fresh.dsn, "SELECT to_regclass('loginvault.guard_pii_vault')::text") == [
        ("loginvault.guard_pii_vault",)
    ]


def test_the_bootstrap_never_reads_a_pre_existing_mart(fresh):
    """A pre-existing user_logins of the original exercise's DDL (no message_id) is kept aside
    unread: its owner's forced policy never runs in the admin's session."""
    execute(
        fresh.dsn,
        "DROP TABLE public.user_logins CASCADE;"
        " CREATE TABLE public.user_logins (user_id varchar(128), device_type varchar(32), masked_ip varchar(256),"
        " masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date);"
        " INSERT INTO public.user_logins (user_id, create_date) VALUES ('u', current_date);"
        " ALTER TABLE public.user_logins OWNER TO loginvault_transformer;"
        " DELETE FROM loginvault.schema_definitions",  # the marts' definitions applied again
    )
    as_transformer(
        fresh,
        ESCALATE,
        "ALTER TABLE public.user_logins ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE public.user_logins FORCE ROW LEVEL SECURITY",
        "CREATE POLICY escalate ON public.user_logins USING (staging.escalate())",
    )
    bootstrap.bootstrap(fresh.dsn)
    assert_nothing_ran(fresh)
    kept = query(fresh.dsn, "SELECT to_regclass('public.user_logins_before_loginvault')::text")
    assert kept == [("user_logins_before_loginvault",)]


@pytest.mark.parametrize(
    "relation, addition",
    [
        ("pii.vault", "CREATE STATISTICS staging.fold ON (staging.same(token)) FROM pii.vault"),
        ("public.user_logins", "CREATE STATISTICS staging.fold ON (staging.same(user_id)) FROM public.user_logins"),
        ("staging.loginvault_watermarks", "CREATE INDEX fold ON staging.loginvault_watermarks ((staging.same(model)))"),
        ("staging.stg_sqs__loads", "CREATE TRIGGER fold BEFORE INSERT ON staging.stg_sqs__loads"
         " FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()"),
    ],
)  # fmt: skip
def test_nothing_is_added_to_a_relation_between_its_check_and_the_read(fresh, relation, addition):
    """A definer's check locks what it reads until its transaction ends: the transformer's
    CREATE INDEX / STATISTICS / TRIGGER waits (here: its lock timeout ends it), and goes
    through once the reader is done (not vacuous)."""
    as_transformer(fresh, "CREATE FUNCTION staging.same(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT $1'")
    with psycopg.connect(fresh.dsn) as reader:  # a definer's transaction (the check as its first act)
        assert reader.execute("SELECT loginvault.checked_relation(%s)::text", (relation,)).fetchone()[0]
        with pytest.raises(psycopg.errors.LockNotAvailable):
            as_transformer(fresh, "SET lock_timeout = '200ms'", addition)
    as_transformer(fresh, addition)  # the reader committed: now it goes through (and is refused next time)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match=f"refusing to read {relation}"):
        query(fresh.dsn, "SELECT loginvault.checked_relation(%s)", (relation,))


def test_a_rewritten_vault_ciphertext_is_no_answer(fresh):
    """The transformer holds the encryption key and owns the vault: it re-encrypts another value
    under an officer's token. The service decrypts, sees that the value does not make the token,
    answers nothing and audits `tampered`."""
    token, _ = ip_token(fresh)
    as_transformer(
        fresh,
        "UPDATE pii.vault SET ciphertext = public.pgp_sym_encrypt('6.6.6.6', %s, 'cipher-algo=aes256, s2k-mode=1')"
        " WHERE token = %s",
        params=(fresh.env[config.ENCRYPTION_KEY_ENV], token),
    )
    refused = fresh.run("recover", "lookup", "--token", token, "--reason", "INC-12", ok=False)
    assert refused.returncode == 1 and "6.6.6.6" not in refused.stdout + refused.stderr
    assert "decrypts to a value the token was not made from" in refused.stderr
    assert query(fresh.dsn, "SELECT outcome FROM pii.recovery_audit ORDER BY id DESC LIMIT 1") == [("tampered",)]


def test_check_names_column_grants_grant_options_and_a_policy_on_a_mart(fresh):
    as_transformer(
        fresh,
        "GRANT UPDATE (masked_ip) ON user_logins TO loginvault_analyst",
        "GRANT SELECT ON pii.vault TO loginvault_recovery WITH GRANT OPTION",
        "ALTER TABLE user_logins ENABLE ROW LEVEL SECURITY",
    )
    out = fresh.run("check", ok=False)
    assert out.returncode == 1
    assert "relation public.user_logins: column grant UPDATE (masked_ip) to loginvault_analyst is held" in out.stdout
    assert "relation pii.vault: SELECT to loginvault_recovery WITH GRANT OPTION is held, but not declared" in out.stdout
    assert "relation public.user_logins: it has row-level security or policies" in out.stdout


def test_a_policy_on_a_mart_runs_nothing_in_an_analysts_session(fresh):
    """With row_security off for the analyst's login, a policy the transformer put on a mart makes
    the analyst's read fail; its code never runs as the analyst."""
    as_transformer(
        fresh,
        "CREATE TABLE staging.ran_as (who text)",
        "GRANT INSERT ON staging.ran_as TO PUBLIC",
        "GRANT USAGE ON SCHEMA staging TO PUBLIC",
        "CREATE FUNCTION staging.spy() RETURNS boolean LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO staging.ran_as VALUES (session_user); RETURN true; END $$",
        "ALTER TABLE user_logins ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY spy ON user_logins FOR SELECT USING (staging.spy())",
    )
    with psycopg.connect(role_dsn(fresh.dsn, config.ANALYST_ROLE)) as analyst:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            analyst.execute("SELECT count(*) FROM user_logins")
    assert query(fresh.dsn, "SELECT count(*) FROM staging.ran_as") == [(0,)]


def test_the_erasure_serves_only_a_waiting_erasure_of_that_subject(fresh):
    """pii.erase_subject (callable by no login) refuses a request id that is a lookup, or an
    erasure of another subject, whoever calls it."""
    (subject,) = query(fresh.dsn, "SELECT user_id FROM user_logins ORDER BY message_id LIMIT 1")[0]
    token, _ = ip_token(fresh)
    with psycopg.connect(role_dsn(fresh.dsn, config.PII_ADMIN_ROLE), autocommit=True) as officer:
        (lookup,) = officer.execute("SELECT request_id FROM pii.request_value(%s, 'INC-13')", (token,)).fetchone()
        (erasure,) = officer.execute(
            "SELECT request_id FROM pii.request_erasure('someone-else', 'DSAR-13', false)"
        ).fetchone()
    keys = {
        "loginvault.hmac_key": fresh.env[config.HMAC_KEY_ENV],
        "loginvault.encryption_key": fresh.env[config.ENCRYPTION_KEY_ENV],
    }
    for request in (lookup, erasure):
        with psycopg.connect(fresh.dsn) as conn:
            for name, value in keys.items():
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            with pytest.raises(
                psycopg.errors.InvalidParameterValue, match="not a waiting erasure request of this subject"
            ):
                conn.execute("SELECT * FROM pii.erase_subject(%s, 'x', false, %s)", (subject, request))
    assert query(fresh.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) != [(0,)]


def stage_new_messages(job: Job, count: int = 5) -> None:
    """New messages in raw, not yet transformed."""
    job.run("seed", "--count", str(count), "--random-seed", "4242")  # values the origin's build has not seen
    job.run("run", "--wait-time", "1")


# Keys out of the transform's session through built-in functions alone, on a table it writes
# (the CHECK holds: pg_notify returns void, '' as text; the notification goes at commit).
LEAK_BY_CHECK = (
    "ALTER TABLE staging.stg_sqs__messages ADD CONSTRAINT sane CHECK (pg_notify('loot',"
    " coalesce(current_setting('loginvault.hmac_key', true), '-') || '|'"
    " || coalesce(current_setting('loginvault.encryption_key', true), '-'))::text = '') NOT VALID"
)


def test_a_check_of_built_in_functions_on_a_staged_table_gets_no_key(fresh):
    """A CHECK constraint of pg_notify(current_setting(…)) on a table the transform writes: the
    transform refuses before dbt starts (`loginvault check`), and `dbt run` straight away — as
    when the constraint is added after that check — refuses at the first model: no
    notification ever carries a key."""
    stage_new_messages(fresh)
    as_transformer(fresh, LEAK_BY_CHECK)
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as listener:
        heard: list[str] = []
        listener.add_notify_handler(lambda notify: heard.append(notify.payload))
        listener.execute("LISTEN loot")
        build = fresh.transform(ok=False)
        named = "relation staging.stg_sqs__messages: it has constraints other than the declared ones (sane)"
        assert build.returncode == 1 and named in build.stderr
        raced = fresh.dbt("run")  # the models alone: no data test runs first
        assert raced.returncode != 0
        assert "has constraints other than the declared ones (sane)" in raced.stdout, raced.stdout[-3000:]
        listener.execute("SELECT 1")  # reads what was sent meanwhile
        assert heard == []
    execute(fresh.dsn, "ALTER TABLE staging.stg_sqs__messages DROP CONSTRAINT sane")  # not vacuous: now it builds
    fresh.transform()


def test_a_search_path_of_the_logins_own_finds_none_of_its_functions(fresh):
    """dbt's login gives itself a search path that puts staging first, and makes a
    pgp_sym_encrypt there that keeps the key it is handed: `loginvault check` names the setting
    (the transform refuses), and a build that runs anyway (dbt started before the setting, or
    run straight away) resolves pgcrypto's function, not the planted one: the session's search
    path is a startup option, which wins over the login's."""
    stage_new_messages(fresh)
    login = conninfo_to_dict(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE))["user"]
    database = conninfo_to_dict(fresh.dsn)["dbname"]
    vault = query(fresh.dsn, "SELECT count(*) FROM pii.vault")[0][0]
    # In this database only: the login is every test database's of the cluster.
    setting = f"ALTER ROLE {login} IN DATABASE {database}"
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"{setting} SET search_path = staging, public")  # as the login itself
    try:
        as_transformer(
            fresh,
            "CREATE TABLE staging.loot (key text)",
            "CREATE FUNCTION staging.pgp_sym_encrypt(data text, psw text, opts text) RETURNS bytea LANGUAGE plpgsql"
            " AS $$ BEGIN INSERT INTO staging.loot VALUES (psw); RETURN public.pgp_sym_encrypt(data, psw, opts); END $$",
        )
        with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE)) as conn:  # the login's own sessions
            found = "SELECT 'pgp_sym_encrypt(text,text,text)'::regprocedure = 'staging.pgp_sym_encrypt(text,text,text)'::regprocedure"
            assert conn.execute(found).fetchone() == (True,)  # not vacuous: the planted function would win
        named = f"role {login}: setting search_path in this database is held, but not allowed (ALTER ROLE … RESET search_path)"
        assert named in fresh.run("check", ok=False).stdout.splitlines()
        assert fresh.transform(ok=False).returncode == 1
        fresh.dbt("build", "--warn-error").check_returncode()
        assert query(fresh.dsn, "SELECT count(*) FROM staging.loot") == [(0,)]
        assert query(fresh.dsn, "SELECT count(*) FROM pii.vault")[0][0] > vault  # values were encrypted
    finally:
        execute(fresh.dsn, f"{setting} RESET search_path")


def test_the_bootstrap_refuses_a_mart_of_its_own_that_lost_message_id(fresh):
    """dbt's login drops message_id from user_logins ONLY (its guard keeps the column). The
    bootstrap that applies the marts' definitions again refuses, naming it, instead of keeping
    it aside as a table of the original exercise: renamed, it would keep the guard, and the new
    mart would get neither a guard nor the analysts' indexes (their names taken) — then be made
    a view of the transformer's code that analysts read. Nothing is renamed; `loginvault check`
    names the change."""
    as_transformer(fresh, "ALTER TABLE ONLY public.user_logins DROP COLUMN message_id")
    execute(fresh.dsn, "DELETE FROM loginvault.schema_definitions")  # the definitions applied again
    with pytest.raises(Exception, match="public.user_logins is loginvault's mart but has lost its column message_id"):
        bootstrap.bootstrap(fresh.dsn)
    assert query(fresh.dsn, "SELECT to_regclass('public.user_logins_before_loginvault')") == [(None,)]
    guarded = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.user_logins'::regclass"
    assert query(fresh.dsn, guarded) == [(1,)]
    assert any(
        line.startswith("relation public.user_logins: it has lost its unique index on message_id")
        for line in fresh.run("check", ok=False).stdout.splitlines()
    )


def test_a_replaced_validated_view_is_read_by_no_session_that_holds_the_keys(fresh):
    """dbt's login replaces its view int_login_events_validated (as it may between the build that
    made it and a read) with one that sends the keys of whoever reads it: the marts, the vault
    and the tests inline the view's SQL, so a build that does not rebuild the view hears nothing."""
    stage_new_messages(fresh)
    as_transformer(
        fresh,
        "DO $$ BEGIN EXECUTE format('CREATE OR REPLACE VIEW staging.int_login_events_validated AS SELECT * FROM (%s) AS v"
        " WHERE pg_notify(''loot'', current_setting(''loginvault.hmac_key'', true))::text = ''''',"
        " rtrim(pg_get_viewdef('staging.int_login_events_validated'), ';')); END $$",
    )
    assert query(fresh.dsn, "SELECT count(*) FROM staging.int_login_events_validated")[0][0] > 0  # it would send
    logins = query(fresh.dsn, "SELECT count(*) FROM user_logins")[0][0]
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as listener:
        heard: list[str] = []
        listener.add_notify_handler(lambda notify: heard.append(notify.payload))
        listener.execute("LISTEN loot")
        fresh.dbt("build", "--warn-error", "--exclude", "int_login_events_validated").check_returncode()
        listener.execute("SELECT 1")  # reads what was sent meanwhile
        assert heard == []
    assert query(fresh.dsn, "SELECT count(*) FROM user_logins")[0][0] > logins  # the build read the new rows


@pytest.mark.parametrize(
    ("kind", "table"),
    [("hmac", "pii.token_map"), ("encryption", "pii.vault")],
)
def test_a_check_on_what_a_rotation_writes_gets_no_key(fresh, kind, table):
    """A key rotation runs as dbt's login with the current and the previous keys: a CHECK of
    pg_notify(current_setting(…)) on the table it writes (the token map, the vault: NO INHERIT,
    past the guard) refuses the rotation at its first transaction, and no notification carries
    a key."""
    as_transformer(
        fresh,
        f"ALTER TABLE {table} ADD CONSTRAINT sane CHECK (pg_notify('loot',"
        " coalesce(current_setting('loginvault.hmac_key_previous', true), '-') || '|'"
        " || coalesce(current_setting('loginvault.encryption_key_previous', true), '-'))::text = '') NO INHERIT NOT VALID",
    )
    name = keys.ENV[kind]
    env = {**fresh.env, name: secrets.token_hex(32), keys.PREVIOUS_ENV[kind]: fresh.env[name]}
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as listener:
        heard: list[str] = []
        listener.add_notify_handler(lambda notify: heard.append(notify.payload))
        listener.execute("LISTEN loot")
        rotated = fresh.run("keys", "rotate", kind, ok=False, env=env)
        listener.execute("SELECT 1")  # reads what was sent meanwhile
        assert heard == []
    assert rotated.returncode != 0
    assert f"{table}: it has constraints other than the declared ones (sane)" in rotated.stderr


def test_the_transform_processs_own_sessions_hold_no_key(fresh, monkeypatch):
    """The transform puts the keys in its process's PGOPTIONS for dbt; its other sessions (the
    checks, the freshness metric that reads the mart and staging after each build) must not
    inherit them: a forced policy of dbt's login on the mart, which runs in such a session,
    finds no key."""
    monkeypatch.setenv("PGOPTIONS", keys.key_options({name: secrets.token_hex(32) for name in config.KEY_ENVS}))
    monkeypatch.setenv(config.WORKLOADS[config.TRANSFORMER_ROLE].dsn_env, role_dsn(fresh.dsn, config.TRANSFORMER_ROLE))
    with db.connect(config.TRANSFORMER_ROLE) as conn:
        assert conn.execute("SELECT current_setting('loginvault.hmac_key', true)").fetchone() == (None,)
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:  # not vacuous
        assert conn.execute("SELECT current_setting('loginvault.hmac_key', true)").fetchone() != (None,)
    as_transformer(
        fresh,
        "ALTER TABLE public.user_logins ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE public.user_logins FORCE ROW LEVEL SECURITY",
        "CREATE POLICY loot ON public.user_logins USING"
        " (pg_notify('loot', coalesce(current_setting('loginvault.hmac_key', true), '-'))::text = '')",
    )
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True, options="") as listener:
        heard: list[str] = []
        listener.add_notify_handler(lambda notify: heard.append(notify.payload))
        listener.execute("LISTEN loot")
        metrics.newest_mart_sent_at(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), "public")
        listener.execute("SELECT 1")  # reads what was sent meanwhile
    assert heard and set(heard) == {"-"}  # the policy ran, and found no key


def test_the_tests_mark_is_written_after_the_lock_and_check(fresh):
    """The on-run-end hook writes staging.loginvault_watermarks in dbt's keyed session after
    the last data test let go of its locks: a trigger added in between would run there. Its
    statement locks and checks first (the same statement, so the same transaction)."""
    fresh.transform()
    log = (fresh.dbt_dir / "logs" / "dbt.log").read_text()
    hook = re.compile(
        r"checked_transform_relations\(array\[\]::text\[\], 'ROW EXCLUSIVE'\);\s*"
        r"insert into staging\.loginvault_watermarks \(model, high\)\s*values \('tests_passed'"
    )
    assert "values ('tests_passed'" in log  # the mark was written
    assert hook.search(log)
