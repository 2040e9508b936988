"""Integration: issue 4's delivery guarantees under faults, with real processes.

`python -m ingest run` subprocesses against real PostgreSQL and a moto SQS server over HTTP are
killed with SIGKILL at the fault pause points (LOGINVAULT_FAULT_PAUSE=<point>=<seconds|inf>) or
while their COPY waits for a table lock, see their database stop under them, compete for one queue,
meet a row the database refuses (dead-letter queue and redrive), get SIGTERM/SIGINT mid-load or
mid-poll (and a second SIGINT), and hold messages longer than the visibility timeout. After each: every message in raw at least once,
in the mart (user_logins + rejected_login_events, after `transform build --warn-error`) exactly
once, nothing deleted that did not land, and the queue empty.
"""

from __future__ import annotations

import json
import re
import signal
import time

import psycopg
import pytest

from conftest import Result, dbt_dirs, execute, query, run_ingest, wait_until
from ingest import config
from ingest.local import sample
from ingest.settings import CommonSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MART = CommonSettings().mart_schema  # the tests' environment sets no LOGINVAULT_MART_SCHEMA

RAW = f"{config.RAW_SCHEMA}.{config.RAW_TABLE}"
# Short visibility timeouts: a killed run's messages come back within seconds.
SHORT_VISIBILITY = ("--visibility-timeout", "2")
RUN = ("run", "--wait-time", "1")
SUMMARY_COUNTS = (
    "received",
    "landed",
    "deleted",
    "redeliveries",
    "visibility extended",
    "stale receipt handles",
    "delete failures",
    "released",
    "refused",
)


# ---------------------------------------------------------------- processes


@pytest.fixture
def job_env(env_for):
    """job_env(dsn, **extra) → the env of ingest/transform subprocesses on this test's queue and
    that database, with dbt's target/ and logs/ in a directory of this test's own."""

    def make(dsn: str, **extra: str) -> dict[str, str]:
        return env_for(dsn, **dbt_dirs("faults")[1], **extra)

    return make


def faulty(env: dict[str, str], spec: str) -> dict[str, str]:
    return {**env, "LOGINVAULT_FAULT_PAUSE": spec}


def summary(stderr: str) -> dict[str, int]:
    """The counts of run's one summary line (`ingest: received …, landed …, …`), absent ones 0."""
    lines = [line for line in stderr.splitlines() if line.startswith("ingest: received ")]
    assert len(lines) == 1, stderr
    counts = dict.fromkeys(SUMMARY_COUNTS, 0)
    for part in lines[0].removeprefix("ingest: ").split(", "):
        match = re.fullmatch(r"([a-z ]+) (\d+)", part)
        if match and match[1] in counts:
            counts[match[1]] = int(match[2])
    return counts


def assert_ok(result: Result) -> dict[str, int]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return summary(result.stderr)


# ---------------------------------------------------------------- data


def seed(queue, events: list) -> list[str]:
    """Send the events; returns their bodies as they travel."""
    assert sample.send_events(queue.settings, events) == len(events)
    return [sample.to_body(e) for e in events]


def raw_count(dsn: str) -> int:
    return query(dsn, f"SELECT count(*) FROM {RAW}")[0][0]  # noqa: S608


def distinct_ids(dsn: str) -> int:
    return query(dsn, f"SELECT count(DISTINCT message_id) FROM {RAW}")[0][0]  # noqa: S608


def assert_in_raw_at_least_once(dsn: str, bodies: list[str]) -> dict[str, str]:
    """Every body sent is in raw under one message id of its own; returns message id → body."""
    rows = query(dsn, f"SELECT DISTINCT message_id, body FROM {RAW}")  # noqa: S608
    by_id = dict(rows)
    assert len(by_id) == len(rows), "a message id landed with two different bodies"
    assert sorted(by_id.values()) == sorted(bodies)
    return by_id


def mart_ids(dsn: str) -> list[str]:
    return [
        r[0]
        for r in query(
            dsn,
            f"SELECT message_id FROM {MART}.user_logins"  # noqa: S608
            f" UNION ALL SELECT message_id FROM {MART}.rejected_login_events",
        )
    ]


