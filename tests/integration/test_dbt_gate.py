"""The dbt test gate: every row by default, a mark that moves only when every data test ran and
passed, and each generic test and each of its branches failing on a defect planted on purpose
(real PostgreSQL, real dbt, real `loginvault transform`).

A branch is shown to fire by running the test's compiled SQL (dbt wrote it to the job's
target/compiled/ during the build) inside a transaction that plants the defect and is rolled back:
one build, then one plant per branch at the cost of a query.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from bench import harness
from conftest import Job, clone_job, drop_test_database, execute, query, send_events
from ingest import config
from ingest.local import sample
from ingest.vault.keys import key_options

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# `origin` (conftest): 20 synthetic messages ingested and built, then 4 hand-written ones below.
ORIGIN_MESSAGES = 20
EVENTS = [
    {"user_id": "g1", "ip": "198.51.100.1", "device_id": "111-00-0001", "locale": "RU"},
    {"user_id": "g2", "ip": "198.51.100.2", "device_id": "222-00-0002"},
    {"user_id": "g3", "ip": "198.51.100.3", "device_id": "333-00-0003"},
    "not an object",
]


@pytest.fixture(scope="module")
def gate(origin: Job) -> Job:
    """`origin` with the hand-written events ingested and built (full scope: every test passed)."""
    send_events(origin, EVENTS)
    origin.run("run", "--wait-time", "1")
    origin.transform()
    return origin


@pytest.fixture
def copy(pg_cluster, gate: Job) -> Iterator[Job]:
    """A copy of `gate` of this test's own, to tamper with."""
    job = clone_job(pg_cluster, gate, "gate")
    yield job
    drop_test_database(pg_cluster, job.dsn)


def message_of(job: Job, user_id: str) -> str:
    (message_id,) = query(job.dsn, "SELECT message_id FROM user_logins WHERE user_id = %s", (user_id,))[0]
    return message_id


def compiled(job: Job, test: str) -> str:
    """The compiled SQL of the data test whose name starts with `test`, as the job's last build
    ran it (run_results.json)."""
    results = json.loads((job.dbt_dir / "target" / "run_results.json").read_text())["results"]
    (sql,) = [r["compiled_code"] for r in results if r["unique_id"].startswith(f"test.loginvault.{test}")]
    return sql


def findings(job: Job, test: str, *plant: str) -> list[tuple]:
    """What the test's compiled SQL returns after `plant` (as the admin, with the job's keys), in
    a transaction rolled back afterwards: the database is left as it was."""
    keys = {name: job.env[name] for name in config.KEY_ENVS}
    with psycopg.connect(job.dsn, options=key_options(keys)) as conn:
        for statement in plant:
            conn.execute(statement)
        rows = conn.execute(compiled(job, test)).fetchall()
        conn.rollback()
    return rows


def kinds(job: Job, test: str, *plant: str) -> set[str]:
    """The failure kinds (first column) the test reports after `plant`."""
    return {row[0] for row in findings(job, test, *plant)}


# ---------------------------------------------------------------- every generic test, every branch


def test_every_message_accounted_for_fails_on_each_kind_of_loss(gate):
    test = "every_message_accounted_for_rejected_login_events"
    assert findings(gate, test) == []
    m1, m2 = message_of(gate, "g1"), message_of(gate, "g2")
    # Staging skipped a completed load (recorded long before the run).
    (load,) = query(gate.dsn, "SELECT _dlt_load_id FROM raw.login_events WHERE message_id = %s", (m1,))[0]
    skipped_load = (
        f"DELETE FROM staging.stg_sqs__loads WHERE load_id = '{load}'",
        f"UPDATE raw._dlt_loads SET inserted_at = inserted_at - interval '1 hour' WHERE load_id = '{load}'",
    )
    assert kinds(gate, test, *skipped_load) == {"load_not_taken"}
    # A staging model that dropped a message: not in staging, nor in the marts; raw has it.
    dropped = [f"DELETE FROM {t} WHERE message_id = '{m1}'" for t in ("user_logins", "staging.stg_sqs__messages")]
    assert kinds(gate, test, *dropped) == {"raw_not_accounted"}
    # A staged message whose raw rows retention removed, missing from the marts.
    lost = [f"DELETE FROM {t} WHERE message_id = '{m2}'" for t in ("raw.login_events", "user_logins")]
    assert kinds(gate, test, *lost) == {"staged_not_accounted"}
    # A message counted twice.
    doubled = f"INSERT INTO rejected_login_events SELECT message_id, 'ip_invalid', now(), now() FROM user_logins WHERE message_id = '{m1}'"
    assert kinds(gate, test, doubled) == {"raw_not_accounted", "staged_not_accounted"}
    # A mart row no message was staged for.
    invented = "INSERT INTO rejected_login_events VALUES ('invented', 'invalid_json', now(), now())"
    assert kinds(gate, test, invented) == {"not_staged"}


