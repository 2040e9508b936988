"""Integration: a setting that cannot be used, from a flag or from the environment (as
deploy/k8s/configmap.yaml sets them), ends `loginvault run` at its start with one `error:` line
naming it and exit 2: nothing is received, nothing hangs, the messages wait in the queue."""

from __future__ import annotations

import socket

import pytest

from conftest import Result, run_ingest
from ingest.local import sample
from ingest.local.network import HOST, free_port

pytestmark = [pytest.mark.integration]

RUN = ("run", "--wait-time", "1")


def assert_setting_refused(result: Result, name: str) -> str:
    """Exit 2, one `error:` line (the last) naming `name`, no traceback; returns the line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    assert name in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def waiting(sqs_queue):
    """Five messages in the queue, to show that a refused setting receives none of them."""
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(5)) == 5
    return sqs_queue


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INGEST_BATCH_SIZE", "-3"),  # hung: `received 5, landed 0` until killed
        ("INGEST_WORKERS", "0"),  # exited 0 having received nothing
        ("INGEST_RECEIVERS", "0"),
        ("INGEST_BATCH_SIZE", "abc"),
        ("LOGINVAULT_LOG_LEVEL", "VERBOSE"),
        ("LOGINVAULT_LOG_FORMAT", "xml"),  # was accepted silently
        ("AWS_RETRY_MODE", "bogus"),
        ("INGEST_LOADER_FILE_FORMAT", "jsonl"),  # a dlt traceback after receiving
        ("INGEST_METRICS_PORT", "99999"),
        ("SQS_VISIBILITY_TIMEOUT", "-1"),
    ],
)
def test_a_bad_variable_is_refused_before_anything_is_received(pg_dsn, waiting, env_for, variable, value):
    result = run_ingest(*RUN, env=env_for(pg_dsn, **{variable: value}), timeout=60)
    line = assert_setting_refused(result, variable)
    assert repr(value) in line or value in line
    assert waiting.depth() == (5, 0)


@pytest.mark.parametrize(
    "args",
    [
        ("--batch-seconds", "-1"),  # was accepted
        ("--retry-budget", "-1"),  # was accepted
        ("--metrics-port", "99999"),  # was an OverflowError
        ("--receivers", "0"),
        ("--workers", "0"),
    ],
    ids=lambda a: " ".join(a),
)
def test_a_bad_flag_is_refused_before_anything_is_received(pg_dsn, waiting, env_for, args):
    result = run_ingest(*RUN, *args, env=env_for(pg_dsn), timeout=60)
    assert_setting_refused(result, args[0])
    assert waiting.depth() == (5, 0)


def test_log_level_in_lower_case_runs(pg_dsn, waiting, env_for):
    result = run_ingest("--log-level", "debug", *RUN, env=env_for(pg_dsn), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "received 5, landed 5, deleted 5" in result.stderr
    assert waiting.depth() == (0, 0)


def test_the_older_names_of_the_receivers_still_work(pg_dsn, waiting, env_for):
    result = run_ingest(*RUN, env=env_for(pg_dsn, INGEST_WORKERS="2"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "received 5, landed 5, deleted 5" in result.stderr


def test_a_metrics_port_in_use_is_one_sentence(pg_dsn, waiting, env_for):
    port = free_port()
    with socket.socket() as taken:
        taken.bind((HOST, port))
        taken.listen()
        args = (*RUN, "--metrics-port", str(port), "--metrics-host", HOST)
        result = run_ingest(*args, env=env_for(pg_dsn), timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.error_lines()
    assert line.startswith(f"error: cannot serve metrics on {HOST}:{port}: Address already in use"), line
    assert result.stderr.rstrip("\n").splitlines()[-1] == line
    assert waiting.depth() == (5, 0)
