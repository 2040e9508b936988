"""Integration: the transform service's /metrics and /healthz (`transform --every S --metrics-port P`)
scraped during real builds (PostgreSQL, moto over HTTP, the ingest, dbt), a failing build counted.
The health rule and the exposition on their own: tests/unit/test_metrics_health.py."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import metric, query, scrape
from ingest.local import sample
from ingest.local.network import free_port

SUCCESS, FAILURE = '{outcome="success"}', '{outcome="failure"}'


def model(name: str) -> str:
    return f'{{model="{name}"}}'


def scrape_while_running(service, port: int, until) -> tuple[str, float, float]:
    """(text, before, after): the first /metrics text for which until(text) holds, scraped while
    the service runs, and the wall-clock times around that scrape. Fails when the service ends
    first (e.g. its last cycle came and went between two scrapes)."""
    while service.popen.poll() is None:
        before = time.time()
        code, text = scrape(port)
        after = time.time()
        if code == 200 and until(text):
            return text, before, after
        time.sleep(0.1)
    pytest.fail(f"the service ended ({service.popen.returncode}) before the metrics showed it:\n{service.stderr}")


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_of_real_builds(job, spawn):
    events = list(sample.synthetic_events(50))  # event 42 is the malformed one
    valid = [e for e in events if "user_id" in e]
    vault_entries = len({e["ip"] for e in valid}) + len({e["device_id"] for e in valid})
    sent_from = time.time() - 1  # SQS send times are whole milliseconds
    job.run("seed", "--count", "50")
    sent_until = time.time()
    job.run("run", "--wait-time", "1")

    port = free_port()
    started = time.time()
    service = spawn(
        "transform", "--every", "2", "--cycles", "3", "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        "build", "--warn-error", env=job.env,
    )  # fmt: skip
    text, before, after = scrape_while_running(
        service, port, lambda t: (metric(t, "loginvault_transform_builds_total", SUCCESS) or 0) >= 1
    )

    successes = metric(text, "loginvault_transform_builds_total", SUCCESS)
    assert metric(text, "loginvault_transform_builds_total", FAILURE) == 0
    assert metric(text, "loginvault_transform_build_duration_seconds_count") == successes
    assert metric(text, "loginvault_transform_build_duration_seconds_bucket", '{le="1800.0"}') == successes
    assert started < metric(text, "loginvault_transform_last_success_timestamp_seconds") <= after
    assert metric(text, "loginvault_transform_interval_seconds") == 2
    # Everything was new to the first build; the later ones found nothing to add.
    expected = {"user_logins": len(valid), "rejected_login_events": 1, "vault": vault_entries}
    for name, rows in expected.items():
        assert metric(text, "loginvault_transform_rows_added_total", model(name)) == rows, name
        assert metric(text, "loginvault_transform_rows_added", model(name)) == (rows if successes == 1 else 0), name
    # now − the newest send time in the mart: between the seed and the scrape.
    age = metric(text, "loginvault_user_logins_newest_row_age_seconds")
    assert before - sent_until <= age <= after - sent_from

    result = service.finish(timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"transform: metrics on http://127.0.0.1:{port}/metrics" in result.stderr
    assert result.stderr.count("transform: dbt build ok") == 3, result.stderr
    assert query(job.dsn, "SELECT count(*) FROM user_logins") == [(len(valid),)]
    assert query(job.dsn, "SELECT count(*) FROM pii.vault") == [(vault_entries,)]


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_build_is_counted_as_a_failure(job, spawn):
    job.run("seed", "--count", "5")
    job.run("run", "--wait-time", "1")
    job.transform("run")  # the models only: their rows are yet to be tested
    ((device_id,),) = query(job.dsn, "SELECT body::jsonb ->> 'device_id' FROM raw.login_events LIMIT 1")
    # Cleartext PII in the mart: the build's no_cleartext_pii test fails.
    assert query(job.dsn, "UPDATE user_logins SET locale = %s RETURNING 1", (device_id,))

    port = free_port()
    service = spawn(
        "transform", "--every", "60", "--cycles", "2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        "build", env=job.env,
    )  # fmt: skip
    text, _, _ = scrape_while_running(
        service, port, lambda t: metric(t, "loginvault_transform_builds_total", FAILURE) == 1
    )
    assert metric(text, "loginvault_transform_builds_total", SUCCESS) == 0
    assert metric(text, "loginvault_transform_build_duration_seconds_count") == 1
    assert metric(text, "loginvault_transform_last_success_timestamp_seconds") == 0
    for name in ("user_logins", "rejected_login_events", "vault"):
        assert metric(text, "loginvault_transform_rows_added_total", model(name)) == 0, name
    assert "loginvault_user_logins_newest_row_age_seconds" not in text  # no build has succeeded
    service.signal(signal.SIGTERM)
    result = service.finish(timeout=120)
    assert result.returncode == 1, result.stderr
    assert "transform: dbt build failed (exit 1)" in result.stderr
