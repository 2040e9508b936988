"""Rows under a load id that raw._dlt_loads already records are refused by the database (raw's
load guards: ingest/schema/repeatable/15_raw_loads.sql), tried with the loader's own login: a late
row, a second record of a load, a row straight into a partition, both orders of the race of two
sessions, a snapshot older than the record. Every staged message stays in exactly one mart."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import IsolationLevel
from running import wait_until
from test_hostile_rows import assert_identity, body
from test_lifecycle import day_partitions, land

from conftest import Job, drop_test_database, execute, new_job, query, role_dsn
from ingest import config
from ingest.local import sample
from ingest.schema import bootstrap

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = "INSERT INTO raw.login_events VALUES (%s, %s, now(), now(), 1, 'q', %s, %s)"
RECORD = "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'x', 0, now())"


@pytest.fixture
def job(pg_cluster, template_db, moto_server) -> Iterator[Job]:
    job = new_job(pg_cluster, template_db, moto_server, "late-rows")
    yield job
    drop_test_database(pg_cluster, job.dsn)


def loader(job: Job, isolation: IsolationLevel | None = None) -> psycopg.Connection:
    """A session of the loader's own login (a transaction opens with its first statement)."""
    conn = psycopg.connect(role_dsn(job.dsn, config.LOADER_ROLE))
    conn.isolation_level = isolation
    return conn


def row(load_id: str, user_id: str = "late-sender") -> tuple[str, str, str, str]:
    return (str(uuid.uuid4()), body(user_id), load_id, uuid.uuid4().hex[:14])


def loaded_load(job: Job) -> str:
    (load_id,) = query(job.dsn, "SELECT load_id FROM raw._dlt_loads LIMIT 1")[0]
    return load_id


def in_raw(job: Job, load_id: str) -> int:
    return query(job.dsn, "SELECT count(*) FROM raw.login_events WHERE _dlt_load_id = %s", (load_id,))[0][0]


class Waiting:
    """`statement` run by `conn` on a thread of its own, then committed; `result()` re-raises
    what it raised. `wait_for_lock()` returns once the session waits on a lock."""

    def __init__(self, job: Job, conn: psycopg.Connection, statement: Callable[[], object]) -> None:
        self.job, self.conn, self.error = job, conn, None
        self.pid = conn.info.backend_pid
        self.thread = threading.Thread(target=self._run, args=(statement,))
        self.thread.start()

    def _run(self, statement: Callable[[], object]) -> None:
        try:
            statement()
            self.conn.commit()
        except psycopg.Error as exc:
            self.conn.rollback()
            self.error = exc

    def wait_for_lock(self) -> None:
        waiting = "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' FROM pg_stat_activity WHERE pid = %s"
        wait_until(lambda: query(self.job.dsn, waiting, (self.pid,)) == [(True,)], 60, "the advisory lock wait")

    def result(self) -> psycopg.Error | None:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.error


# ---------------------------------------------------------------- refused, and nothing of it lands


def test_a_late_row_is_refused_and_nothing_of_its_statement_lands(job):
    """Not staged by a later run (stg_sqs__loads takes a load once), so not taken at all: the
    insert fails naming the load, every row of its statement with it. The transform passes, and
    retention drops the day once its messages are in the marts: nothing of the try is left."""
    day = (datetime.now(UTC) - timedelta(days=10)).date()
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute("SELECT raw.ensure_partitions(%s, %s)", (day, day))
    land(job, list(sample.synthetic_events(3, seed=4)), days_ago=10)
    job.transform()
    taken = loaded_load(job)
    before = in_raw(job, taken)
    (received,) = query(job.dsn, "SELECT max(received_at) FROM raw.login_events")[0]
    late, fresh_load = row(taken), row(f"{taken}.fresh")
    with loader(job) as conn:
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation) as refused:
            conn.execute(
                "INSERT INTO raw.login_events VALUES (%s, %s, %s, %s, 1, 'q', %s, %s), (%s, %s, %s, %s, 1, 'q', %s, %s)",
                (*late[:2], received, received, *late[2:], *fresh_load[:2], received, received, *fresh_load[2:]),
            )
    assert str(refused.value).splitlines()[0] == (
        f"load {taken} is already recorded in raw._dlt_loads: no row may be added to it"
    )
    with loader(job) as conn:  # COPY, as dlt appends: the same
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=f"load {taken} is already recorded"):
            with conn.cursor().copy("COPY raw.login_events FROM STDIN") as copy:
                copy.write_row((late[0], late[1], received, received, 1, "q", taken, late[3]))
    assert in_raw(job, taken) == before
    assert query(
        job.dsn, "SELECT count(*) FROM raw.login_events WHERE message_id IN (%s, %s)", (late[0], fresh_load[0])
    ) == [(0,)]

    job.transform()
    assert_identity(job)
    out = job.run("retention", "apply", "--days", "7")
    assert "neither user_logins nor rejected_login_events" not in out.stderr
    assert day not in day_partitions(job, "raw.login_events")


