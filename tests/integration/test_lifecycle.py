"""The cleartext lifecycle (real PostgreSQL, dbt, moto, `loginvault retention|raw|erase`):
raw and staging partitioned by day, `retention apply` drops whole days that reached the marts
(never others), deduplication and incremental builds work after it, a full refresh is refused;
a subject's erasure leaves nothing of them in any table, keeps others' shared values, and keeps
their messages out when they come again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from conftest import Job, clone_job, drop_test_database, execute, new_job, query, role_dsn, send_events, wait_until
from ingest import config
from ingest.local import sample
from ingest.settings import SqsSettings
from ingest.vault import masking

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def land(
    job: Job, events: list, days_ago: float, complete: bool = True, message_ids: list[str] | None = None
) -> list[str]:
    """Raw rows of `events` received `days_ago` days ago, in one dlt load, through the parent
    table as the loader (the way dlt appends). Returns their message ids."""
    received = datetime.now(UTC) - timedelta(days=days_ago)
    load_id = f"{received.timestamp():.6f}{secrets.randbelow(1000):03d}"
    ids = message_ids or [str(uuid.uuid4()) for _ in events]
    with psycopg.connect(role_dsn(job.dsn, config.LOADER_ROLE)) as conn:
        with conn.cursor().copy("COPY raw.login_events FROM STDIN") as copy:
            for message_id, event in zip(ids, events, strict=True):
                body = event if isinstance(event, str) else sample.to_body(event)
                copy.write_row((message_id, body, received, received, 1, "login-queue", load_id, uuid.uuid4().hex[:14]))
        if complete:
            conn.execute(
                "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'loginvault_ingest', 0, now())",
                (load_id,),
            )
    return ids


def sqs_depth(settings: SqsSettings) -> tuple[int, int]:
    from ingest.consumer.sqs import Queue

    return Queue(settings).depth()


def day_partitions(job: Job, parent: str) -> dict:
    return dict(query(job.dsn, "SELECT day, partition::text FROM loginvault.day_partitions(%s::regclass)", (parent,)))


def marts(job: Job) -> dict:
    tables = {"user_logins": "message_id", "rejected_login_events": "message_id", "pii.vault": "token, kind"}
    return {
        t: query(job.dsn, f"SELECT count(*), md5(string_agg(x::text, '|' ORDER BY {o})) FROM {t} AS x")[0]
        for t, o in tables.items()
    }


def every_table_text(job: Job) -> str:
    """Every row of every table in every schema (but the catalogs), as JSON text."""
    tables = query(
        job.dsn,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
    )
    return "\n".join(row[0] for (t,) in tables for row in query(job.dsn, f"SELECT row_to_json(x)::text FROM {t} AS x"))


@pytest.fixture
def job(pg_cluster, template_db, moto_server):
    job = new_job(pg_cluster, template_db, moto_server, "life")
    yield job
    drop_test_database(pg_cluster, job.dsn)


# ---------------------------------------------------------------- partitions


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_dlt_loads_through_the_parent_into_the_day_partition(job, file_format):
    job.run("seed", "--count", "12")
    job.run("run", "--wait-time", "1", env={**job.env, "INGEST_LOADER_FILE_FORMAT": file_format})
    today = datetime.now(UTC).strftime("%Y%m%d")
    placed = query(job.dsn, "SELECT tableoid::regclass::text, count(*) FROM raw.login_events GROUP BY 1")
    assert placed == [(f"raw.login_events_p{today}", 12)]
    job.transform()
    assert query(
        job.dsn, "SELECT tableoid::regclass::text, count(*) FROM staging.stg_sqs__login_events GROUP BY 1"
    ) == [(f"staging.stg_sqs__login_events_p{today}", 12)]


def test_raw_partition_converts_an_unpartitioned_table_keeping_everything(job):
    job.run("seed", "--count", "8")
    job.run("run", "--wait-time", "1")
    # The layout of an earlier version: a plain table, with its rows.
    execute(
        job.dsn,
        "ALTER TABLE raw.login_events RENAME TO login_events_new;"
        " CREATE TABLE raw.login_events (LIKE raw.login_events_new INCLUDING DEFAULTS);"
        " INSERT INTO raw.login_events SELECT * FROM raw.login_events_new; DROP TABLE raw.login_events_new CASCADE;"
        " CREATE INDEX login_events_message_id_idx ON raw.login_events (message_id);"
        " CREATE INDEX login_events_dlt_load_id_idx ON raw.login_events (_dlt_load_id);"
        " ALTER TABLE raw.login_events OWNER TO loginvault_owner;"
        " GRANT INSERT ON raw.login_events TO loginvault_loader; GRANT SELECT ON raw.login_events TO loginvault_transformer;"
        " GRANT SELECT, DELETE ON raw.login_events TO loginvault_eraser;",
    )
    before = query(job.dsn, "SELECT message_id, body FROM raw.login_events ORDER BY message_id")
    with psycopg.connect(role_dsn(job.dsn, config.LOADER_ROLE)) as loader:  # a loader holding the table
        loader.execute("LOCK TABLE raw.login_events IN ROW EXCLUSIVE MODE")
        refused = job.run("raw", "partition", ok=False)
        assert refused.returncode == 1 and "stop the ingest" in refused.stderr
    assert query(job.dsn, "SELECT relkind FROM pg_class WHERE oid = 'raw.login_events'::regclass") == [("r",)]
    out = job.run("raw", "partition")
    assert "8 rows kept" in out.stderr
    assert query(
        job.dsn, "SELECT relkind, pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'raw.login_events'::regclass"
    ) == [("p", config.RAW_OWNER_ROLE)]
    assert query(job.dsn, "SELECT message_id, body FROM raw.login_events ORDER BY message_id") == before
    indexes = {
        r[0]
        for r in query(
            job.dsn, "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'raw.login_events'::regclass"
        )
    }
    assert indexes == {"raw.login_events_message_id_idx", "raw.login_events_dlt_load_id_idx"}
    for role, privilege in ((config.LOADER_ROLE, "INSERT"), (config.TRANSFORMER_ROLE, "SELECT")):
        assert query(job.dsn, "SELECT has_table_privilege(%s, 'raw.login_events', %s)", (role, privilege)) == [(True,)]
    assert "nothing to do" in job.run("raw", "partition").stderr
    job.run("seed", "--count", "3")
    job.run("run", "--wait-time", "1")
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM raw.login_events") == [(11,)]


# ---------------------------------------------------------------- retention


@pytest.fixture(scope="module")
def aged(pg_cluster, template_db, moto_server):
    """30 days of back-dated raw rows (1 day without a partition: in the default), transformed;
    then one more back-dated load that no transform took; and today's rows from SQS."""
    job = new_job(pg_cluster, template_db, moto_server, "aged")
    today = datetime.now(UTC).date()
    no_partition = (datetime.now(UTC) - timedelta(days=20.5)).date()
    for first, last in (
        (today - timedelta(days=31), no_partition - timedelta(days=1)),
        (no_partition + timedelta(days=1), today),
    ):
        execute(job.dsn, f"SELECT raw.ensure_partitions('{first}', '{last}')")
    events = list(sample.synthetic_events(300, seed=5))
    for day in range(1, 31):  # day 20 has no partition: the default takes its rows
        land(job, events[day * 10 : day * 10 + 10], days_ago=day + 0.5)
    job.run("seed", "--count", "10", "--random-seed", "9")
    job.run("run", "--wait-time", "1")
    job.transform()
    job.env["_untransformed"] = ",".join(land(job, events[:3], days_ago=25.5))  # landed after the build
    yield job
    drop_test_database(pg_cluster, job.dsn)


