"""Integration: the dbt project and recover, on real PostgreSQL after a real seed → ingest.

The module's `origin` database (conftest; `sample_job` here) goes through the whole job once
(100 synthetic events, ingest, `dbt build --warn-error`); the tests read it. Tests that change
data build their own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import (
    REGION,
    Job,
    dbt_dirs,
    drop_test_database,
    execute,
    ingest_env,
    ip_token,
    query,
    role_dsn,
    role_dsns,
    send_events,
    wait_until,
)
from ingest import config, db
from ingest.consumer import sqs
from ingest.local import sample
from ingest.local.pg_cluster import ensure_database
from ingest.schema import bootstrap
from ingest.vault import masking

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MART_COLUMNS = [
    ("user_id", "character varying", 128),
    ("device_type", "character varying", 32),
    ("masked_ip", "character varying", 256),
    ("masked_device_id", "character varying", 256),
    ("locale", "character varying", 32),
    ("app_version", "integer", None),
    ("create_date", "date", None),
    ("message_id", "text", None),
    ("app_version_text", "text", None),
]


ORIGIN_MESSAGES = 100


@pytest.fixture(scope="module")
def sample_job(origin):
    """The module's `origin` (conftest): 100 synthetic messages ingested and built; read only."""
    return origin


def cleartext_values(dsn: str) -> set[str]:
    """Every ip and device_id string in the raw bodies (valid JSON objects only)."""
    values = set()
    for (body,) in query(dsn, "SELECT body FROM raw.login_events"):
        try:
            event = json.loads(body)
        except ValueError:
            continue
        if isinstance(event, dict):
            values |= {v for k in ("ip", "device_id") if isinstance(v := event.get(k), str) and v.strip()}
    return values


def snapshot(dsn: str) -> dict[str, tuple]:
    tables = {"user_logins": "message_id", "rejected_login_events": "message_id", "pii.vault": "token, kind"}
    return {
        table: query(dsn, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} AS t")[0]
        for table, order in tables.items()
    }


# ---------------------------------------------------------------- the sample


def test_sample_gives_99_logins_and_1_rejection(sample_job):
    dsn = sample_job.dsn
    assert query(dsn, "SELECT count(*) FROM user_logins") == [(99,)]
    assert query(dsn, "SELECT reason, count(*) FROM rejected_login_events GROUP BY 1") == [("user_id_missing", 1)]
    (raw_ids,) = query(dsn, "SELECT count(DISTINCT message_id) FROM raw.login_events")[0]
    (accounted,) = query(
        dsn, "SELECT (SELECT count(*) FROM user_logins) + (SELECT count(*) FROM rejected_login_events)"
    )[0]
    assert accounted == raw_ids == 100
    # The rejected one is the malformed sample message, and it keeps its timestamps.
    ((body,),) = query(
        dsn,
        "SELECT r.body FROM rejected_login_events j JOIN raw.login_events r USING (message_id)"
        " WHERE j.sent_at = r.sent_at AND j.received_at = r.received_at",
    )
    assert json.loads(body) == sample.MALFORMED


def test_mart_columns_and_types_are_exact(sample_job):
    rows = query(
        sample_job.dsn,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'user_logins' ORDER BY ordinal_position",
    )
    assert rows == MART_COLUMNS
    ((nullable,),) = query(
        sample_job.dsn,
        "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'user_logins' AND column_name = 'message_id'",
    )
    assert nullable == "NO"


