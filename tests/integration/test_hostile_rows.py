"""Hostile rows with the loader's and the transformer's own logins: a received_at no consumer
writes, a reused message id, a retention call with the transformer's bookkeeping forged, an
erasure aimed through another subject's message id. Each is refused or harmless, and every
staged message stays in exactly one mart. Rows under a load id already recorded: test_late_rows.py."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_lifecycle import day_partitions, land, marts

from conftest import Job, query, role_dsn
from ingest import config
from ingest.local import sample
from ingest.vault import masking


def plant(job: Job, rows: list[tuple[str, str, str]]) -> str:
    """(message_id, body, received_at as text) rows in one completed load, as the loader's own
    login. Returns the load id."""
    load_id = f"{datetime.now(UTC).timestamp():.6f}{secrets.randbelow(1000):03d}"
    with psycopg.connect(role_dsn(job.dsn, config.LOADER_ROLE)) as conn:
        for message_id, body, received in rows:
            conn.execute(
                "INSERT INTO raw.login_events VALUES (%s, %s, now(), %s::timestamptz, 1, 'q', %s, %s)",
                (message_id, body, received, load_id, uuid.uuid4().hex[:14]),
            )
        conn.execute(
            "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'x', 0, now())",
            (load_id,),
        )
    return load_id


def assert_identity(job: Job) -> None:
    """Every staged message in exactly one mart."""
    assert query(
        job.dsn,
        "SELECT count(*) FROM staging.stg_sqs__messages AS m WHERE"
        " (SELECT count(*) FROM user_logins AS u WHERE u.message_id = m.message_id)"
        " + (SELECT count(*) FROM rejected_login_events AS r WHERE r.message_id = m.message_id) <> 1",
    ) == [(0,)]


def body(user_id: str, **fields: str) -> str:
    return json.dumps({"user_id": user_id, **fields})


def test_a_received_at_outside_the_window_makes_no_partition_and_is_rejected(job):
    job.run("seed", "--count", "5")
    job.run("run", "--wait-time", "1")
    job.transform()
    staged_days = set(day_partitions(job, "staging.stg_sqs__login_events"))
    hostile = {
        f"h-{n}-{uuid.uuid4().hex[:6]}": at
        for n, at in enumerate(
            ["infinity", "-infinity", "1900-01-01", "2025-01-01", str(datetime.now(UTC) + timedelta(days=3))]
        )
    }
    plant(job, [(m, body("hostile-user"), at) for m, at in hostile.items()])

    job.transform()  # no partition per hostile day, no failure

    assert set(day_partitions(job, "staging.stg_sqs__login_events")) == staged_days
    assert sorted(
        query(
            job.dsn, "SELECT message_id, reason FROM rejected_login_events WHERE message_id = ANY(%s)", (list(hostile),)
        )
    ) == sorted((m, "received_at_out_of_range") for m in hostile)
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = 'hostile-user'") == [(0,)]
    assert_identity(job)

    before = marts(job)
    job.run("retention", "apply", "--days", "7")  # the default partitions' hostile rows go
    # (the one 3 days ahead sits in raw's day partition, made a week ahead: it goes with its day)
    assert query(
        job.dsn, "SELECT count(*) FROM raw.login_events_default WHERE message_id = ANY(%s)", (list(hostile),)
    ) == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id = ANY(%s)", (list(hostile),)) == [
        (1,)
    ]
    assert query(job.dsn, "SELECT count(*) FROM staging.stg_sqs__login_events_default") == [(0,)]
    assert marts(job) == before
    assert_identity(job)


def test_a_later_delivery_with_a_reused_message_id_never_changes_the_mart(job):
    ids = land(job, [{"user_id": "first-sender", "ip": "198.51.100.1"}], days_ago=0)
    job.transform()
    before = marts(job)
    land(job, [{"user_id": "second-sender", "ip": "198.51.100.2"}], days_ago=0, message_ids=ids)
    land(job, [{"user_id": "third-sender"}], days_ago=0.5, message_ids=ids)  # received earlier
    job.transform()
    assert marts(job) == before
    assert query(job.dsn, "SELECT user_id FROM user_logins WHERE message_id = %s", (ids[0],)) == [("first-sender",)]
    assert_identity(job)


def test_retention_refuses_a_recent_cutoff_and_forged_bookkeeping(job):
    job.run("seed", "--count", "5")
    job.run("run", "--wait-time", "1")
    job.transform()
    day = (datetime.now(UTC) - timedelta(days=10)).date()
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute("SELECT raw.ensure_partitions(%s, %s)", (day, day))
    landed = land(job, list(sample.synthetic_events(4, seed=3)), days_ago=10)
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 1 day ago"):
            conn.execute("SELECT * FROM raw.apply_retention(now() + interval '2 days', false)")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 1 day ago"):
            conn.execute("SELECT * FROM raw.apply_retention(now() - interval '1 hour', false)")
        # The loads registered as taken and the watermarks moved on, by the transformer's hand.
        conn.execute(
            "INSERT INTO staging.stg_sqs__loads (load_id, completed_at, _transformed_at)"
            " SELECT load_id, inserted_at, now() - interval '1 hour' FROM raw._dlt_loads"
            " WHERE load_id NOT IN (SELECT load_id FROM staging.stg_sqs__loads)"
        )
        conn.execute("UPDATE staging.loginvault_watermarks SET high = now()")
        kept = conn.execute(
            "SELECT removed, kept_because FROM raw.apply_retention(now() - interval '2 days', false) WHERE day = %s",
            (day,),
        ).fetchall()
    assert kept == [
        (False, "4 of its rows are in neither user_logins nor rejected_login_events: run a transform first")
    ]
    assert query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id = ANY(%s)", (landed,)) == [(4,)]


def test_retention_drops_a_day_once_its_messages_are_in_the_marts(job):
    day = (datetime.now(UTC) - timedelta(days=10)).date()
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute("SELECT raw.ensure_partitions(%s, %s)", (day, day))
    landed = land(job, list(sample.synthetic_events(4, seed=3)), days_ago=10)
    job.transform()
    job.run("retention", "apply", "--days", "7")
    assert query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id = ANY(%s)", (landed,)) == [(0,)]
    assert day not in day_partitions(job, "raw.login_events")


def test_erasure_never_reaches_another_subject_through_a_shared_message_id(job):
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    bob_ip, alice_ip = "198.51.100.44", "203.0.113.45"
    (bob_message,) = land(job, [body(bob, ip=bob_ip, device_id="bob-device")], days_ago=0)
    land(job, [body(alice, ip=alice_ip)], days_ago=0)
    job.transform()
    escaped = json.dumps({"user_id": "\\u0061" + alice[1:], "ip": bob_ip}).replace("\\\\u", "\\u")
    # The loader's planted deliveries: one under Bob's message id naming Alice (escaped), one new.
    plant(job, [(bob_message, escaped, str(datetime.now(UTC)))])
    (escaped_message,) = land(job, [escaped], days_ago=0)
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (alice,)) == [(2,)]

    job.run("erase", "--user-id", alice, "--reason", "DSAR-17")

    assert query(job.dsn, "SELECT user_id FROM user_logins WHERE message_id = %s", (bob_message,)) == [(bob,)]
    bob_token = masking.token(bob_ip, "ip", job.hmac_key)
    assert query(job.dsn, "SELECT count(*) FROM pii.vault WHERE token = %s", (bob_token,)) == [(1,)]
    assert query(job.dsn, "SELECT body FROM raw.login_events WHERE message_id = %s", (bob_message,)) == [
        (body(bob, ip=bob_ip, device_id="bob-device"),)
    ]
    assert query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id = %s", (escaped_message,)) == [(0,)]
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE user_id = %s", (alice,)) == [(0,)]
    assert query(
        job.dsn, "SELECT count(*) FROM staging.stg_sqs__login_events WHERE payload ->> 'user_id' = %s", (alice,)
    ) == [(0,)]
    alice_token = masking.token(alice_ip, "ip", job.hmac_key)
    assert query(job.dsn, "SELECT count(*) FROM pii.vault WHERE token = %s", (alice_token,)) == [(0,)]
    assert_identity(job)


def test_only_raws_owner_may_ask_which_rows_the_marts_lack(job):
    for role in (config.TRANSFORMER_ROLE, config.LOADER_ROLE):
        with psycopg.connect(role_dsn(job.dsn, role), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM raw.rows_outside_marts('raw.login_events_default', '-infinity', NULL)")


def test_a_row_received_in_the_future_keeps_no_source_fresh_nor_stops_retention(job):
    land(job, list(sample.synthetic_events(2, seed=6)), days_ago=2)
    plant(job, [(str(uuid.uuid4()), body("from-the-future"), "infinity"), (str(uuid.uuid4()), "{}", "-infinity")])
    stale = job.run("transform", "source", "freshness", ok=False)
    assert stale.returncode == 1 and "ERROR STALE" in stale.stdout
    dry = job.run("retention", "apply", "--days", "1", "--dry-run")  # reads the oldest cleartext: a finite one
    assert "oldest cleartext left received" in dry.stderr


def test_two_raw_rows_alike_in_every_joined_column_stage_one_message(job):
    """The loader writes two deliveries with the same message id, _dlt_id, received_at and load
    (bodies naming two subjects): staging takes one, the build passes (its unique test on staged
    message ids once failed for good), and the messages of later loads still reach the marts."""
    received = datetime.now(UTC).isoformat()
    load_id = f"{datetime.now(UTC).timestamp():.6f}{secrets.randbelow(1000):03d}"
    with psycopg.connect(role_dsn(job.dsn, config.LOADER_ROLE)) as conn:
        conn.execute(
            "INSERT INTO raw.login_events VALUES (%s, %s, now(), %s, 1, 'q', %s, 'same'), (%s, %s, now(), %s, 1, 'q', %s, 'same')",
            ("twin", body("dupA"), received, load_id, "twin", body("dupB"), received, load_id),
        )
        conn.execute(
            "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'x', 0, now())",
            (load_id,),
        )
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM staging.stg_sqs__login_events WHERE message_id = 'twin'") == [(1,)]
    plant(job, [("after-the-twins", body("later"), received)])
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE message_id = 'after-the-twins'") == [(1,)]
    assert_identity(job)
