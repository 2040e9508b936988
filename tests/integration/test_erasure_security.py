"""Erasure against code the transformer planted: the same attacks as on recovery
(test_security.py), on each relation `pii.erase_subject` reads or deletes from. The transformer
owns staging, the vault and the marts: a policy, trigger, rule, view or child table it attaches
there would run in the erasure function's session, as its owner, with the keys. The function
refuses before it reads, deletes or audits anything.

Entry point: `loginvault erase` as a privacy officer's login (pii.erase_subject underneath).
"""

from __future__ import annotations

import psycopg
import pytest

from conftest import Job, execute, query, role_dsn
from ingest import config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Where a planted function puts what it steals (created by the admin, writable by anyone).
STOLEN = "CREATE TABLE IF NOT EXISTS public.stolen (what text); GRANT INSERT ON public.stolen TO PUBLIC"
# The planted code: the session's keys and user, copied where its author can read them.
STEAL_FUNCTION = """
CREATE OR REPLACE FUNCTION staging.steal() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO public.stolen VALUES (coalesce(current_setting('loginvault.hmac_key', true), '')
        || ' as ' || current_user);
    RETURN true;
END $$;
CREATE OR REPLACE FUNCTION staging.steal_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM staging.steal();
    RETURN OLD;
END $$;
"""
PLANTS = {
    "policy on the vault": "ALTER TABLE pii.vault ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY steal ON pii.vault USING (staging.steal())",
    "view in place of staged messages": "ALTER TABLE staging.stg_sqs__messages RENAME TO messages_real;"
    " CREATE VIEW staging.stg_sqs__messages AS SELECT * FROM staging.messages_real WHERE staging.steal()",
    "policy on the mart": "ALTER TABLE user_logins ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY steal ON user_logins USING (staging.steal())",
    "trigger on the rejections": "CREATE TRIGGER steal BEFORE DELETE ON rejected_login_events"
    " FOR EACH ROW EXECUTE FUNCTION staging.steal_trigger()",
    "trigger on staged payloads": "CREATE TRIGGER steal BEFORE DELETE ON staging.stg_sqs__login_events"
    " FOR EACH ROW EXECUTE FUNCTION staging.steal_trigger()",
    "rule on staged messages": "CREATE RULE steal AS ON DELETE TO staging.stg_sqs__messages DO ALSO SELECT staging.steal()",
    "policy on the token map": "ALTER TABLE pii.token_map ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY steal ON pii.token_map USING (staging.steal())",
    "a child partition with a policy": "CREATE TABLE staging.child PARTITION OF staging.stg_sqs__login_events"
    " FOR VALUES FROM ('2999-01-01') TO ('2999-01-02'); ALTER TABLE staging.child ENABLE ROW LEVEL SECURITY;"
    " CREATE POLICY steal ON staging.child USING (staging.steal())",
    # The allow-list: what no block-list of RLS, triggers and rules would see.
    "staged column of a domain with a CHECK": "CREATE DOMAIN staging.checked AS text CHECK (staging.steal());"
    " ALTER TABLE staging.stg_sqs__messages ALTER COLUMN message_id TYPE staging.checked",
    "staging index on planted code": "CREATE FUNCTION staging.same(text) RETURNS text IMMUTABLE LANGUAGE sql"
    " AS 'SELECT $1'; CREATE INDEX steal ON staging.stg_sqs__messages (staging.same(message_id))",
    "extended statistics on the mart": "CREATE STATISTICS staging.steal ON user_id, locale FROM user_logins",
    "trigger on a staged day partition": "DO $$ BEGIN EXECUTE format('CREATE TRIGGER steal BEFORE DELETE ON %s"
    " FOR EACH ROW EXECUTE FUNCTION staging.steal_trigger()', (SELECT d.partition FROM"
    " loginvault.day_partitions('staging.stg_sqs__login_events') AS d LIMIT 1)); END $$",
    "an inheritance child of staged messages": "CREATE TABLE staging.kid () INHERITS (staging.stg_sqs__messages);"
    " CREATE TRIGGER steal BEFORE DELETE ON staging.kid FOR EACH ROW EXECUTE FUNCTION staging.steal_trigger()",
}