def test_mart_values_follow_the_rules(sample_job):
    events = {
        message_id: json.loads(body)
        for message_id, body in query(sample_job.dsn, "SELECT message_id, body FROM raw.login_events")
    }
    rows = query(
        sample_job.dsn,
        "SELECT message_id, user_id, device_type, masked_ip, masked_device_id, locale, app_version,"
        " app_version_text, create_date, (SELECT (sent_at AT TIME ZONE 'UTC')::date FROM raw.login_events r"
        " WHERE r.message_id = u.message_id LIMIT 1) FROM user_logins u",
    )
    versions = {
        "2.3.0": 2003000,
        "0.96": 96000,
        "2.00": 2000000,
        "1.0.1": 1000001,
        "3.4.12": 3004012,
        "5.0": 5000000,
        "0.2.6": 2006,
        "2.3": 2003000,
        "4.1.0": 4001000,
        "1": 1000000,
    }
    for (
        message_id,
        user_id,
        device_type,
        masked_ip,
        masked_device,
        locale,
        version,
        version_text,
        day,
        sent_day,
    ) in rows:
        event = events[message_id]
        assert user_id == event["user_id"] and device_type == event["device_type"]
        assert locale == event["locale"]  # None stays NULL, never the string 'None'
        assert masked_ip == masking.token(event["ip"], "ip", sample_job.hmac_key)
        assert masked_device == masking.token(event["device_id"], "device_id", sample_job.hmac_key)
        assert re.fullmatch(r"[0-9a-f]{64}", masked_ip) and re.fullmatch(r"[0-9a-f]{64}", masked_device)
        assert version_text == event["app_version"] and version == versions[version_text]
        assert day == sent_day
    assert any(":" in e.get("ip", "") for e in events.values())  # IPv6 was among them


def test_tokens_are_keyed_hmac_not_plain_hashes(sample_job):
    for ip, token in query(
        sample_job.dsn,
        "SELECT DISTINCT r.body::jsonb ->> 'ip', u.masked_ip FROM user_logins u JOIN raw.login_events r USING (message_id)",
    ):
        data = ip.encode()
        plain = {hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()}
        salted = {
            hashlib.sha256(data + c).hexdigest() for c in (b"", b"salt", b"loginvault", sample_job.hmac_key.encode())
        }
        salted |= {hashlib.sha256(c + data).hexdigest() for c in (b"salt", sample_job.hmac_key.encode())}
        assert token not in plain | salted
        assert token == masking.token(ip, "ip", sample_job.hmac_key)  # the HMAC under the job's key
    # …which the database's own function makes: under another key, another token.
    token, ip = ip_token(sample_job)
    ((separated,),) = query(
        sample_job.dsn, "SELECT kind_separated FROM pii.key_versions WHERE kind = 'hmac' AND state = 'active'"
    )
    for key, same in ((sample_job.hmac_key, True), (secrets.token_hex(32), False)):
        (made,) = query(sample_job.dsn, "SELECT loginvault.pii_token('ip', %s, %s, %s)", (ip, key, separated))[0]
        assert (made == token) is same


def test_same_value_same_token_across_users(sample_job):
    shared = query(
        sample_job.dsn,
        "SELECT r.body::jsonb ->> 'ip', count(DISTINCT u.user_id), count(DISTINCT u.masked_ip)"
        " FROM user_logins u JOIN raw.login_events r USING (message_id) GROUP BY 1 HAVING count(DISTINCT u.user_id) > 1",
    )
    assert shared, "the sample shares IPs across users"
    assert {tokens for _, _, tokens in shared} == {1}
    (distinct_ips, distinct_tokens) = query(
        sample_job.dsn,
        "SELECT count(DISTINCT r.body::jsonb ->> 'ip'), count(DISTINCT u.masked_ip)"
        " FROM user_logins u JOIN raw.login_events r USING (message_id)",
    )[0]
    assert distinct_ips == distinct_tokens


def test_vault_holds_each_value_once_encrypted(sample_job):
    dsn = sample_job.dsn
    ((ips, devices),) = query(
        dsn,
        "SELECT count(DISTINCT masked_ip), count(DISTINCT masked_device_id) FROM user_logins",
    )
    assert query(dsn, "SELECT kind, count(*) FROM pii.vault GROUP BY 1 ORDER BY 1") == [
        ("device_id", devices),
        ("ip", ips),
    ]
    key = sample_job.env[config.ENCRYPTION_KEY_ENV]
    rows = query(dsn, "SELECT token, kind, pgp_sym_decrypt(ciphertext, %s), ciphertext FROM pii.vault", (key,))
    assert rows
    for token, kind, value, ciphertext in rows:
        assert masking.token(value, kind, sample_job.hmac_key) == token
        assert value.encode() not in bytes(ciphertext)  # the stored bytes, not their hex text
    with pytest.raises(psycopg.errors.ExternalRoutineInvocationException):
        query(dsn, "SELECT pgp_sym_decrypt(ciphertext, %s) FROM pii.vault LIMIT 1", (secrets.token_hex(32),))


