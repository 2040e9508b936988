"""Integration: failures lose nothing, and the errors a user can cause end in one clear sentence.

A failed load must delete nothing (SQS redelivers, nothing is lost); a user error (bad endpoint,
queue, DSN, password, arguments) must exit non-zero with one `error: …` line and no traceback,
without printing the DSN's password.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg.conninfo
import psycopg2
import psycopg2.errors
import pytest

from conftest import Result, execute, query, role_dsn, run_ingest, wait_until
from ingest import config
from ingest.consumer import raw_loader
from ingest.local import sample
from ingest.local.network import free_port
from ingest.local.pg_cluster import ADMIN_USER

pytestmark = [pytest.mark.integration]

RUN = ("run", "--wait-time", "1")


def assert_clean_error(result: Result, *secrets: str, contains: str = "", code: int = 1) -> str:
    """Exit `code`, exactly one `error:` line (the last one), no traceback, no secret; returns the line."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = result.error_lines()
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    for secret in secrets:
        assert secret not in result.stderr
        assert secret not in result.stdout
    assert contains in errors[0], errors[0]
    return errors[0]


def landed_ids(dsn: str) -> set[str]:
    return {r[0] for r in query(dsn, "SELECT message_id FROM raw.login_events")}


def seed(queue, count: int = 10) -> None:
    assert sample.send_events(queue.settings, sample.synthetic_events(count)) == count


# ---------------------------------------------------------------- failed loads delete nothing


@pytest.mark.slow
def test_revoked_insert_deletes_nothing_then_recovers(pg_dsn, sqs_queue, env_for):
    seed(sqs_queue)
    table = f"{config.RAW_SCHEMA}.{config.RAW_TABLE}"
    execute(pg_dsn, f"REVOKE INSERT ON {table} FROM {config.LOADER_ROLE}")
    failed = run_ingest(*RUN, "--retry-budget", "2", "--visibility-timeout", "2", env=env_for(pg_dsn))
    assert_clean_error(failed, contains="may not insert")
    assert sqs_queue.wait_until_visible(10) == (10, 0)  # back in the queue, none deleted
    assert landed_ids(pg_dsn) == set()

    execute(pg_dsn, f"GRANT INSERT ON {table} TO {config.LOADER_ROLE}")
    code, _, stderr = run_ingest(*RUN, env=env_for(pg_dsn))
    assert code == 0, stderr
    assert len(landed_ids(pg_dsn)) == 10
    assert sqs_queue.depth() == (0, 0)


@pytest.mark.slow
def test_load_failing_after_receive_deletes_nothing_then_recovers(pg_dsn, sqs_queue, env_for):
    """Messages are received and in flight when every insert fails: the batch is bisected, no
    message loads alone either, so the cause is not a refused message: exit 1, nothing deleted."""
    seed(sqs_queue)
    # Passes the loader's pre-flight (it may insert) but rejects every row at load time.
    execute(pg_dsn, "ALTER TABLE raw.login_events ADD CONSTRAINT reject_all CHECK (false) NOT VALID")
    failed = run_ingest(*RUN, "--retry-budget", "2", "--visibility-timeout", "2", env=env_for(pg_dsn))
    error = assert_clean_error(failed, contains="loading into raw failed: every message was refused")
    assert "reject_all" in error
    # The database's DETAIL quotes the failing row: none of it may reach the log.
    for event in sample.synthetic_events(10):
        for value in (event.get("user_id"), event.get("ip"), event.get("device_id")):
            assert value is None or value not in failed.stderr
    visible, in_flight = sqs_queue.depth()
    assert visible + in_flight == 10
    assert landed_ids(pg_dsn) == set()

    execute(pg_dsn, "ALTER TABLE raw.login_events DROP CONSTRAINT reject_all")
    assert sqs_queue.wait_until_visible(10) == (10, 0)
    code, _, stderr = run_ingest(*RUN, env=env_for(pg_dsn))
    assert code == 0, stderr
    assert "landed 10, deleted 10" in stderr
    assert len(landed_ids(pg_dsn)) == 10
    assert sqs_queue.depth() == (0, 0)