def test_a_load_is_recorded_once(job):
    land(job, list(sample.synthetic_events(2, seed=5)), days_ago=0)
    taken = loaded_load(job)
    with loader(job) as conn, pytest.raises(psycopg.errors.IntegrityConstraintViolation) as again:
        conn.execute(RECORD, (taken,))
    assert f"load {taken} is already recorded in raw._dlt_loads: it may be recorded once" in str(again.value)
    with loader(job) as conn, pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="recorded once"):
        conn.execute(
            "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'x', 0, now()), (%s, 'x', 1, now())",
            ("twice-in-one", "twice-in-one"),
        )
    assert query(job.dsn, "SELECT load_id, count(*) FROM raw._dlt_loads GROUP BY 1") == [(taken, 1)]
    job.transform()
    assert_identity(job)


def test_the_loader_reaches_no_partition_only_the_guarded_parent(job):
    land(job, list(sample.synthetic_events(2, seed=6)), days_ago=0)
    taken = loaded_load(job)
    partitions = [
        p
        for (p,) in query(
            job.dsn, "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'raw.login_events'::regclass"
        )
    ]
    assert "raw.login_events_default" in partitions and len(partitions) > 1
    for partition in partitions:
        for privilege in ("INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER"):
            assert query(
                job.dsn, "SELECT has_table_privilege(%s, %s, %s)", (config.LOADER_ROLE, partition, privilege)
            ) == [(False,)], (partition, privilege)
    today = day_partitions(job, "raw.login_events")[datetime.now(UTC).date()]
    for partition in ("raw.login_events_default", today):
        with loader(job) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(ROW.replace("raw.login_events", partition), row(taken))
    assert in_raw(job, taken) == 2


def test_rows_moved_out_of_the_default_partition_are_not_refused(job):
    """A day's partition made after its rows landed in the default one (of a recorded load):
    they move into it, not through the guarded parent."""
    day = (datetime.now(UTC) - timedelta(days=20)).date()
    landed = land(job, list(sample.synthetic_events(3, seed=7)), days_ago=20)
    with psycopg.connect(role_dsn(job.dsn, config.TRANSFORMER_ROLE), autocommit=True) as conn:
        conn.execute("SELECT raw.ensure_partitions(%s, %s)", (day, day))
    partition = day_partitions(job, "raw.login_events")[day]
    assert query(
        job.dsn, "SELECT tableoid::regclass::text, count(*) FROM raw.login_events WHERE message_id = ANY(%s) GROUP BY 1",
        (landed,),
    ) == [(partition, 3)]  # fmt: skip


# ---------------------------------------------------------------- two sessions


def test_a_record_waits_for_the_rows_of_its_load_in_flight(job):
    """Session A adds a row under X and has not committed; session B records X and commits: B
    waits for A, so a transform meanwhile does not take X, and the next takes all of it."""
    land(job, list(sample.synthetic_events(2, seed=8)), days_ago=0)
    job.transform()
    x = f"{uuid.uuid4().int % 10**9}.000001"
    first, flight = row(x, "in-flight-one"), row(x, "in-flight-two")
    with loader(job) as rows, loader(job) as record:
        rows.execute(ROW, first)
        recording = Waiting(job, record, lambda: record.execute(RECORD, (x,)))
        recording.wait_for_lock()
        job.transform()  # X is not recorded yet: not taken
        assert query(job.dsn, "SELECT count(*) FROM staging.stg_sqs__loads WHERE load_id = %s", (x,)) == [(0,)]
        rows.execute(ROW, flight)
        rows.commit()
        assert recording.result() is None
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE message_id IN (%s, %s)", (first[0], flight[0])) == [
        (2,)
    ]
    assert_identity(job)