@pytest.mark.parametrize(
    "value",
    [
        "199.172.111.135",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "2001:DB8:0:0:0:0:0:1",
        "::",
        "::1",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "::ffff:0102:0304",
        "1:2:3:4:5:6:1.2.3.4",
        "fe80::1:2",
        "1:0:0:2:0:0:0:3",
        "01.2.3.4",
        "1.2.3.4.",
        "::1.2.3",
        "2001:db8::7.7.7",
        "1.2.3.4/32",
        "fe80::1%eth0",
        " 1.2.3.4",
        "256.1.1.1",
        "1.2.3",
        "not an ip",
        "::ffff:0:0",
    ],
)
def test_python_tokens_equal_pgcrypto_for_ips(sample_job, value):
    (sql_token,) = query(
        sample_job.dsn,
        "SELECT loginvault.pii_token('ip', loginvault.canonical_pii('ip', %s), %s, true)",
        (value, sample_job.hmac_key),
    )[0]
    assert masking.token(value, "ip", sample_job.hmac_key) == sql_token


def test_canonical_ips_fast_path_is_try_inets_answer(sample_job):
    """canonical_pii casts a plain dotted quad itself, without try_inet: for every octet 0-300
    in each place, with and without leading zeros, and a few edge forms, it gives exactly
    try_inet's answer (valid or NULL)."""
    forms = ["{}.1.1.1", "1.{}.1.1", "1.1.{}.1", "1.1.1.{}", "0{}.1.1.1", "1.1.1.00{}", "::ffff:{}.1.1.1"]
    edges = ["1.2.3.4\n", "1.2.3.4 ", "1..2.3", "1.2.3.4.5", "+1.2.3.4", "１.2.3.4", "1.2.3.0x4", "00.0.0.0"]
    values = [form.format(octet) for form in forms for octet in range(301)] + edges
    rows = query(
        sample_job.dsn,
        "SELECT count(*) FILTER (WHERE loginvault.canonical_pii('ip', v) IS DISTINCT FROM host(loginvault.try_inet(v))),"
        " count(*) FILTER (WHERE loginvault.canonical_pii('ip', v) IS NOT NULL),"
        " count(*) FILTER (WHERE loginvault.canonical_pii('ip', v) IS NULL)"
        " FROM unnest(%s::text[]) AS v",
        (values,),
    )
    differing, valid, invalid = rows[0]
    assert differing == 0
    assert valid > 1000 and invalid > 500  # both answers were put to the test


@pytest.mark.parametrize("value", ["593-47-5928", " 593-47-5928 ", "ünï-cødé 🙂", "   ", "a\tb"])
def test_python_tokens_equal_pgcrypto_for_device_ids(sample_job, value):
    (sql_token,) = query(
        sample_job.dsn,
        "SELECT loginvault.pii_token('device_id', loginvault.canonical_pii('device_id', %s), %s, true)",
        (value, sample_job.hmac_key),
    )[0]
    assert masking.token(value, "device_id", sample_job.hmac_key) == sql_token


def test_no_key_or_cleartext_in_artifacts_logs_or_output(sample_job):
    passwords = [conninfo_to_dict(dsn)["password"] for dsn in [sample_job.dsn, *role_dsns(sample_job.dsn).values()]]
    secrets_ = [sample_job.env[name] for name in config.KEY_ENVS] + passwords
    cleartext = cleartext_values(sample_job.dsn)
    assert len(cleartext) > 100
    files = [p for p in sample_job.dbt_dir.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.name == "dbt.log" for p in files)
    texts = {str(p): p.read_text(errors="replace") for p in files}
    texts |= {f"output {i}": r.stdout + r.stderr for i, r in enumerate(sample_job.outputs)}
    for where, text in texts.items():
        for secret in secrets_:
            assert secret not in text, f"a key or password in {where}"
        leaked = [v for v in cleartext if v in text]
        assert not leaked, f"{len(leaked)} cleartext ip/device ids in {where}"