def test_parallel_first_loads_on_a_fresh_database_refuse_nothing(pg_dsn, sqs_queue, env_for):
    """Two loaders whose first loads overlap (each paused 1 s inside the load) on a database
    where dlt has created nothing yet: no catalog race is mistaken for a refused row."""
    seed(sqs_queue, 20)
    env = {**env_for(pg_dsn), "LOGINVAULT_FAULT_PAUSE": "in_load=1"}
    args = ("--loaders", "2", "--receivers", "2", "--batch-size", "5", "--batch-seconds", "0.1")
    code, _, stderr = run_ingest(*RUN, *args, env=env)
    assert code == 0, stderr
    # Every load attempt committed a load of its own: no retry, no bisection. (How many loads
    # depends on the batch timer and on a message moto may hand to both receivers: 4 or more.)
    loads = query(pg_dsn, "SELECT count(DISTINCT _dlt_load_id) FROM raw.login_events")[0][0]
    assert stderr.count("fault: paused at in_load") == loads >= 4, stderr
    assert "refused" not in stderr and "cannot be loaded" not in stderr, stderr
    assert len(landed_ids(pg_dsn)) == 20
    assert sqs_queue.depth() == (0, 0)


def test_concurrent_create_is_retried_not_taken_for_a_refused_row(pg_dsn):
    """Two sessions creating the same table (workers starting on a fresh database) fail one of
    them with a unique violation on a catalog index: retryable, not a row refusal (bisection,
    DLQ). A unique violation on a user table still is one."""
    first, second = psycopg2.connect(pg_dsn), psycopg2.connect(pg_dsn)
    try:
        first.cursor().execute("CREATE TABLE public.race (x int)")  # uncommitted: the second waits
        with ThreadPoolExecutor(1) as pool:
            racing = pool.submit(second.cursor().execute, "CREATE TABLE public.race (x int)")
            waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
            wait_until(lambda: query(pg_dsn, waiting, (second.get_backend_pid(),)) == [(True,)], 30, "the lock wait")
            first.commit()
            with pytest.raises(psycopg2.Error) as race:
                racing.result(timeout=10)
        second.rollback()
        cursor = second.cursor()
        cursor.execute("CREATE TABLE public.uniq (x int PRIMARY KEY); INSERT INTO public.uniq VALUES (1)")
        with pytest.raises(psycopg2.IntegrityError) as duplicate:
            cursor.execute("INSERT INTO public.uniq VALUES (1)")
    finally:
        first.close()
        second.close()
    # The race itself (a catalog unique violation), not the plain "already exists" of a second
    # CREATE that came after the first had committed.
    assert isinstance(race.value, psycopg2.errors.UniqueViolation), race.value
    assert raw_loader._retryable(race.value) and not raw_loader._refuses_rows(race.value), race.value
    assert raw_loader._refuses_rows(duplicate.value)


@pytest.mark.slow
def test_stopped_database_deletes_nothing_then_recovers(own_cluster, sqs_queue, env_for):
    seed(sqs_queue)
    dsn = own_cluster.dsn()
    own_cluster.stop()
    failed = run_ingest(*RUN, "--retry-budget", "2", "--visibility-timeout", "2", env=env_for(dsn))
    assert_clean_error(failed, own_cluster.password, contains="cannot connect to PostgreSQL")
    assert sqs_queue.wait_until_visible(10) == (10, 0)  # back in the queue, none deleted

    own_cluster.start()
    code, _, stderr = run_ingest(*RUN, env=env_for(dsn))
    assert code == 0, stderr
    assert len(landed_ids(dsn)) == 10
    assert sqs_queue.depth() == (0, 0)


# ---------------------------------------------------------------- user errors


def test_unreachable_sqs_endpoint(pg_dsn, env_for):
    closed = f"http://127.0.0.1:{free_port()}"
    env = env_for(pg_dsn, SQS_ENDPOINT_URL=closed, SQS_QUEUE_URL=f"{closed}/123456789012/q")
    result = run_ingest(*RUN, env=env)
    assert_clean_error(result, dsn_password(pg_dsn), contains=f"cannot reach the SQS endpoint {closed}")