def test_retention_drops_old_days_that_reached_the_marts_and_keeps_the_rest(pg_cluster, aged):
    job = clone_job(pg_cluster, aged, "aged-retention")
    try:
        untransformed = job.env["_untransformed"].split(",")
        before = marts(job)
        today_rows = query(
            job.dsn, "SELECT count(*) FROM raw.login_events WHERE received_at > now() - interval '1 day'"
        )
        dry = job.run("retention", "apply", "--days", "7", "--dry-run")
        assert "would remove" in dry.stderr and query(job.dsn, "SELECT count(*) FROM raw.retention_log") == [(0,)]

        out = job.run("retention", "apply", "--days", "7")

        cutoff = (datetime.now(UTC) - timedelta(days=7)).date()
        old_raw = [d for d in day_partitions(job, "raw.login_events") if d < cutoff - timedelta(days=1)]
        old_staged = [d for d in day_partitions(job, "staging.stg_sqs__login_events") if d < cutoff - timedelta(days=1)]
        kept_day = (datetime.now(UTC) - timedelta(days=25.5)).date()
        assert old_raw == [kept_day], "only the day with untransformed rows stays"
        assert old_staged == []
        assert "kept raw" in out.stderr and "have not reached the marts yet" in out.stderr
        assert query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id = ANY(%s)", (untransformed,)) == [
            (3,)
        ]
        assert query(
            job.dsn, "SELECT count(*) FROM raw.login_events_default WHERE received_at < now() - interval '7 days'"
        ) == [(0,)]
        assert marts(job) == before
        assert (
            query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE received_at > now() - interval '1 day'")
            == today_rows
        )
        assert "oldest cleartext left received" in out.stderr
        again = job.run("retention", "apply", "--days", "7")  # idempotent
        assert "removed 0 raw day partitions (0 rows)" in again.stderr

        # A message delivered again with an id seen before the window: staged once, never twice.
        (old_id,) = query(
            job.dsn,
            "SELECT u.message_id FROM user_logins u JOIN staging.stg_sqs__messages m USING (message_id) ORDER BY m.received_at LIMIT 1",
        )[0]
        land(job, [next(sample.synthetic_events(1, seed=77))], days_ago=0, message_ids=[old_id])
        job.transform()  # the untransformed day and the redelivery: an incremental build passes
        assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE message_id = %s", (old_id,)) == [(1,)]
        assert query(job.dsn, "SELECT count(*) FROM staging.stg_sqs__messages WHERE message_id = %s", (old_id,)) == [
            (1,)
        ]
        taken = query(
            job.dsn,
            "SELECT (SELECT count(*) FROM user_logins WHERE message_id = ANY(%(ids)s))"
            " + (SELECT count(*) FROM rejected_login_events WHERE message_id = ANY(%(ids)s))",
            {"ids": untransformed},
        )
        assert taken == [(3,)]

        before = marts(job)
        refused = job.transform("build", "--full-refresh", ok=False)
        assert refused.returncode == 1
        (line,) = refused.error_lines()
        assert "a --full-refresh would rebuild" in line and "loginvault_rebuild_from_partial_raw" in line
        assert marts(job) == before
    finally:
        drop_test_database(pg_cluster, job.dsn)