@pytest.mark.parametrize(
    "relation",
    [
        "raw.login_events",
        "raw._dlt_loads",
        "staging.stg_sqs__login_events",
        "pii.vault",
        "pii.recovery_audit",
    ],
)
def test_analyst_cannot_read_raw_staging_or_pii(sample_job, relation):
    with psycopg.connect(role_dsn(sample_job.dsn, config.ANALYST_ROLE), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM user_logins").fetchone()[0] == 99
        assert conn.execute("SELECT count(*) FROM rejected_login_events").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1 FROM {relation} LIMIT 1")


def test_recover_round_trip_is_audited(sample_job):
    dsn = sample_job.dsn
    ((token, ip, users),) = query(
        dsn,
        "SELECT u.masked_ip, min(r.body::jsonb ->> 'ip'), count(*) FROM user_logins u"
        " JOIN raw.login_events r USING (message_id) GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 1",
    )
    out = sample_job.run("recover", "lookup", "--token", token, "--reason", "ticket SEC-1")
    assert out.stdout.strip() == f"ip\t{ip}"
    out = sample_job.run("recover", "lookup", "--ip", ip, "--reason", "ticket SEC-2")
    assert out.stdout.strip() == f"{token}\t{users}"
    missing = sample_job.run("recover", "lookup", "--token", "0" * 64, "--reason", "ticket SEC-3", ok=False)
    assert missing.returncode == 1 and "no such token" in missing.stderr

    audit = query(
        dsn,
        "SELECT login_user, direction, kind, token, found, outcome, reason, client_addr, recovered_at > now() - interval '5 minutes'"
        " FROM pii.recovery_audit ORDER BY id",
    )
    officer = config.WORKLOADS[config.PII_ADMIN_ROLE].local_login
    assert audit[-3:] == [
        (
            officer,
            "token_to_value",
            "ip",
            token,
            True,
            "found",
            "ticket SEC-1",
            ipaddress.ip_address("127.0.0.1"),
            True,
        ),
        (
            officer,
            "value_to_token",
            "ip",
            token,
            True,
            "found",
            "ticket SEC-2",
            ipaddress.ip_address("127.0.0.1"),
            True,
        ),
        (
            officer,
            "token_to_value",
            None,
            "0" * 64,
            False,
            "not_found",
            "ticket SEC-3",
            ipaddress.ip_address("127.0.0.1"),
            True,
        ),
    ]
    assert ip not in json.dumps(audit, default=str)


def test_recover_needs_a_reason_and_the_pii_admin_role(sample_job):
    (token,) = query(sample_job.dsn, "SELECT masked_ip FROM user_logins LIMIT 1")[0]
    before = query(sample_job.dsn, "SELECT count(*) FROM pii.recovery_audit")[0][0]
    no_reason = sample_job.run("recover", "lookup", "--token", token, ok=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    blank = sample_job.run("recover", "lookup", "--token", token, "--reason", "  ", ok=False)
    assert blank.returncode == 2 and blank.stderr.startswith("error: --reason: a reason must say why")
    others = (config.ANALYST_ROLE, config.TRANSFORMER_ROLE, config.LOADER_ROLE, config.AUDITOR_ROLE)
    for role in (*others, config.RECOVERY_SERVICE_ROLE):
        login = config.WORKLOADS[role].local_login
        env = {**sample_job.env, "LOGINVAULT_PII_ADMIN_DSN": role_dsn(sample_job.dsn, role)}
        refused = sample_job.run("recover", "lookup", "--token", token, "--reason", "curious", ok=False, env=env)
        assert refused.returncode == 1 and not refused.stdout
        assert f"logs in as {login}, which is not a member of {config.PII_ADMIN_ROLE}" in refused.stderr
        assert "Traceback" not in refused.stderr
        # Straight to the function, past the command's check: the database refuses too.
        with psycopg.connect(role_dsn(sample_job.dsn, role), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pii.request_value(%s, 'curious')", (token,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pii.lookup_value(%s)", (token,))
    assert query(sample_job.dsn, "SELECT count(*) FROM pii.recovery_audit")[0][0] == before
    officer = role_dsn(sample_job.dsn, config.PII_ADMIN_ROLE)
    with psycopg.connect(officer, autocommit=True) as conn:  # the audit is the functions' to write
        for statement in (
            "SELECT * FROM pii.recovery_audit",
            "INSERT INTO pii.recovery_audit (direction, token, found, reason) VALUES ('token_to_value', 'x', true, 'forged')",
            "DELETE FROM pii.recovery_audit",
            "UPDATE pii.recovery_audit SET reason = 'x'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_second_build_without_new_raw_rows_changes_nothing(sample_job):
    before = snapshot(sample_job.dsn)
    out = sample_job.transform()
    assert snapshot(sample_job.dsn) == before
    inserted = re.findall(
        r"OK created sql (?:incremental|loginvault_day_partitioned|loginvault_declared) model \S+[ .]+\[INSERT 0 (\d+)",
        out.stdout,
    )
    assert inserted == ["0"] * 6, out.stdout  # 3 staging models, the vault and the 2 marts


# ---------------------------------------------------------------- builds of their own


def test_incremental_replays_and_crafted_values(job):
    events = [
        {
            "user_id": "alice",
            "ip": "203.0.113.7",
            "device_id": "111-11-1111",
            "app_version": "2.3.0",
            "device_type": "ios",
            "locale": "US",
        },
        {
            "user_id": "bob",
            "ip": "203.0.113.7",
            "device_id": " 111-11-1111 ",
            "app_version": "0.96",
            "device_type": "android",
            "locale": None,
        },
        {"user_id": "carol", "ip": "203.0.113.8", "device_id": "222-22-2222", "app_version": "v9"},
        {"user_id": "dave", "ip": "2001:DB8::1"},
        {"user_id": "erin", "ip": "2001:db8:0:0:0:0:0:1", "device_id": None},
        {"user_id": "frank", "ip": "999.1.1.1"},
        "not json",
    ]
    send_events(job, events)
    job.run("run", "--wait-time", "1")
    job.transform()
    tokens = dict(query(job.dsn, "SELECT user_id, masked_ip FROM user_logins"))
    assert tokens["alice"] == tokens["bob"] != tokens["carol"]
    assert tokens["dave"] == tokens["erin"] == masking.token("2001:db8::1", "ip", job.hmac_key)
    devices = dict(query(job.dsn, "SELECT user_id, masked_device_id FROM user_logins"))
    assert devices["alice"] == devices["bob"] and devices["erin"] is None and devices["dave"] is None
    assert query(job.dsn, "SELECT app_version, app_version_text FROM user_logins WHERE user_id = 'carol'") == [
        (None, "v9")
    ]
    assert sorted(r for (r,) in query(job.dsn, "SELECT reason FROM rejected_login_events")) == [
        "invalid_json",
        "ip_invalid",
    ]

    # A replay: every raw row lands again in a new load (as a redelivery would) → no new mart rows.
    before = snapshot(job.dsn)
    execute(
        job.dsn,
        "INSERT INTO raw.login_events SELECT message_id, body, sent_at, received_at, receive_count + 1, queue,"
        " '9999999999.1', md5(_dlt_id) FROM raw.login_events;"
        " INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at, schema_version_hash)"
        " SELECT '9999999999.1', schema_name, 0, now(), schema_version_hash FROM raw._dlt_loads LIMIT 1",
    )
    job.transform()
    assert snapshot(job.dsn) == before

    # New messages: only they are processed, and they join the same tokens.
    send_events(job, [{"user_id": "grace", "ip": "203.0.113.7", "device_id": "111-11-1111"}, {"ip": "1.1.1.1"}])
    job.run("run", "--wait-time", "1")
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins") == [(6,)]
    assert query(job.dsn, "SELECT count(*) FROM rejected_login_events") == [(3,)]
    assert query(job.dsn, "SELECT masked_ip FROM user_logins WHERE user_id = 'grace'") == [(tokens["alice"],)]
    assert query(job.dsn, "SELECT count(*) FROM pii.vault WHERE kind = 'ip'") == [(3,)]  # .7, .8, 2001:db8::1


def test_a_build_without_keys_fails_clearly(job):
    send_events(job, [{"user_id": "u", "ip": "10.1.2.3"}])
    job.run("run", "--wait-time", "1")
    env = {k: v for k, v in job.env.items() if k != config.HMAC_KEY_ENV}
    out = job.run("transform", ok=False, env=env)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: LOGINVAULT_HMAC_KEY is not set: this command holds the PII keys (on the local stack they come from"
        " LOGINVAULT_KEYS_FILE, which `make -s env` sets); elsewhere set a random key of at least 32 bytes"
    )
    short = job.run("transform", ok=False, env={**job.env, config.ENCRYPTION_KEY_ENV: "short"})
    assert short.returncode == 1 and "LOGINVAULT_ENCRYPTION_KEY is too short" in short.stderr

    # dbt run (and a plain dbt build) directly as dbt's login, without the keys in PGOPTIONS: each
    # fails at its start (on-run-start, then the staging model's pre-hook check the keys), nothing
    # is built.
    dbt_login = role_dsn(job.dsn, config.TRANSFORMER_ROLE)
    dbt_env = {**job.env, **db.libpq_env(dbt_login), "PGOPTIONS": "", "DBT_PROFILES_DIR": str(config.DBT_PROJECT_DIR)}
    dbt = Path(sys.executable).parent / "dbt"
    for command in ("run", "build"):
        direct = subprocess.run(
            [str(dbt), command], cwd=config.DBT_PROJECT_DIR, env=dbt_env, capture_output=True, text=True, timeout=300
        )
        assert direct.returncode != 0, command
        assert "PII key LOGINVAULT_HMAC_KEY is missing or shorter than 32 bytes" in direct.stdout, command
        assert "OK created" not in direct.stdout, command  # no model ran
        assert query(job.dsn, "SELECT to_regclass('staging.stg_sqs__login_events')") == [(None,)], command
        # The bootstrap made the marts and the vault (from their declared shapes): still empty.
        for model in ("public.user_logins", "public.rejected_login_events", "pii.vault"):
            assert query(job.dsn, f"SELECT count(*) FROM {model}") == [(0,)], (command, model)  # noqa: S608


def test_dbt_gate_catches_cleartext_in_the_mart_without_printing_it(job):
    send_events(job, [{"user_id": "u1", "ip": "198.51.100.23", "device_id": "333-33-3333"}])
    job.run("run", "--wait-time", "1")
    job.transform()
    execute(job.dsn, "UPDATE user_logins SET locale = '333-33-3333'")  # a leak the gate must catch
    out = job.transform("test", "--select", "user_logins", ok=False)
    assert out.returncode == 1
    assert re.search(r"\bFAIL 1 no_cleartext_pii_user_logins_", out.stdout), out.stdout
    assert "333-33-3333" not in out.stdout + out.stderr
    # …and its last line names the first test that failed and why.
    (line,) = out.error_lines()
    assert out.stderr.strip().splitlines()[-1] == line
    assert line.startswith("error: dbt test failed: test no_cleartext_pii_user_logins_"), line
    assert "Got 1 result, configured to fail if != 0" in line
    # The service reports a failing cycle in one line and goes on to the next; exit 1 at the end.
    service = job.run(
        "transform",
        "--every",
        "0.5",
        "--cycles",
        "2",
        "--test-scope",
        "all",
        "test",
        "--select",
        "user_logins",
        ok=False,
    )
    assert service.returncode == 1, service.stderr
    assert service.stderr.count("transform: dbt test failed (exit 1)") == 2, service.stderr
    assert service.stderr.count(": test no_cleartext_pii_user_logins_") == 2, service.stderr
    assert "Traceback" not in service.stderr and "333-33-3333" not in service.stdout + service.stderr
    execute(job.dsn, "UPDATE user_logins SET locale = NULL, masked_ip = md5('x') || md5('y')")  # a broken token
    out = job.transform("test", "--select", "user_logins", ok=False)
    assert out.returncode == 1
    assert re.search(r"\bFAIL \d+ pii_token_is_bijective_user_logins_masked_ip", out.stdout), out.stdout
    assert not re.search(r"\bFAIL \d+ no_cleartext_pii_user_logins_", out.stdout), out.stdout


def test_a_failed_build_names_the_first_failing_model_and_its_database_error(job):
    """One `error:` line with the model and PostgreSQL's reason, not dbt's header alone; dbt's own
    output, going to a pipe, has no colour codes (the test's env leaves DBT_USE_COLORS unset)."""
    send_events(job, [{"user_id": "u", "ip": "10.1.2.3"}])
    job.run("run", "--wait-time", "1")
    execute(  # staging's partitioner, broken (raw and its checks pass; no unit test calls it)
        job.dsn,
        "CREATE OR REPLACE FUNCTION loginvault.ensure_day_partitions(parent regclass, first_day date, last_day date)"
        " RETURNS integer LANGUAGE plpgsql AS $$ BEGIN IF parent::text LIKE 'staging.%' THEN"
        " RAISE EXCEPTION 'the partitioner is broken'; END IF; RETURN 0; END $$",
    )
    env = {name: value for name, value in job.env.items() if name != "DBT_USE_COLORS"}
    out = job.run("transform", "build", ok=False, env=env)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    (line,) = out.error_lines()
    assert out.stderr.strip().splitlines()[-1] == line
    assert line.startswith("error: dbt build failed: model stg_sqs__login_events: "), line
    assert "the partitioner is broken" in line
    assert "Database Error" not in line and "compiled code" not in line
    assert "\x1b[" not in out.stdout, out.stdout
    assert "ERROR creating sql loginvault_day_partitioned model" in out.stdout, out.stdout


def test_transform_service_takes_new_rows_each_cycle_and_stops_on_sigterm(job, spawn):
    """`transform --every S`: one process parses the project once and builds every S seconds;
    each cycle takes what landed since the last; unit tests run in the first build only;
    SIGTERM ends it after the build in hand, exit 0."""
    send_events(job, [{"user_id": "u1", "ip": "198.51.100.1", "device_id": "111-00-0001"}])
    job.run("run", "--wait-time", "1")
    service = spawn("transform", "--every", "1", "build", "--warn-error", env=job.env)
    service.wait_for("(cycle 1)", timeout=180)
    assert query(job.dsn, "SELECT count(*) FROM user_logins") == [(1,)]
    send_events(job, [{"user_id": "u2", "ip": "198.51.100.2"}, {"user_id": "u3", "ip": "198.51.100.1"}])
    job.run("run", "--wait-time", "1")
    wait_until(lambda: query(job.dsn, "SELECT count(*) FROM user_logins") == [(3,)], 60, "a later cycle")
    service.signal(signal.SIGTERM)
    result = service.finish(timeout=60)
    assert result.returncode == 0, result.stderr
    assert "received SIGTERM: finishing the build in hand" in result.stderr
    assert "failed" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    # dbt's output, one part per invocation: the parse, the first build, the later builds.
    _, parse, first, *later = result.stdout.split("Running with dbt=")
    assert later and result.stderr.count("transform: dbt build ok") == 1 + len(later), result.stderr
    assert "START unit_test" in first and not any("START unit_test" in cycle for cycle in later)
    tokens = dict(query(job.dsn, "SELECT user_id, masked_ip FROM user_logins"))
    assert tokens["u3"] == tokens["u1"] != tokens["u2"]  # the same key and vault across cycles
    # Parsed once: dbt logs a parse decision only for the service's one parse.
    dbt_log = (job.dbt_dir / "logs" / "dbt.log").read_text()
    assert dbt_log.count("Running with dbt=") == len(later) + 2  # parse + first build + later ones
    assert len(re.findall(r"Unable to do partial parsing|Partial parsing enabled:", dbt_log)) == 1, dbt_log[-3000:]


def test_pre_existing_bare_user_logins_is_replaced(pg_cluster, moto_server):
    name = f"t_{uuid.uuid4().hex}"
    ensure_database(pg_cluster.dsn("postgres"), name)
    dsn = pg_cluster.dsn(name)
    try:
        # The original exercise's database: public.user_logins with the bare DDL, before loginvault.
        execute(
            dsn,
            "CREATE TABLE public.user_logins (user_id varchar(128), device_type varchar(32), masked_ip varchar(256),"
            " masked_device_id varchar(256), locale varchar(32), app_version integer, create_date date)",
        )
        bootstrap.bootstrap(dsn)
        url, _ = sqs.ensure_queues(moto_server.endpoint_url, REGION, name=f"bare-{uuid.uuid4().hex[:8]}")
        env = ingest_env(dsn, url, moto_server.endpoint_url)
        dbt_dir, dbt = dbt_dirs("bare")
        bare = Job(dsn, {**env, **dbt}, dbt_dir)
        send_events(bare, list(sample.synthetic_events(20, seed=7)))
        bare.run("run", "--wait-time", "1")
        bare.transform()
        assert query(dsn, "SELECT count(*) FROM public.user_logins") == [(20,)]
        rows = query(
            dsn,
            "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'user_logins' ORDER BY ordinal_position",
        )
        assert rows == MART_COLUMNS
    finally:
        drop_test_database(pg_cluster, name)