def test_missing_queue(pg_dsn, sqs_queue, env_for):
    url = f"{sqs_queue.endpoint_url}/123456789012/no-such-queue-{sqs_queue.name}"
    result = run_ingest(*RUN, env=env_for(pg_dsn, SQS_QUEUE_URL=url))
    assert_clean_error(result, dsn_password(pg_dsn), contains=f"the SQS queue {url} does not exist")


def test_missing_settings(pg_dsn, env_for):
    env = env_for(pg_dsn)
    del env["SQS_QUEUE_URL"]
    assert_clean_error(run_ingest(*RUN, env=env), dsn_password(pg_dsn), contains="SQS_QUEUE_URL is not set")
    env = env_for(pg_dsn)
    del env["LOGINVAULT_LOADER_DSN"]  # PG_DSN (the admin) is no stand-in for the ingest's login
    assert_clean_error(run_ingest(*RUN, env=env), contains="LOGINVAULT_LOADER_DSN is not set")
    env = env_for(pg_dsn)
    del env["PG_DSN"]
    assert_clean_error(run_ingest("bootstrap", env=env), contains="PG_DSN is not set")


def dsn_password(dsn: str) -> str:
    password = psycopg.conninfo.conninfo_to_dict(dsn)["password"]
    assert len(password) >= 8  # long enough not to turn up in a message by chance
    return password


def _bad_dsns(pg_dsn: str) -> dict[str, tuple[str, str, str]]:
    """name → (the ingest's DSN, password that must not leak, expected part of the error)."""
    closed = free_port()
    loader = role_dsn(pg_dsn, config.LOADER_ROLE)
    params = psycopg.conninfo.conninfo_to_dict(loader)
    login = params["user"]
    return {
        "unreachable": (
            f"postgresql://{login}:closed-port-pw@127.0.0.1:{closed}/loginvault",
            "closed-port-pw",
            f"cannot connect to PostgreSQL at postgresql://{login}:***@",
        ),
        "wrong-password": (
            loader.replace(params["password"], "wrong-pw-123"),
            "wrong-pw-123",
            "password authentication failed",
        ),
        "not-a-url": (
            f"host=127.0.0.1 port={params['port']} user={login} password=kv-pw-456",
            "kv-pw-456",
            "LOGINVAULT_LOADER_DSN must be a URL",
        ),
        # The admin is a superuser: no workload may run as one.
        "superuser": (pg_dsn, dsn_password(pg_dsn), f"logs in as {ADMIN_USER}, a superuser"),
    }


@pytest.mark.parametrize("case", ["unreachable", "wrong-password", "not-a-url", "superuser"])
def test_bad_dsn_is_one_sentence_and_loses_nothing(case, pg_dsn, sqs_queue, env_for):
    seed(sqs_queue, 3)
    dsn, password, expected = _bad_dsns(pg_dsn)[case]
    result = run_ingest(*RUN, env=env_for(pg_dsn, LOGINVAULT_LOADER_DSN=dsn))
    assert_clean_error(result, password, contains=expected)
    assert sqs_queue.depth() == (3, 0)


def test_bad_dbt_command_is_one_sentence(pg_dsn, env_for):
    result = run_ingest("transform", "nosuch", env=env_for(pg_dsn))
    assert_clean_error(result, contains="dbt nosuch: No such command 'nosuch'", code=2)
    service = run_ingest("transform", "--every", "1", "nosuch", env=env_for(pg_dsn))
    assert_clean_error(service, contains="dbt nosuch: No such command", code=2)  # not retried every cycle


def test_seed_missing_file_is_one_sentence(sqs_queue, env_for, tmp_path):
    result = run_ingest("seed", "--file", str(tmp_path / "nope.json"), env=env_for())
    assert_clean_error(result, contains="no such file")
    assert sqs_queue.depth() == (0, 0)


def test_bootstrap_with_wrong_password(pg_cluster, sqs_queue, env_for):
    dsn = pg_cluster.dsn(config.DATABASE_NAME).replace(pg_cluster.password, "nope-pw-789")
    assert_clean_error(
        run_ingest("bootstrap", env=env_for(dsn)), "nope-pw-789", contains="cannot connect to PostgreSQL"
    )