def transform_and_assert_exactly_once(env: dict[str, str], dsn: str, message_ids: set[str]) -> None:
    """`transform build --warn-error`, then each message id once in user_logins + rejected, no other."""
    result = run_ingest("transform", "build", "--warn-error", env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    ids = mart_ids(dsn)
    assert len(ids) == len(message_ids)
    assert set(ids) == message_ids


# ---------------------------------------------------------------- kill -9


def lock_waiter(dsn: str) -> str | None:
    """The statement of a backend of this database that waits for a lock, if any."""
    rows = query(
        dsn,
        "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
    )
    return rows[0][0] if rows else None


def other_backends(dsn: str) -> int:
    return query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )[0][0]


@pytest.mark.parametrize("fault", ["after_receive", "in_load", "copy_blocked", "after_commit"])
def test_kill9_loses_nothing_and_the_mart_stays_exactly_once(fault, pg_dsn, sqs_queue, job_env, spawn):
    """kill -9 (a) after a receive, before the load, (b) in the load: paused before the dlt run, or
    with its COPY blocked by a table lock, (c) after the commit, before the delete. Then a restart
    after the visibility timeout lands what is missing; dbt keeps one row per message."""
    count = 20
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    env = job_env(pg_dsn)
    args = (*RUN, *SHORT_VISIBILITY)
    if fault == "copy_blocked":
        # An admin transaction holds the table: the loader's COPY waits for the lock.
        lock = psycopg.connect(pg_dsn)
        try:
            lock.execute(f"LOCK TABLE {RAW} IN ACCESS EXCLUSIVE MODE")
            proc = spawn(*args, env=env)
            blocked = wait_until(lambda: lock_waiter(pg_dsn), 60, "the load's COPY to wait for the table lock")
            assert blocked.startswith("COPY") and "login_events" in blocked, blocked
            proc.kill9()
            assert lock.execute(f"SELECT count(*) FROM {RAW}").fetchone()[0] == 0  # noqa: S608
        finally:
            lock.rollback()
            lock.close()
        # The orphaned backend gets the lock, finds its client gone and rolls back.
        wait_until(lambda: other_backends(pg_dsn) == 0, 30, "the killed run's backends to end")
    else:
        proc = spawn(*args, env=faulty(env, f"{fault}=inf"))
        proc.wait_for(f"fault: paused at {fault}")
        proc.kill9()

    committed = raw_count(pg_dsn)
    # Nothing deleted. Which of them are still in flight depends on the time since the kill (the
    # keeper last extended them to 2 s at most): what the killed run held is counted below, by
    # their redelivery.
    assert sum(sqs_queue.depth()) == count, "a message was deleted by a run that was killed before its delete"
    if fault == "after_commit":
        assert committed > 0
    else:
        assert committed == 0

    # Once their visibility timeout has passed, the killed run's messages are visible again.
    assert sqs_queue.wait_until_visible(count, timeout=30) == (count, 0)
    counts = assert_ok(run_ingest(*RUN, env=env))
    assert counts["landed"] == counts["deleted"] == count
    # The killed run's messages were received a second time, and raw recorded it.
    redelivered = query(pg_dsn, f"SELECT count(*) FROM {RAW} WHERE receive_count > 1")[0][0]  # noqa: S608
    assert redelivered > 0, "the killed run held no message: the fault was not reached with messages in hand"
    assert counts["redeliveries"] == redelivered
    assert sqs_queue.depth() == (0, 0)

    by_id = assert_in_raw_at_least_once(pg_dsn, bodies)
    duplicates = query(
        pg_dsn,
        f"SELECT message_id, array_agg(receive_count ORDER BY receive_count) FROM {RAW}"  # noqa: S608
        " GROUP BY 1 HAVING count(*) > 1",
    )
    if fault == "after_commit":
        # Committed, not deleted: landed again on redelivery, in raw twice.
        assert len(duplicates) == committed
        assert {tuple(receive_counts) for _, receive_counts in duplicates} == {(1, 2)}
    else:
        assert duplicates == []
    assert raw_count(pg_dsn) == count + committed

    transform_and_assert_exactly_once(env, pg_dsn, set(by_id))


# ---------------------------------------------------------------- database outage