def test_plain_dbt_full_refresh_is_refused_after_retention(pg_cluster, aged):
    """`dbt build --full-refresh` run directly (no `transform` pre-flight): each model's pre-hook
    refuses, nothing is rebuilt."""
    job = clone_job(pg_cluster, aged, "aged-dbt")
    try:
        job.run("retention", "apply", "--days", "7")
        before = marts(job)
        for select in ([], ["--select", "user_logins"]):
            out = job.dbt("build", "--full-refresh", *select)
            assert out.returncode == 1 and "a --full-refresh would rebuild" in out.stdout
        assert marts(job) == before
    finally:
        drop_test_database(pg_cluster, job.dsn)


def test_the_loader_keeps_loading_during_retention(pg_cluster, aged, spawn):
    job = clone_job(pg_cluster, aged, "aged-busy")
    try:
        settings = SqsSettings(job.env["SQS_QUEUE_URL"], job.env["SQS_ENDPOINT_URL"], "us-east-1")
        sent = sample.send_events(settings, sample.synthetic_events(60, seed=31))
        recent = "SELECT count(DISTINCT message_id) FROM raw.login_events WHERE received_at > now() - interval '1 hour'"
        (before,) = query(job.dsn, recent)[0]
        ingest = spawn("run", "--follow", "--wait-time", "1", "--batch-size", "5", env=job.env)
        wait_until(lambda: query(job.dsn, recent)[0][0] > before, 120, "the ingest's first load")
        job.run("retention", "apply", "--days", "7")  # while it loads
        job.run("retention", "apply", "--days", "3")
        wait_until(lambda: query(job.dsn, recent)[0][0] >= before + sent, 120, "every message to land")
        ingest.signal(2)
        assert ingest.finish().returncode == 0
        assert sqs_depth(settings) == (0, 0)
    finally:
        drop_test_database(pg_cluster, job.dsn)


# ---------------------------------------------------------------- erasure


