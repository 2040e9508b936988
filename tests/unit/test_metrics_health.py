"""Unit: the health rules and the exposition of both services' /metrics and /healthz, on a real
HTTP endpoint on a free port, fed without any database or queue."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

from scraping import metric, scrape

from ingest.consumer import Stats
from ingest.consumer.metrics import MetricsServer
from ingest.local.network import free_port
from ingest.metrics_http import MetricsEndpoint
from ingest.transform.metrics import TransformMetrics
from ingest.transform.runner import Build

SUCCESS, FAILURE = '{outcome="success"}', '{outcome="failure"}'


def seconds_in(body: str, prefix: str) -> int:
    """The age a /healthz refusal states (`<prefix>N s…`): the clock may have ticked since it was set."""
    assert body.startswith(prefix), body
    return int(re.match(r"(\d+) s", body[len(prefix) :]).group(1))


def model(name: str) -> str:
    return f'{{model="{name}"}}'


def test_healthz_fails_when_no_poll_succeeded_recently():
    stats = Stats()
    fake_ingest = SimpleNamespace(stats=stats, load_observers=[], queue=SimpleNamespace(depth=lambda: (3, 1)))
    port = free_port()
    with MetricsServer(fake_ingest, port, "127.0.0.1", max_poll_age=30):
        assert scrape(port, "/healthz")[0] == 200  # just started: within the first max age
        stats.last_poll_at = time.time() - 10
        assert scrape(port, "/healthz") == (200, "ok\n")
        stats.last_poll_at = time.time() - 31
        code, body = scrape(port, "/healthz")
        assert code == 503 and 31 <= seconds_in(body, "no successful poll for ") < 60  # past the 30 s max age
        # Liveness does not follow SQS: an outage makes the pod unready, it does not restart it.
        assert scrape(port, "/livez") == (200, "ok\n")
        stats.received, stats.refused = 7, 2
        _, text = scrape(port)
        assert metric(text, "loginvault_messages_received_total") == 7
        assert metric(text, "loginvault_messages_refused_total") == 2


def test_health_and_exposition_follow_the_builds():
    """No database: the rule of /healthz and what /metrics shows after each kind of build."""
    metrics = TransformMetrics(interval=10)
    port = free_port()
    with MetricsEndpoint(metrics.registry, metrics.health, port, "127.0.0.1"):
        assert scrape(port, "/healthz") == (200, "ok\n")  # young: within 2 intervals of the start
        metrics.started = time.time() - 21
        code, body = scrape(port, "/healthz")
        assert code == 503 and 21 <= seconds_in(body, "no successful build in the ") < 60  # past 2 intervals

        rows = {"user_logins": 7, "vault": 2, "stg_sqs__login_events": 8}
        metrics.observe(Build(ok=True, seconds=3.0, finished_at=time.time() - 5, rows_added=rows))
        assert scrape(port, "/healthz") == (200, "ok\n")
        metrics.observe(Build(ok=False, seconds=120.0, finished_at=time.time()))
        assert scrape(port, "/healthz") == (200, "ok\n")  # one failure: the alert's business, not a restart's
        _, text = scrape(port)
        assert metric(text, "loginvault_transform_builds_total", SUCCESS) == 1
        assert metric(text, "loginvault_transform_builds_total", FAILURE) == 1
        assert metric(text, "loginvault_transform_build_duration_seconds_bucket", '{le="5.0"}') == 1
        assert metric(text, "loginvault_transform_build_duration_seconds_bucket", '{le="120.0"}') == 2
        assert metric(text, "loginvault_transform_rows_added", model("user_logins")) == 7
        assert metric(text, "loginvault_transform_rows_added", model("rejected_login_events")) == 0
        assert "stg_sqs__login_events" not in text  # the marts and the vault only
        assert "loginvault_user_logins_newest_row_age_seconds" not in text  # no database to ask

        metrics.observe(Build(ok=True, seconds=2.0, finished_at=time.time(), rows_added={"user_logins": 3}))
        _, text = scrape(port)
        assert metric(text, "loginvault_transform_rows_added", model("user_logins")) == 3
        assert metric(text, "loginvault_transform_rows_added", model("vault")) == 0
        assert metric(text, "loginvault_transform_rows_added_total", model("user_logins")) == 10
        assert metric(text, "loginvault_transform_rows_added_total", model("vault")) == 2

        metrics.last_success = time.time() - 31  # more than 3 intervals ago
        code, body = scrape(port, "/healthz")
        assert code == 503 and 31 <= seconds_in(body, "no successful build for ") < 60  # past 3 intervals