def test_database_down_within_the_retry_budget_loses_nothing(own_cluster, sqs_queue, job_env, spawn, tmp_path):
    """PostgreSQL stops mid-run (between receive and load), and starts again once a load has
    failed: the load is retried and the run completes."""
    count = 20
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    dsn = own_cluster.dsn()
    env = job_env(dsn)
    release = tmp_path / "release"
    proc = spawn(*RUN, "--visibility-timeout", "5", "--retry-budget", "30", env=faulty(env, f"in_load=until:{release}"))
    proc.wait_for("fault: paused at in_load")
    own_cluster.stop()  # stopped (pg_ctl -w) before the load goes on
    release.touch()
    proc.wait_for("retrying")
    own_cluster.start()
    result = proc.finish()
    counts = assert_ok(result)
    assert "load failed" in result.stderr and "retrying" in result.stderr, "the outage was not hit"
    assert counts["landed"] == counts["deleted"] == count
    assert_in_raw_at_least_once(dsn, bodies)
    assert raw_count(dsn) == count
    assert sqs_queue.depth() == (0, 0)


def test_database_down_beyond_the_retry_budget_deletes_nothing(own_cluster, sqs_queue, job_env, spawn, tmp_path):
    """PostgreSQL stays down past --retry-budget: exit 1 with one `error:` line, every message
    still in the queue; once it is back, a run lands them all."""
    count = 20
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    dsn = own_cluster.dsn()
    env = job_env(dsn)
    release = tmp_path / "release"
    proc = spawn(*RUN, "--visibility-timeout", "3", "--retry-budget", "3", env=faulty(env, f"in_load=until:{release}"))
    proc.wait_for("fault: paused at in_load")
    own_cluster.stop()  # stopped (pg_ctl -w) before the load goes on
    release.touch()
    result = proc.finish(timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.error_lines()
    assert len(errors) == 1, result.stderr
    assert "loading into raw failed after" in errors[0]
    assert own_cluster.password not in result.stderr
    visible, in_flight = sqs_queue.depth()
    assert visible + in_flight == count

    own_cluster.start()
    assert raw_count(dsn) == 0
    assert sqs_queue.wait_until_visible(count, timeout=30) == (count, 0)
    counts = assert_ok(run_ingest(*RUN, env=env))
    assert counts["landed"] == counts["deleted"] == count
    assert_in_raw_at_least_once(dsn, bodies)
    assert raw_count(dsn) == count
    assert sqs_queue.depth() == (0, 0)


# ---------------------------------------------------------------- many receivers


def test_two_processes_with_two_receivers_each_land_5000_exactly_once(pg_dsn, sqs_queue, job_env, spawn):
    """Two `run --follow --receivers 2` processes (4 receivers) on one queue while 5,000 messages
    arrive; SIGTERM once the queue is empty. Every message in raw, and once in the mart.

    The messages are sent while the runs consume, at most ~200 ahead: moto's SendMessage and
    ReceiveMessage cost time proportional to the queue's depth (every call recounts the queue),
    so 5,000 sent up front take ~3.5 min to send and far longer to receive."""
    total = 5000
    events = list(sample.synthetic_events(total, seed=4))
    env = job_env(pg_dsn)
    args = ("run", "--follow", "--receivers", "2", "--batch-size", "100", "--wait-time", "1")
    procs = [spawn(*args, "--visibility-timeout", "10", env=env) for _ in range(2)]
    bodies: list[str] = []
    for start in range(0, total, 100):
        while sum(sqs_queue.depth()) > 200:
            time.sleep(0.25)
        bodies += seed(sqs_queue, events[start : start + 100])
    assert len(bodies) == total

    def drained() -> bool:
        return distinct_ids(pg_dsn) == total and sqs_queue.depth() == (0, 0)

    wait_until(drained, 120, "every message in raw and the queue empty", interval=0.5)
    for proc in procs:
        proc.signal(signal.SIGTERM)
    counts = [assert_ok(proc.finish(timeout=30)) for proc in procs]
    assert all(c["landed"] > 0 for c in counts), "one process landed nothing: nothing ran concurrently"
    received, landed, deleted = (sum(c[name] for c in counts) for name in ("received", "landed", "deleted"))
    # Every landed delivery was deleted. A few more deliveries than messages are allowed: moto,
    # like SQS standard queues, may hand one message to two concurrent receivers (both copies
    # then count as redeliveries); raw keeps both, the mart one. A copy handed out by a poll
    # that returns at the stop is given back, not loaded (its message landed already: every id
    # was in raw before the stop).
    leftover = received - landed
    assert landed == deleted >= total
    assert 0 <= leftover <= 4 and sum(c["released"] for c in counts) <= leftover, counts
    assert received - total <= sum(c["redeliveries"] for c in counts) + leftover
    visible, in_flight = sqs_queue.depth()
    assert in_flight == 0 and visible <= leftover

    by_id = assert_in_raw_at_least_once(pg_dsn, bodies)
    assert len(by_id) == total
    assert raw_count(pg_dsn) == landed
    transform_and_assert_exactly_once(env, pg_dsn, set(by_id))


# ---------------------------------------------------------------- dead-letter queue

MARKER = "refused-by-check-constraint"


def test_refused_message_goes_to_the_dlq_and_redrive_brings_it_back_once(pg_dsn, sqs_queue, job_env, spawn):
    """A message the database refuses (a CHECK constraint) does not hold back the others, is
    redelivered until SQS moves it to the dead-letter queue (maxReceiveCount 5), is reported by
    its message id; once the constraint is gone, `dlq redrive` brings it back under its
    original message id and the mart has it once."""
    execute(pg_dsn, f"ALTER TABLE {RAW} ADD CONSTRAINT no_marker CHECK (body NOT LIKE '%{MARKER}%') NOT VALID")
    refused_event = {
        "user_id": "refused-user",
        "device_type": "ios",
        "locale": "EN",
        "app_version": "1.2.3",
        "note": MARKER,
    }
    bodies = seed(sqs_queue, [*sample.synthetic_events(5, seed=7), refused_event])
    env = job_env(pg_dsn)
    args = (*RUN, "--visibility-timeout", "1", "--batch-size", "10")

    outputs = []
    for _ in range(6):
        if sum(sqs_queue.depth()) == 0:
            break
        sqs_queue.wait_until_visible(1, timeout=10)
        outputs.append(run_ingest(*args, env=env))
    assert sqs_queue.depth() == (0, 0), "the refused message did not leave the source queue within 6 runs"

    # The first run received all 6 at once: the good ones landed, the refused one was reported.
    first = assert_ok(outputs[0])
    assert first["landed"] == first["deleted"] == 5 and first["refused"] == 1
    reported = re.findall(r"message (\S+) refused \(receive (\d) of 5", outputs[0].stderr)
    assert len(reported) == 1, outputs[0].stderr
    refused_id = reported[0][0]
    assert "no_marker" in outputs[0].stderr
    assert MARKER not in "".join(o.stderr for o in outputs), "a refused row's body reached the log"
    # Alone in its batch, the refused message fails the run (every message of the batch was
    # refused); the last run found it gone to the dead-letter queue.
    for later in outputs[1:-1]:
        assert later.returncode == 1 and len(later.error_lines()) == 1, later.stderr
        assert "no_marker" in later.error_lines()[0]
    assert summary(outputs[-1].stderr)["received"] == 0
    assert len(outputs) == config.DLQ_MAX_RECEIVE_COUNT + 1
    good = query(pg_dsn, f"SELECT message_id, count(*) FROM {RAW} GROUP BY 1")  # noqa: S608
    assert len(good) == 5 and {n for _, n in good} == {1} and refused_id not in dict(good)

    report = run_ingest("dlq", "status", env=env)
    assert report.returncode == 0, report.stderr
    assert re.search(r"^dlq: \S+: 1 message waiting, 0 in flight$", report.stderr, re.M), report.stderr
    assert [line.split("\t")[0] for line in report.stdout.splitlines()] == [refused_id]
    # moto counts the report's own look (a receive) too.
    assert int(re.search(r"\treceived (\d+) times?\t", report.stdout)[1]) >= config.DLQ_MAX_RECEIVE_COUNT

    execute(pg_dsn, f"ALTER TABLE {RAW} DROP CONSTRAINT no_marker")
    redrive = run_ingest("dlq", "redrive", env=env)
    assert redrive.returncode == 0, redrive.stderr
    assert "dlq: moved 1 message back" in redrive.stderr
    assert sqs_queue.depth() == (1, 0)
    counts = assert_ok(run_ingest(*RUN, env=env))
    assert counts["landed"] == counts["deleted"] == 1
    assert sqs_queue.depth() == (0, 0)
    assert run_ingest("dlq", "status", env=env).stderr.count(": 0 messages waiting, 0 in flight") == 1

    by_id = assert_in_raw_at_least_once(pg_dsn, bodies)
    assert json.loads(by_id[refused_id]) == refused_event
    transform_and_assert_exactly_once(env, pg_dsn, set(by_id))
    assert mart_ids(pg_dsn).count(refused_id) == 1


# ---------------------------------------------------------------- graceful shutdown


@pytest.mark.parametrize(
    ("signum", "loaders"), [(signal.SIGTERM, 1), (signal.SIGINT, 2)], ids=["SIGTERM-1-loader", "SIGINT-2-loaders"]
)
def test_signal_in_follow_lands_the_batches_in_hand_and_releases_the_rest(
    signum, loaders, pg_dsn, sqs_queue, job_env, spawn, tmp_path
):
    """SIGTERM/SIGINT while a load is under way: that load (one per loader at most) lands and is
    deleted, everything else received is made visible again at once, exit 0 well within 30 s."""
    count, batch = 30, 10
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    env = job_env(pg_dsn)
    args = ("run", "--follow", "--wait-time", "1", "--batch-size", str(batch), "--loaders", str(loaders))
    release = tmp_path / "release"  # the load in hand goes on once the signal was received
    proc = spawn(*args, "--visibility-timeout", "60", env=faulty(env, f"in_load=until:{release}"))
    proc.wait_for("fault: paused at in_load")
    signalled = time.monotonic()
    proc.signal(signum)
    proc.wait_for(f"received {signal.Signals(signum).name}")
    release.touch()
    result = proc.finish(timeout=120)
    # Within half the 60 s visibility timeout: it released the messages, it did not wait for them.
    assert time.monotonic() - signalled < 30
    counts = assert_ok(result)
    # Right after the exit nothing is in flight: with a 60 s visibility timeout, only a release
    # makes the unloaded messages visible this soon.
    visible, in_flight = sqs_queue.depth()
    assert in_flight == 0
    loads = result.stderr.count("fault: paused at in_load")  # one pause per load attempt
    assert 1 <= loads <= loaders, f"a batch not being loaded at the signal was loaded after it:\n{result.stderr}"
    assert counts["landed"] == counts["deleted"] == batch * loads == raw_count(pg_dsn)
    assert counts["landed"] + visible == count
    assert counts["received"] > counts["landed"], "nothing was held beyond the batches in hand: no release tested"
    assert counts["released"] == counts["received"] - counts["landed"]
    assert f"released {counts['released']}" in result.stderr

    # What was released is taken by the next run at once, nothing lost or doubled.
    counts = assert_ok(run_ingest(*RUN, env=env))
    assert counts["landed"] == visible
    assert_in_raw_at_least_once(pg_dsn, bodies)
    assert raw_count(pg_dsn) == count
    assert sqs_queue.depth() == (0, 0)


LONG_POLL = 20  # seconds: SQS's longest receive wait


def long_polling_run_in_a_load(spawn, sqs_queue, env: dict[str, str], *args: str):
    """A `run --follow --wait-time 20` (batches of 10, one loader) paused in a load, once it has
    received every message: its receiver is in a 20 s long poll of an empty queue."""
    wait = ("--wait-time", str(LONG_POLL))
    proc = spawn("run", "--follow", *wait, "--batch-size", "10", "--loaders", "1", *args, env=env)
    proc.wait_for("fault: paused at in_load")
    wait_until(lambda: sqs_queue.depth()[0] == 0, 10, "the receiver to take every message")
    return proc


def test_a_stop_lets_the_open_polls_return_and_hides_no_message(pg_dsn, sqs_queue, job_env, spawn):
    """SIGINT while two receivers wait in 20 s long polls: no new poll, the command says it lets the
    open ones return, and releases what they bring; every message sent during the stop is received
    by the next run at once (an abandoned poll would hide what SQS hands it for the 300 s visibility
    timeout, and that run would receive fewer)."""
    first, during = 5, 20
    bodies = seed(sqs_queue, list(sample.synthetic_events(first)))
    env = job_env(pg_dsn)
    proc = spawn("run", "--follow", "--receivers", "2", "--wait-time", "20", "--visibility-timeout", "300", env=env)
    wait_until(lambda: raw_count(pg_dsn) == first and sqs_queue.depth() == (0, 0), 30, "the first messages to land")
    proc.signal(signal.SIGINT)
    proc.wait_for("stopping: waiting up to 20 s for 2 open long polls to return")
    events = list(sample.synthetic_events(first + during))[first:]
    bodies += seed(sqs_queue, events)
    counts = assert_ok(proc.finish(timeout=60))
    assert counts["landed"] == counts["deleted"] == first
    assert counts["received"] - first == counts["released"], "what the open polls brought was released"

    counts = assert_ok(run_ingest(*RUN, env=env))
    assert counts["received"] == counts["landed"] == counts["deleted"] == during
    assert_in_raw_at_least_once(pg_dsn, bodies)
    assert raw_count(pg_dsn) == first + during
    assert sqs_queue.depth() == (0, 0)


def test_a_second_sigint_exits_at_once_and_says_what_it_leaves(pg_dsn, sqs_queue, job_env, spawn):
    """A second SIGINT while the first waits for a load that never ends: exit 130 at once, one
    line with how many messages are left for redelivery; a later run lands them all."""
    count = 20
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    env = job_env(pg_dsn)
    proc = long_polling_run_in_a_load(spawn, sqs_queue, faulty(env, "in_load=inf"), *SHORT_VISIBILITY)
    proc.signal(signal.SIGINT)
    proc.wait_for("received SIGINT")
    time.sleep(0.5)
    assert proc.popen.poll() is None, "the first SIGINT must wait for the load in hand"
    signalled = time.monotonic()
    proc.signal(signal.SIGINT)
    result = proc.finish(timeout=60)
    assert time.monotonic() - signalled < LONG_POLL / 2  # at once: neither the load nor the poll waited out
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    left = [line for line in result.stderr.splitlines() if "left for redelivery" in line]
    assert len(left) == 1, result.stderr
    # The batch in the load never ends, so it is left; the other batch too, unless the long poll
    # that received it answered after the first SIGINT: then it was released as it arrived (moto
    # counts messages in flight once it answers, before the process has them).
    held = re.search(r"exiting at once, (\d+) messages left for redelivery", left[0])
    assert held and 10 <= int(held.group(1)) <= count, left[0]
    assert raw_count(pg_dsn) == 0

    # Past their visibility timeout (no longer extended), later runs land them all (a run ends at
    # its first empty poll, which a moto slowed by a busy machine may answer before the last batch).
    assert sqs_queue.wait_until_visible(count, timeout=30) == (count, 0)
    landed = 0
    for _ in range(3):
        counts = assert_ok(run_ingest(*RUN, env=env))
        assert counts["landed"] == counts["deleted"]
        landed += counts["landed"]
        if landed == count:
            break
    assert landed == count
    assert_in_raw_at_least_once(pg_dsn, bodies)
    assert sqs_queue.depth() == (0, 0)


# ---------------------------------------------------------------- visibility extension


def test_slow_load_is_kept_invisible_not_redelivered(pg_dsn, sqs_queue, job_env, spawn):
    """A load that takes 20 s with a 6 s visibility timeout: the keeper extends the held messages
    (when half their timeout is left: 3 s of margin for a machine under load), so neither this
    run's own receivers (two, following) nor anyone else receives them again."""
    count = 10
    bodies = seed(sqs_queue, list(sample.synthetic_events(count)))
    env = job_env(pg_dsn)
    visibility = 6
    args = ("run", "--follow", "--receivers", "2", "--wait-time", "1", "--batch-size", "10")
    proc = spawn(*args, "--visibility-timeout", str(visibility), env=faulty(env, "in_load=20"))
    proc.wait_for("fault: paused at in_load")
    paused = time.monotonic()
    samples = []
    # Two visibility timeouts and a bit, all within the 20 s load (sampling ends 13 s after the
    # pause began, ~7 s before it ends even if a sample is slow): without extension they would
    # be visible again.
    while time.monotonic() - paused < 2 * visibility + 1:
        samples.append(sqs_queue.depth())
        time.sleep(0.25)
    assert raw_count(pg_dsn) == 0, "the load ended during the sampling: it proves nothing"
    assert set(samples) == {(0, count)}, samples
    wait_until(lambda: raw_count(pg_dsn) == count and sqs_queue.depth() == (0, 0), 30, "the slow load to finish")
    proc.signal(signal.SIGTERM)
    result = proc.finish(timeout=30)
    counts = assert_ok(result)
    assert counts["received"] == counts["landed"] == counts["deleted"] == count
    assert counts["redeliveries"] == 0
    assert counts["visibility extended"] >= count
    assert counts["stale receipt handles"] == 0 and counts["delete failures"] == 0
    assert "visibility extended" in result.stderr and "stale receipt handles" not in result.stderr
    assert query(pg_dsn, f"SELECT count(DISTINCT message_id), max(receive_count) FROM {RAW}") == [(count, 1)]  # noqa: S608
    assert_in_raw_at_least_once(pg_dsn, bodies)