def test_no_cleartext_pii_fails_on_a_value_of_its_own_message_and_in_a_token_column(gate):
    test = "no_cleartext_pii_user_logins"
    assert findings(gate, test) == []
    own = "UPDATE user_logins SET locale = '111-00-0001' WHERE user_id = 'g1'"
    assert kinds(gate, test, own) == {"locale"}
    other = "UPDATE user_logins SET masked_ip = '198.51.100.2' WHERE user_id = 'g1'"  # g2's ip
    assert kinds(gate, test, other) == {"masked_ip (any message)"}
    assert findings(gate, "no_cleartext_pii_rejected_login_events") == []


def test_pii_token_is_bijective_fails_on_each_branch(gate):
    test = "pii_token_is_bijective_user_logins_masked_ip"
    assert findings(gate, test) == []
    token = "(SELECT masked_ip FROM user_logins WHERE user_id = '{}')"
    plants = {
        # g2's payload now says g1's ip, its token still g2's: one value, two tokens.
        "nondeterministic": (
            "UPDATE staging.stg_sqs__login_events SET payload = jsonb_set(payload, '{ip}', '\"198.51.100.1\"')"
            f" WHERE message_id = '{message_of(gate, 'g2')}'",
        ),
        "collision": (f"UPDATE user_logins SET masked_ip = {token.format('g1')} WHERE user_id = 'g2'",),
        "mismatch": ("UPDATE user_logins SET masked_ip = md5('x') || md5('y') WHERE user_id = 'g1'",),
        "orphan_row": ("UPDATE user_logins SET masked_ip = NULL WHERE user_id = 'g3'",),
        "not_in_vault": (f"DELETE FROM pii.vault WHERE kind = 'ip' AND token = {token.format('g3')}",),
        "vault_orphan": (
            "INSERT INTO pii.vault (token, kind, ciphertext) VALUES (md5('a') || md5('b'), 'ip', '\\x00')",
        ),
    }
    for kind, plant in plants.items():
        assert kind in kinds(gate, test, *plant), kind


@pytest.mark.parametrize(
    ("test", "plant"),
    [
        ("accepted_values_rejected_login_events_reason", "UPDATE rejected_login_events SET reason = 'made_up'"),
        (
            "accepted_values_stg_sqs__login_events_parse_error",
            "UPDATE staging.stg_sqs__login_events SET parse_error = 'made_up' WHERE payload ->> 'user_id' = 'g1'",
        ),
        ("not_null_stg_sqs__login_events_sent_at", "UPDATE staging.stg_sqs__login_events SET sent_at = NULL"),
        (
            "unique_stg_sqs__login_events_message_id",
            "INSERT INTO staging.stg_sqs__login_events SELECT * FROM staging.stg_sqs__login_events LIMIT 1",
        ),
    ],
)
def test_each_built_in_test_fails_on_its_defect(gate, test, plant):
    assert findings(gate, test) == []
    assert findings(gate, test, plant)


def test_dbt_names_each_failing_test_and_exits_1(copy):
    """One defect per generic test, one `loginvault transform test`: each test fails by name."""
    execute(
        copy.dsn,
        "UPDATE user_logins SET locale = '111-00-0001', masked_ip = md5('x') || md5('y') WHERE user_id = 'g1';"
        " UPDATE rejected_login_events SET reason = 'made_up';"
        " INSERT INTO rejected_login_events VALUES ('invented', 'invalid_json', now(), now());"
        " INSERT INTO staging.stg_sqs__login_events SELECT * FROM staging.stg_sqs__login_events LIMIT 1",
    )
    out = copy.transform("test", ok=False)
    assert out.returncode == 1, out.stderr
    for test in (
        "no_cleartext_pii_user_logins_",
        "pii_token_is_bijective_user_logins_masked_ip",
        "accepted_values_rejected_login_events_reason",
        "every_message_accounted_for_rejected_login_events",
        "unique_stg_sqs__login_events_message_id",
    ):
        assert re.search(rf"\bFAIL \d+ {test}", out.stdout), (test, out.stdout[-3000:])
    assert "111-00-0001" not in out.stdout + out.stderr
    (line,) = out.error_lines()
    assert line.startswith("error: dbt test failed: test "), line


# ---------------------------------------------------------------- the scope and the mark


