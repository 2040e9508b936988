"""Key versions and rotation without raw data (real PostgreSQL, dbt, moto, `loginvault keys`).

The registry holds fingerprints; an HMAC rotation re-tokenizes from the vault and rewrites the
vault's and the mart's tokens in one transaction (joins across the rotation hold, readers never see a
mix); an encryption rotation re-encrypts in batches; both resume after kill -9 to the end
state of an uninterrupted run; old tokens resolve until retired; stale keys are refused.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import defaultdict

import psycopg
import pytest

from conftest import Job, clone_job, drop_test_database, execute, ip_token, query, role_dsn, send_events, wait_until
from ingest import config
from ingest.vault import keys, masking

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HMAC_ENV, ENC_ENV = config.HMAC_KEY_ENV, config.ENCRYPTION_KEY_ENV


# `origin` (conftest): 30 synthetic messages (seed 42) ingested and transformed; `fresh`: a copy.
ORIGIN_MESSAGES, ORIGIN_SEED = 30, 42


def rotate(job: Job, kind: str, *extra: str, new_key: str | None = None):
    """`keys rotate KIND` with a new key (the job's current one as …_PREVIOUS); the job's
    environment then holds the new key, the old one as …_PREVIOUS."""
    name = keys.ENV[kind]
    new_key = new_key or secrets.token_hex(32)
    result = job.run(
        "keys", "rotate", kind, *extra, env={**job.env, name: new_key, keys.PREVIOUS_ENV[kind]: job.env[name]}
    )
    job.env.update({keys.PREVIOUS_ENV[kind]: job.env[name], name: new_key})
    return result


def values_by_message(job: Job) -> dict[str, dict]:
    """message_id → its event (valid JSON objects), read from raw as the admin."""
    out = {}
    for message_id, body in query(job.dsn, "SELECT message_id, body FROM raw.login_events"):
        try:
            event = json.loads(body)
        except ValueError:
            continue
        if isinstance(event, dict):
            out[message_id] = event
    return out


def end_state(job: Job) -> dict:
    """What a rotation must leave: the mart's tokens, the vault's values (decrypted with the
    keys of their versions), the registry, and no leftover tables."""
    options = keys.setting_option("loginvault.encryption_key", job.env[ENC_ENV])
    if job.env.get(keys.PREVIOUS_ENV["encryption"]):
        options += " " + keys.setting_option(
            "loginvault.encryption_key_previous", job.env[keys.PREVIOUS_ENV["encryption"]]
        )
    with psycopg.connect(job.dsn, autocommit=True, options=options) as conn:
        vault = conn.execute(
            "SELECT token, kind, pgp_sym_decrypt(ciphertext, CASE encryption_key_version WHEN (SELECT version FROM"
            " pii.key_versions WHERE kind = 'encryption' AND state = 'active') THEN current_setting('loginvault.encryption_key')"
            " ELSE current_setting('loginvault.encryption_key_previous') END), hmac_key_version, encryption_key_version"
            " FROM pii.vault ORDER BY token, kind"
        ).fetchall()
    return {
        "mart": query(job.dsn, "SELECT message_id, masked_ip, masked_device_id FROM user_logins ORDER BY message_id"),
        "vault": vault,
        "registry": query(job.dsn, "SELECT kind, version, fingerprint, state FROM pii.key_versions ORDER BY 1, 2"),
        "leftovers": query(
            job.dsn,
            "SELECT relname FROM pg_class WHERE relname LIKE '%\\_\\_rotating' OR relname LIKE '%\\_\\_pre\\_rotation'",
        ),
        "map": query(job.dsn, "SELECT kind, old_token, new_token FROM pii.token_map ORDER BY 1, 2"),
    }


def assert_tokens_under(job: Job, hmac_key: str) -> None:
    """Every mart token is the token of its message's value under `hmac_key` (kind-separated)."""
    events = values_by_message(job)
    rows = query(job.dsn, "SELECT message_id, masked_ip, masked_device_id FROM user_logins")
    assert rows
    for message_id, masked_ip, masked_device in rows:
        event = events[message_id]
        assert masked_ip == (masking.token(event["ip"], "ip", hmac_key) if event.get("ip") else None), message_id
        expected = masking.token(event["device_id"], "device_id", hmac_key) if event.get("device_id") else None
        assert masked_device == expected, message_id


# ---------------------------------------------------------------- the registry


def test_first_build_registers_the_keys_by_fingerprint_only(fresh):
    registry = query(
        fresh.dsn, "SELECT kind, version, fingerprint, state, kind_separated FROM pii.key_versions ORDER BY 1"
    )
    assert registry == [
        ("encryption", 1, keys.fingerprint("encryption", fresh.env[ENC_ENV]), "active", True),
        ("hmac", 1, keys.fingerprint("hmac", fresh.env[HMAC_ENV]), "active", True),
    ]
    everything = json.dumps(query(fresh.dsn, "SELECT row_to_json(k)::text FROM pii.key_versions AS k"))
    assert fresh.env[HMAC_ENV] not in everything and fresh.env[ENC_ENV] not in everything
    status = fresh.run("keys", "status").stdout.splitlines()
    assert status[0].split("\t")[:7] == ["kind", "version", "state", "fingerprint", "tokens", "vault_rows", "mart_rows"]
    (vault_rows,) = query(fresh.dsn, "SELECT count(*) FROM pii.vault")[0]
    (mart_rows,) = query(fresh.dsn, "SELECT count(*) FROM user_logins")[0]
    hmac_row = next(line.split("\t") for line in status if line.startswith("hmac\t1\t"))
    assert hmac_row[2:7] == [
        "active",
        keys.fingerprint("hmac", fresh.env[HMAC_ENV]),
        "kind:value",
        str(vault_rows),
        str(mart_rows),
    ]


@pytest.mark.parametrize("kind", ["hmac", "encryption"])
def test_a_stale_key_is_refused_before_anything_is_written(fresh, kind):
    fresh.run("seed", "--count", "5", "--random-seed", "3")
    fresh.run("run", "--wait-time", "1")
    before = query(
        fresh.dsn, "SELECT (SELECT count(*) FROM staging.stg_sqs__login_events), (SELECT count(*) FROM user_logins)"
    )
    stale = secrets.token_hex(32)
    env = {**fresh.env, keys.ENV[kind]: stale}
    refused = fresh.run("transform", "build", ok=False, env=env)
    assert refused.returncode == 1 and "Running with dbt" not in refused.stdout
    (line,) = refused.error_lines()
    assert f"{keys.ENV[kind]} is not the active {kind} key: its fingerprint is {keys.fingerprint(kind, stale)}" in line
    assert keys.fingerprint(kind, fresh.env[keys.ENV[kind]]) in line
    assert (
        query(
            fresh.dsn, "SELECT (SELECT count(*) FROM staging.stg_sqs__login_events), (SELECT count(*) FROM user_logins)"
        )
        == before
    )
    # The recovery service, the other holder of the keys, does not start with a stale one.
    refused = fresh.run("recovery", "serve", ok=False, env=env)
    assert refused.returncode == 1
    (line,) = refused.error_lines()
    assert f"{keys.ENV[kind]} is not the active {kind} key: its fingerprint is {keys.fingerprint(kind, stale)}" in line


# ---------------------------------------------------------------- HMAC rotation


def test_rotation_keeps_joins_and_old_tokens_resolve_until_retired(fresh):
    (old_token, ip) = ip_token(fresh)
    rotated = rotate(fresh, "hmac")
    assert "keys: hmac rotated from version 1 to 2" in rotated.stderr
    assert_tokens_under(fresh, fresh.env[HMAC_ENV])
    new_token = masking.token(ip, "ip", fresh.env[HMAC_ENV])
    # The same values sent again after the rotation get the same tokens: joins hold.
    fresh.run("seed", "--count", "30", "--random-seed", "42")
    fresh.run("run", "--wait-time", "1")
    fresh.transform()
    assert_tokens_under(fresh, fresh.env[HMAC_ENV])
    per_ip = query(
        fresh.dsn, "SELECT count(DISTINCT masked_ip), count(*) FROM user_logins WHERE masked_ip = %s", (new_token,)
    )
    assert per_ip[0][0] == 1 and per_ip[0][1] >= 2

    old = fresh.run("recover", "lookup", "--token", old_token, "--reason", "OLD-1")
    assert old.stdout == f"ip\t{ip}\n" and f"its current token is {new_token}" in old.stderr
    assert query(fresh.dsn, "SELECT outcome FROM pii.recovery_audit WHERE reason = 'OLD-1'") == [
        ("found_pre_rotation",)
    ]
    fresh.run("keys", "retire", "hmac")
    gone = fresh.run("recover", "lookup", "--token", old_token, "--reason", "OLD-2", ok=False)
    assert gone.returncode == 1 and "no such token" in gone.stderr
    assert fresh.run("recover", "lookup", "--token", new_token, "--reason", "NEW-1").stdout == f"ip\t{ip}\n"


def test_rotation_needs_no_raw_row(fresh):
    events = values_by_message(fresh)
    before = dict(query(fresh.dsn, "SELECT message_id, masked_ip FROM user_logins"))
    execute(fresh.dsn, "DELETE FROM raw.login_events; UPDATE staging.stg_sqs__login_events SET payload = NULL")
    rotate(fresh, "hmac")
    after = dict(query(fresh.dsn, "SELECT message_id, masked_ip FROM user_logins"))
    assert after.keys() == before.keys() and sum(token is not None for token in after.values()) >= 20
    for message_id, masked_ip in after.items():
        ip = events[message_id].get("ip")
        assert masked_ip == (masking.token(ip, "ip", fresh.env[HMAC_ENV]) if ip else None)
        assert ip is None or masked_ip != before[message_id]  # re-tokenized, under the new key


def test_an_ip_and_a_device_id_of_one_string_get_two_tokens_after_the_migration(fresh):
    """A database of an earlier version tokenized the value alone: the first rotation migrates."""
    same = "81.112.156.252"
    send_events(fresh, [{"user_id": "u-ip", "ip": same}, {"user_id": "u-dev", "device_id": same}])
    fresh.run("run", "--wait-time", "1")
    execute(fresh.dsn, "UPDATE pii.key_versions SET kind_separated = false WHERE kind = 'hmac'")
    fresh.transform("build", "--full-refresh")  # every token under the old rule
    before = dict(
        query(
            fresh.dsn,
            "SELECT user_id, coalesce(masked_ip, masked_device_id) FROM user_logins WHERE user_id IN ('u-ip', 'u-dev')",
        )
    )
    assert before["u-ip"] == before["u-dev"] == masking.token(same, "ip", fresh.env[HMAC_ENV], kind_separated=False)

    rotate(fresh, "hmac")
    after = dict(
        query(
            fresh.dsn,
            "SELECT user_id, coalesce(masked_ip, masked_device_id) FROM user_logins WHERE user_id IN ('u-ip', 'u-dev')",
        )
    )
    assert after["u-ip"] == masking.token(same, "ip", fresh.env[HMAC_ENV])
    assert after["u-dev"] == masking.token(same, "device_id", fresh.env[HMAC_ENV])
    assert after["u-ip"] != after["u-dev"]
    assert fresh.run("recover", "lookup", "--token", after["u-ip"], "--reason", "K-1").stdout == f"ip\t{same}\n"
    assert fresh.run("recover", "lookup", "--token", after["u-dev"], "--reason", "K-2").stdout == f"device_id\t{same}\n"
    assert query(fresh.dsn, "SELECT kind_separated FROM pii.key_versions WHERE kind = 'hmac' AND state = 'active'") == [
        (True,)
    ]


def test_rotation_beside_a_running_ingest_and_transform_service(fresh, spawn):
    """The ingest keeps landing; the transform service's builds wait for the rotation (lock), then
    refuse the stale key in one line; an analyst's query loop never sees two tokens for one value."""
    ips = {m: e.get("ip") for m, e in values_by_message(fresh).items()}
    ingest = spawn("run", "--follow", "--wait-time", "1", env=fresh.env)
    service = spawn("transform", "--every", "2", "build", env=fresh.env)
    wait_until(lambda: "ok in" in service.stderr, 120, "a first service build")
    mixed: list[str] = []
    queries = [0]  # the analyst's completed queries
    stop = threading.Event()

    def analyst() -> None:  # an exception here ends the loop and fails the test (pyproject's filterwarnings)
        with psycopg.connect(role_dsn(fresh.dsn, config.ANALYST_ROLE), autocommit=True) as conn:
            while not stop.is_set():
                tokens = defaultdict(set)
                for message_id, token in conn.execute("SELECT message_id, masked_ip FROM user_logins"):
                    if ips.get(message_id) and token:
                        tokens[ips[message_id]].add(token)
                mixed.extend(ip for ip, seen in tokens.items() if len(seen) > 1)
                queries[0] += 1

    loop = threading.Thread(target=analyst)
    loop.start()
    try:
        fresh.run("seed", "--count", "20", "--random-seed", "7")
        wait_until(lambda: queries[0] > 0, 30, "the analyst's first query")
        before_rotation = queries[0]
        rotate(fresh, "hmac")
        assert loop.is_alive() and queries[0] > before_rotation  # it queried through the rotation
        fresh.run("seed", "--count", "20", "--random-seed", "8")
        refusal = "is hmac key version 1 (previous), not the active version 2"
        wait_until(lambda: refusal in service.stderr, 120, "the service to refuse the stale key")
    finally:
        stop.set()
        loop.join(30)
        service.signal(2)
        ingest.signal(2)
    assert not loop.is_alive()
    assert service.finish().returncode in (0, 1) and ingest.finish().returncode == 0
    fresh.run("run", "--wait-time", "1")
    fresh.transform()
    assert not mixed, f"an analyst saw two tokens for {sorted(set(mixed))[:3]}"
    assert_tokens_under(fresh, fresh.env[HMAC_ENV])
    (raw_ids,) = query(fresh.dsn, "SELECT count(DISTINCT message_id) FROM raw.login_events")[0]
    accounted = query(
        fresh.dsn, "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM rejected_login_events)"
    )
    assert accounted == [(raw_ids,)] and raw_ids == 30 + 20 + 20
    # Each cleartext has one token across the rows from before and after the rotation.
    per_value = defaultdict(set)
    for message_id, token in query(
        fresh.dsn, "SELECT message_id, masked_ip FROM user_logins WHERE masked_ip IS NOT NULL"
    ):
        per_value[values_by_message(fresh)[message_id]["ip"]].add(token)
    assert all(len(tokens) == 1 for tokens in per_value.values())


def test_a_transform_and_a_rotation_never_run_at_once(fresh):
    with psycopg.connect(role_dsn(fresh.dsn, config.TRANSFORMER_ROLE), autocommit=True) as holder:
        holder.execute("SET application_name = 'loginvault-rotate-hmac-key'")
        holder.execute("SELECT pg_advisory_lock(%s)", (keys.TRANSFORM_LOCK,))
        refused = fresh.transform(ok=False)
        assert refused.returncode == 1
        (line,) = refused.error_lines()
        assert line.startswith("error: cannot transform now: loginvault-rotate-hmac-key (pid ")


# ---------------------------------------------------------------- kill -9 at each phase, then a rerun


@pytest.fixture(scope="module")
def reference(pg_cluster, origin):
    """`origin` rotated without interruption (hmac, then encryption) with fixed keys."""
    job = clone_job(pg_cluster, origin, "keys-ref")
    new_hmac, new_enc = secrets.token_hex(32), secrets.token_hex(32)
    rotate(job, "hmac", "--batch", "7", new_key=new_hmac)
    rotate(job, "encryption", "--batch", "7", new_key=new_enc)
    yield job, new_hmac, new_enc, end_state(job)
    drop_test_database(pg_cluster, job.dsn)


@pytest.mark.parametrize(
    "kind, point",
    [
        ("hmac", "rotate_mapping"),
        ("hmac", "rotate_built_map"),
        ("hmac", "rotate_rewriting"),
        ("hmac", "rotate_rewritten"),
        ("encryption", "rewrap_switched"),
        ("encryption", "rewrapping"),
    ],
)
def test_kill_9_at_each_phase_then_a_rerun_ends_as_an_uninterrupted_rotation(
    pg_cluster, origin, reference, spawn, kind, point
):
    ref_job, new_hmac, new_enc, expected = reference
    job = clone_job(pg_cluster, origin, "keys-kill")
    try:
        if kind == "encryption":
            rotate(job, "hmac", "--batch", "7", new_key=new_hmac)
        new_key = new_hmac if kind == "hmac" else new_enc
        name = keys.ENV[kind]
        env = {
            **job.env,
            name: new_key,
            keys.PREVIOUS_ENV[kind]: job.env[name],
            "LOGINVAULT_FAULT_PAUSE": f"{point}=inf",
        }
        proc = spawn("keys", "rotate", kind, "--batch", "7", env=env)
        proc.wait_for(f"fault: paused at {point}", timeout=120)
        proc.kill9()
        if kind == "hmac" and point != "rotate_rewritten":  # meanwhile a transform refuses
            refused = job.transform(ok=False)
            assert refused.returncode == 1 and "rotation to version 2 is unfinished" in refused.stderr
        rotate(job, kind, "--batch", "7", new_key=new_key)
        if kind == "hmac":
            rotate(job, "encryption", "--batch", "7", new_key=new_enc)
        got = end_state(job)
        assert got["mart"] == expected["mart"]
        assert got["vault"] == expected["vault"]
        assert got["map"] == expected["map"]
        assert [r[:4] for r in got["registry"]] == [r[:4] for r in expected["registry"]]
        assert got["leftovers"] == []
    finally:
        drop_test_database(pg_cluster, job.dsn)


# ---------------------------------------------------------------- encryption rotation


def test_encryption_rewrap_keeps_recovery_working_and_retire_waits_for_the_last_row(fresh, spawn):
    (token, ip) = ip_token(fresh)
    old_key, new_key = fresh.env[ENC_ENV], secrets.token_hex(32)
    env = {
        **fresh.env,
        ENC_ENV: new_key,
        keys.PREVIOUS_ENV["encryption"]: old_key,
        "LOGINVAULT_FAULT_PAUSE": "rewrapping=inf",
    }
    proc = spawn("keys", "rotate", "encryption", "--batch", "5", env=env)
    proc.wait_for("fault: paused at rewrapping", timeout=120)
    proc.kill9()
    versions = dict(query(fresh.dsn, "SELECT encryption_key_version, count(*) FROM pii.vault GROUP BY 1"))
    assert set(versions) == {1, 2}, "killed half-way: rows of both versions"
    half = {**fresh.env, ENC_ENV: new_key, keys.PREVIOUS_ENV["encryption"]: old_key}
    assert fresh.run("recover", "lookup", "--token", token, "--reason", "HALF-1", env=half).stdout == f"ip\t{ip}\n"
    refused = fresh.run("keys", "retire", "encryption", ok=False, env=half)
    assert refused.returncode == 1 and "still encrypted with encryption key version 1" in refused.stderr
    rotate(fresh, "encryption", new_key=new_key)
    assert query(fresh.dsn, "SELECT DISTINCT encryption_key_version FROM pii.vault") == [(2,)]
    fresh.run("keys", "retire", "encryption")
    alone = {**fresh.env}
    alone.pop(keys.PREVIOUS_ENV["encryption"])
    assert fresh.run("recover", "lookup", "--token", token, "--reason", "AFTER-1", env=alone).stdout == f"ip\t{ip}\n"
    assert query(fresh.dsn, "SELECT state FROM pii.key_versions WHERE kind = 'encryption' ORDER BY version") == [
        ("retired",),
        ("active",),
    ]
