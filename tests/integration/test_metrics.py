"""Observability: /metrics and /healthz of `run --follow --metrics-port`, scraped during a real
run (PostgreSQL, moto over HTTP, dlt), and the health rule on its own; JSON logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, metric, query, scrape, wait_until
from ingest.local import sample
from ingest.local.network import free_port

VISIBLE = '{state="visible"}'


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_and_health_during_a_real_run(pg_dsn, sqs_queue, env_for):
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(40)) == 40
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest",
            "--log-format",
            "json",
            "run",
            "--follow",
            "--wait-time",
            "1",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            "--batch-size",
            "10",
        ],
        cwd=REPO_ROOT,
        env=env_for(pg_dsn),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            code, text = scrape(port) if proc.poll() is None else (0, "")
            if code == 200 and metric(text, "loginvault_messages_deleted_total") == 40:
                break
            time.sleep(0.3)
        assert metric(text, "loginvault_messages_received_total") == 40
        assert metric(text, "loginvault_messages_landed_total") == 40
        assert metric(text, "loginvault_messages_deleted_total") == 40
        assert metric(text, "loginvault_messages_redelivered_total") == 0
        assert metric(text, "loginvault_batch_load_seconds_count") >= 4  # batches of 10
        assert metric(text, "loginvault_last_successful_load_timestamp_seconds") > time.time() - 120
        assert metric(text, "loginvault_last_successful_poll_timestamp_seconds") > time.time() - 120
        for _ in range(100):  # the depth poller's first reading
            if metric(text, "loginvault_queue_messages", '{state="visible"}') is not None:
                break
            time.sleep(0.2)
            _, text = scrape(port)
        # Polled every 15 s from the start of the run: a reading of the 40 messages, or fewer.
        assert 0 <= metric(text, "loginvault_queue_messages", '{state="visible"}') <= 40
        assert 0 <= metric(text, "loginvault_queue_messages", '{state="in_flight"}') <= 40
        assert scrape(port, "/healthz") == (200, "ok\n")
        assert scrape(port, "/nope")[0] == 404
        assert query(pg_dsn, "SELECT count(*) FROM raw.login_events") == [(40,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(records[-1])
    assert any(r["message"].startswith("ingest: received 40, landed 40, deleted 40") for r in records)


def depth_scraped(port: int) -> str | None:
    """The /metrics text once it has the queue's depth."""
    text = scrape(port)[1]
    return text if metric(text, "loginvault_queue_messages", VISIBLE) is not None else None


@pytest.mark.integration
@pytest.mark.slow
def test_dead_letter_queue_depth_shows_on_the_ingest_metrics(pg_dsn, sqs_queue, env_for, spawn):
    """A message SQS moved to the dead-letter queue shows in loginvault_dlq_messages; a queue
    without a RedrivePolicy has no DLQ, and no such metric."""
    assert sample.send_events(sqs_queue.settings, sample.synthetic_events(1)) == 1
    client = sqs_queue.sqs.client
    for _ in range(10):  # received maxReceiveCount times without a delete: SQS moves it to the DLQ
        if sqs_queue.depth() == (0, 0):
            break
        client.receive_message(QueueUrl=sqs_queue.url, VisibilityTimeout=0, WaitTimeSeconds=0)
    assert sqs_queue.depth() == (0, 0)

    plain_url = client.create_queue(QueueName=f"{sqs_queue.name}-plain")["QueueUrl"]
    try:
        for queue_url, dlq_expected in ((sqs_queue.url, True), (plain_url, False)):
            port = free_port()
            args = ("run", "--follow", "--wait-time", "1", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
            proc = spawn(*args, env=env_for(pg_dsn, SQS_QUEUE_URL=queue_url))
            # The DLQ is polled before the queue: once the queue's depth shows, the DLQ's has too.
            text = wait_until(lambda port=port: depth_scraped(port), 60, "the first depth poll")
            assert metric(text, "loginvault_queue_messages", VISIBLE) == 0
            if dlq_expected:
                assert metric(text, "loginvault_dlq_messages", VISIBLE) == 1
                assert metric(text, "loginvault_dlq_messages", '{state="in_flight"}') == 0
            else:
                assert "loginvault_dlq_messages" not in text
            proc.signal(signal.SIGTERM)
            result = proc.finish(timeout=60)
            assert result.returncode == 0, result.stderr
            assert "dead-letter queue depth unavailable" not in result.stderr
    finally:
        client.delete_queue(QueueUrl=plain_url)