def passed_mark(job: Job):
    rows = query(job.dsn, "SELECT high FROM staging.loginvault_watermarks WHERE model = 'tests_passed'")
    return rows[0][0] if rows else None


def test_the_default_gate_checks_rows_tested_before(copy):
    """A leak planted in a row an earlier build tested fails the next plain build; the service's
    incremental scope would not see it (that is its trade-off), until a full-scope build runs."""
    execute(copy.dsn, "UPDATE user_logins SET locale = '111-00-0001' WHERE user_id = 'g1'")
    incremental = copy.run("transform", "--test-scope", "incremental", "build", "--warn-error")
    assert incremental.returncode == 0
    failed = copy.transform(ok=False)
    assert failed.returncode == 1 and re.search(r"\bFAIL 1 no_cleartext_pii_user_logins_", failed.stdout)


def test_the_mark_moves_only_when_every_data_test_ran_and_passed(copy):
    before = passed_mark(copy)
    assert before is not None
    copy.run("seed", "--count", "3")
    copy.run("run", "--wait-time", "1")
    for partial in (
        ("build", "--exclude-resource-type", "test"),
        ("run",),
        ("test", "--select", "user_logins"),
        ("build", "--exclude", "rejected_login_events"),
    ):
        copy.transform(*partial)
        assert passed_mark(copy) == before, partial
    # A leak in a row staged since the mark (by the partial builds above: untested).
    newest = "(SELECT message_id FROM staging.stg_sqs__messages ORDER BY _transformed_at DESC, message_id LIMIT 1)"
    execute(
        copy.dsn,
        "UPDATE user_logins AS u SET locale = s.payload ->> 'device_id' FROM staging.stg_sqs__login_events AS s"
        f" WHERE s.message_id = u.message_id AND u.message_id = {newest}",
    )
    for _ in range(2):  # the incremental scope sees it; a failing build leaves the mark: tested again
        failed = copy.run("transform", "--test-scope", "incremental", "build", ok=False)
        assert failed.returncode == 1
        assert passed_mark(copy) == before
    execute(copy.dsn, f"UPDATE user_logins SET locale = NULL WHERE message_id = {newest}")
    copy.transform("test")
    assert passed_mark(copy) > before


def test_a_message_staged_twice_across_builds_fails_the_incremental_gate(copy):
    """Uniqueness of staged message ids holds across builds: the copy of a row an earlier build
    staged, stamped as staged now, is caught by the service's scope too."""
    execute(
        copy.dsn,
        "INSERT INTO staging.stg_sqs__login_events SELECT message_id, sent_at, received_at, receive_count, payload,"
        " parse_error, _dlt_load_id, now() FROM staging.stg_sqs__login_events LIMIT 1",
    )
    out = copy.run("transform", "--test-scope", "incremental", "build", ok=False)
    assert out.returncode == 1
    assert re.search(r"\bFAIL 1 unique_stg_sqs__login_events_message_id", out.stdout), out.stdout[-2000:]


def test_a_bad_test_scope_is_refused(copy):
    out = copy.run("transform", "--test-scope", "some", "build", ok=False)
    assert out.returncode == 2
    assert "argument --test-scope: expected one of all, incremental, got 'some'" in out.stderr


# ---------------------------------------------------------------- the full-scope gate at size

GATE_SIZE = 100_000


def test_the_full_scope_gate_passes_on_100k_messages(job):
    """CI's gate at size: 100,000 messages loaded as the loader does (the benchmarks' COPY), one
    `loginvault transform build --warn-error` that tests every row, and its mark."""
    now = datetime.now(UTC)
    with psycopg.connect(job.dsn) as conn:
        conn.execute(f"SET ROLE {config.LOADER_ROLE}")
        events = sample.synthetic_events(GATE_SIZE, seed=5)
        for load in range(10):
            harness.copy_load(conn, events, GATE_SIZE // 10, f"{now.timestamp() + load:.6f}", now)
    execute(job.dsn, "ANALYZE raw.login_events")
    out = job.transform()
    assert "loginvault_test_scope" not in out.stderr
    counts = query(job.dsn, "SELECT (SELECT count(*) FROM user_logins), (SELECT count(*) FROM rejected_login_events)")
    assert sum(counts[0]) == GATE_SIZE and counts[0][1] == GATE_SIZE // 100  # every 100th is malformed
    assert passed_mark(job) is not None
    assert re.search(r"PASS every_message_accounted_for_rejected_login_events", out.stdout)
    (finished,) = re.findall(r"Finished running .*", out.stdout)
    print(f"full-scope gate on {GATE_SIZE} messages: {finished}")  # with -s: the figure in the README