def test_erasure_leaves_nothing_of_the_subject_and_keeps_them_out(job):
    shared_ip, own_ip, own_device = "198.51.100.7", "203.0.113.99", "555-12-3456"
    subject = f"erase-me-{uuid.uuid4().hex[:8]}"
    bodies = [
        {"user_id": subject, "ip": shared_ip, "device_id": own_device, "device_type": "ios"},
        {"user_id": subject, "ip": own_ip, "device_type": "ios"},
        {"user_id": subject, "locale": "x" * 40},  # rejected (locale_too_long), the subject's all the same
        {"user_id": "someone-else", "ip": shared_ip, "device_id": "111-11-1111"},
    ]
    send_events(job, bodies)
    job.run("seed", "--count", "20")
    job.run("run", "--wait-time", "1")
    job.transform()
    own_token = masking.token(own_ip, "ip", job.hmac_key)
    shared_token = masking.token(shared_ip, "ip", job.hmac_key)
    assert query(job.dsn, "SELECT count(*) FROM pii.vault WHERE token IN (%s, %s)", (own_token, shared_token)) == [(2,)]

    dry = job.run("erase", "--user-id", subject, "--reason", "DSAR-1 dry", "--dry-run")
    assert "would erase 3 raw deliveries" in dry.stderr and "2 logins, 1 rejection and" in dry.stderr
    assert subject in every_table_text(job)
    out = job.run("erase", "--user-id", subject, "--reason", "DSAR-1")
    assert "erased 3 raw deliveries" in out.stderr and "2 vault values" in out.stderr

    everything = every_table_text(job)
    for value in (subject, own_ip, own_device):
        assert value not in everything, f"{value} is still in a table"
    assert query(job.dsn, "SELECT count(*) FROM pii.vault WHERE token = %s", (shared_token,)) == [(1,)]
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = 'someone-else'") == [(1,)]
    unknown = job.run("recover", "lookup", "--token", own_token, "--reason", "after erasure", ok=False)
    assert unknown.returncode == 1 and "no such token" in unknown.stderr
    audit = query(
        job.dsn,
        "SELECT dry_run, logins, rejections, vault_values, reason, subject_token FROM pii.erasure_audit ORDER BY id",
    )
    assert [a[:5] for a in audit] == [(True, 2, 1, 2, "DSAR-1 dry"), (False, 2, 1, 2, "DSAR-1")]
    keyed = hmac.new(job.hmac_key.encode(), f"user_id:{subject}".encode(), hashlib.sha256).hexdigest()
    assert audit[0][5] == audit[1][5] == keyed  # the subject's keyed hash, never the id

    # Their messages again (a replay, a redrive): nothing of them enters the mart or staging.
    send_events(job, bodies)
    job.run("run", "--wait-time", "1")
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM rejected_login_events WHERE reason = 'erased_subject'") == [(3,)]
    assert query(
        job.dsn, "SELECT count(*) FROM staging.stg_sqs__login_events WHERE payload::text LIKE %s", (f"%{subject}%",)
    ) == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = 'someone-else'") == [(2,)]

    # An unknown subject: zero counts, exit 0, audited.
    nobody = job.run("erase", "--user-id", "nobody-at-all", "--reason", "DSAR-2")
    assert "erased 0 raw deliveries, 0 staged rows, 0 logins, 0 rejections and 0 vault values" in nobody.stderr
    assert query(job.dsn, "SELECT count(*) FROM pii.erasure_audit WHERE reason = 'DSAR-2'") == [(1,)]


def test_erased_subjects_stay_out_across_an_hmac_rotation(job):
    subject = f"erase-me-{uuid.uuid4().hex[:8]}"
    events = [{"user_id": subject, "ip": "192.0.2.44"}]
    send_events(job, events)
    job.run("run", "--wait-time", "1")
    job.transform()
    job.run("erase", "--user-id", subject, "--reason", "DSAR-3")
    new_key = secrets.token_hex(32)
    job.run(
        "keys",
        "rotate",
        "hmac",
        env={**job.env, config.HMAC_KEY_ENV: new_key, "LOGINVAULT_HMAC_KEY_PREVIOUS": job.hmac_key},
    )
    job.env[config.HMAC_KEY_ENV] = new_key
    assert query(job.dsn, "SELECT hmac_key_version FROM pii.erased_subjects") == [(2,)]
    send_events(job, events)
    job.run("run", "--wait-time", "1")
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (subject,)) == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM rejected_login_events WHERE reason = 'erased_subject'") == [(1,)]


def test_only_a_privacy_officer_may_erase(job):
    """Only an officer files an erasure; nobody but the service's function runs one (the officer
    neither: it has no key, and its request goes through the service)."""
    others = (
        config.ANALYST_ROLE, config.TRANSFORMER_ROLE, config.LOADER_ROLE, config.AUDITOR_ROLE,
        config.RECOVERY_SERVICE_ROLE,
    )  # fmt: skip
    for role in (*others, config.PII_ADMIN_ROLE):
        with psycopg.connect(role_dsn(job.dsn, role), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pii.erase_subject('u', 'r', false, 1)")
            if role in others:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT * FROM pii.request_erasure('u', 'r', false)")
    with psycopg.connect(role_dsn(job.dsn, config.PII_ADMIN_ROLE), autocommit=True) as conn:
        for statement in (
            "SELECT * FROM pii.erased_subjects",
            "DELETE FROM pii.erasure_audit",
            "SELECT * FROM pii.erasure_audit",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