# What the marts' and the vault's guards (21_shapes.sql) refuse where it is made: a column
# change must reach the guard, which only raw's owner may alter.
GUARDED = {
    "mart column of a type with an implicit cast": "CREATE TYPE staging.evil AS (v text);"
    " CREATE FUNCTION staging.evil_text(staging.evil) RETURNS text LANGUAGE plpgsql AS"
    " $$ BEGIN PERFORM staging.steal(); RETURN ($1).v; END $$;"
    " CREATE CAST (staging.evil AS text) WITH FUNCTION staging.evil_text(staging.evil) AS IMPLICIT;"
    " ALTER TABLE user_logins ALTER COLUMN user_id TYPE staging.evil USING ROW(user_id)::staging.evil",
    "mart column default of planted code": "ALTER TABLE rejected_login_events ALTER COLUMN reason"
    " SET DEFAULT staging.steal()::text",
    "mart column of a case-blind collation": "CREATE COLLATION staging.blind (provider = icu,"
    " locale = 'und-u-ks-level2', deterministic = false);"
    " ALTER TABLE user_logins ALTER COLUMN user_id TYPE varchar(128) COLLATE staging.blind",
}


def state(job: Job) -> tuple:
    """What an erasure changes: the rows of every table it deletes from, and its audit."""
    return query(
        job.dsn,
        "SELECT (SELECT count(*) FROM raw.login_events), (SELECT count(*) FROM staging.stg_sqs__messages),"
        " (SELECT count(*) FROM staging.stg_sqs__login_events), (SELECT count(*) FROM user_logins),"
        " (SELECT count(*) FROM rejected_login_events), (SELECT count(*) FROM pii.erasure_audit),"
        " (SELECT count(*) FROM pii.erased_subjects)",
    )[0]


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_erasure_refuses_what_the_transformer_planted(fresh, plant):
    (subject,) = query(fresh.dsn, "SELECT user_id FROM user_logins ORDER BY message_id LIMIT 1")[0]
    execute(fresh.dsn, STOLEN)
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:  # dbt's own login
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(STEAL_FUNCTION)
        conn.execute(PLANTS[plant])
    execute(fresh.dsn, "TRUNCATE public.stolen")  # what planting itself ran, as the transformer
    before = state(fresh)

    refused = fresh.run("erase", "--user-id", subject, "--reason", "DSAR-9", ok=False)

    assert refused.returncode == 1 and not refused.stdout
    (line,) = refused.error_lines()
    assert "refusing to read" in line, line
    assert subject not in refused.stderr
    assert state(fresh) == before  # nothing deleted, nothing audited
    # Nothing ran as anyone but the admin (whose own counting above reads a planted view).
    assert query(fresh.dsn, "SELECT count(*) FROM public.stolen WHERE what <> ' as ' || current_user") == [(0,)]


@pytest.mark.parametrize("plant", sorted(GUARDED))
def test_the_marts_guards_refuse_a_column_change_where_it_is_made(fresh, plant):
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(STEAL_FUNCTION)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of table guard_"):
            conn.execute(GUARDED[plant])


def test_the_same_erasure_runs_when_nothing_was_planted(fresh):
    """Not vacuous: without a plant, the same command erases the subject (and the trap's table
    stays empty)."""
    (subject,) = query(fresh.dsn, "SELECT user_id FROM user_logins ORDER BY message_id LIMIT 1")[0]
    execute(fresh.dsn, STOLEN)
    before = state(fresh)
    fresh.run("erase", "--user-id", subject, "--reason", "DSAR-10")
    after = state(fresh)
    assert after[3] == before[3] - 1 and after[5] == before[5] + 1  # one login gone, one audit row
    assert query(fresh.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) == [(0,)]


def test_an_open_loader_transaction_does_not_stop_an_erasure(fresh):
    """The loader's login can keep an insert open for ever: the erasure does not wait for it (it
    once locked raw against every writer, and failed on its lock timeout)."""
    (subject,) = query(fresh.dsn, "SELECT user_id FROM user_logins ORDER BY message_id LIMIT 1")[0]
    with psycopg.connect(role_dsn(fresh.dsn, config.LOADER_ROLE)) as loader:  # a transaction left open
        loader.execute("INSERT INTO raw.login_events VALUES ('open', '{}', now(), now(), 1, 'q', 'open-load', 'x')")
        fresh.run("erase", "--user-id", subject, "--reason", "DSAR-11")
        assert query(fresh.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) == [(0,)]
        loader.rollback()