def test_a_row_waits_for_the_record_in_flight_then_is_refused(job):
    """Session B records X and has not committed; session A adds a row under X: A waits for B's
    commit, then sees the record and is refused."""
    x = f"{uuid.uuid4().int % 10**9}.000002"
    early = row(x, "early")
    with loader(job) as conn:
        conn.execute(ROW, early)
    with loader(job) as record, loader(job) as rows:
        record.execute(RECORD, (x,))
        adding = Waiting(job, rows, lambda: rows.execute(ROW, row(x)))
        adding.wait_for_lock()
        record.commit()
        refused = adding.result()
    assert isinstance(refused, psycopg.errors.IntegrityConstraintViolation), refused
    assert f"load {x} is already recorded" in str(refused)
    assert in_raw(job, x) == 1
    job.transform()
    assert query(job.dsn, "SELECT count(*) FROM user_logins WHERE message_id = %s", (early[0],)) == [(1,)]
    assert_identity(job)


@pytest.mark.parametrize("isolation", [IsolationLevel.REPEATABLE_READ, IsolationLevel.SERIALIZABLE])
def test_a_snapshot_older_than_the_record_is_refused(job, isolation):
    """A transaction whose snapshot predates X's record would not see it: rows and records are
    taken in READ COMMITTED transactions only."""
    x = f"{uuid.uuid4().int % 10**9}.000003"
    with loader(job) as conn:
        conn.execute(ROW, row(x, "before"))
    with loader(job, isolation) as old:
        old.execute("SELECT count(*) FROM raw._dlt_version")  # the snapshot is taken
        with loader(job) as record:
            record.execute(RECORD, (x,))
        name = isolation.name.replace("_", " ")
        with pytest.raises(psycopg.errors.InvalidTransactionState) as refused:
            old.execute(ROW, row(x))
        assert str(refused.value).splitlines()[0] == (
            f"raw.login_events takes rows in READ COMMITTED transactions only, not {name}:"
            " an older snapshot could miss a recorded load"
        )
    with loader(job, isolation) as old, pytest.raises(psycopg.errors.InvalidTransactionState, match="raw._dlt_loads"):
        old.execute(RECORD, (f"{x}9",))
    assert in_raw(job, x) == 1
    assert query(job.dsn, "SELECT count(*) FROM raw._dlt_loads WHERE load_id LIKE %s", (f"{x}%",)) == [(1,)]


# ---------------------------------------------------------------- the guards themselves


def test_the_transform_takes_the_guards_as_made_and_nothing_in_their_place(job):
    """The tamper check accepts raw's two guards, exactly: a trigger of the same name that runs
    another function is refused like any other."""
    land(job, list(sample.synthetic_events(2, seed=9)), days_ago=0)
    job.transform()
    execute(
        job.dsn,
        "DROP TRIGGER refuse_rows_of_recorded_loads ON raw.login_events;"
        " CREATE TRIGGER refuse_rows_of_recorded_loads AFTER INSERT ON raw.login_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    )
    refused = job.transform(ok=False)
    (line,) = refused.error_lines()
    assert line.startswith("error: refusing to read raw.login_events: it has triggers;"), line


def test_raw_partition_keeps_the_guard(job):
    """`loginvault raw partition` (a database of an earlier version: a plain raw.login_events
    that the bootstrap guarded) moves the rows, then guards the new table."""
    execute(
        job.dsn,
        "ALTER TABLE raw.login_events RENAME TO login_events_new;"
        " CREATE TABLE raw.login_events (LIKE raw.login_events_new INCLUDING DEFAULTS);"
        " DROP TABLE raw.login_events_new CASCADE;"
        " ALTER TABLE raw.login_events OWNER TO loginvault_owner;"
        " GRANT INSERT ON raw.login_events TO loginvault_loader; GRANT SELECT ON raw.login_events TO loginvault_transformer;"
        " GRANT SELECT, DELETE ON raw.login_events TO loginvault_eraser;",
    )
    # The repeatable definitions applied again (as when one of them changes) guard the plain table.
    execute(job.dsn, "DELETE FROM loginvault.schema_definitions")
    bootstrap.bootstrap(job.dsn)
    land(job, list(sample.synthetic_events(2, seed=10)), days_ago=0)
    taken = loaded_load(job)
    assert job.run("raw", "partition").returncode == 0
    assert query(job.dsn, "SELECT relkind FROM pg_class WHERE oid = 'raw.login_events'::regclass") == [("p",)]
    assert in_raw(job, taken) == 2
    with loader(job) as conn, pytest.raises(psycopg.errors.IntegrityConstraintViolation, match=taken):
        conn.execute(ROW, row(taken))
    job.transform()
    assert_identity(job)
