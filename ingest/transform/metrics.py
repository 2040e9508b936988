"""Prometheus metrics and a health check for the transform service,
`transform --every S --metrics-port P`.

/metrics: builds by outcome, their durations, the time of the last successful one, the rows it
added to each mart and the vault, and how old the newest `user_logins` row is. /healthz: 200
while the last successful build is recent (at most 3 intervals old; before the first one, while
the service is younger than 2 intervals), 503 otherwise. A failed build alone does not make it
unhealthy: a restart does not mend a failing data test, the alerts report it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest import config, db
from ingest.metrics_http import MetricsEndpoint
from ingest.transform.runner import Build

log = logging.getLogger(__name__)

# The models whose rows are counted: the two marts and the vault (dbt's node names).
MODELS = ("user_logins", "rejected_login_events", "vault")
# Incremental builds take seconds, a first build or a full refresh of a large raw minutes.
BUILD_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800)
STALE_INTERVALS = 3  # /healthz: 503 when the last success is older than this many intervals
STARTUP_INTERVALS = 2  # …and before the first success, once the service is older than this


def newest_mart_sent_at(dsn: str, mart_schema: str) -> float | None:
    """The SQS send time (Unix) of the newest row of the staging batch that last reached
    user_logins, or None when the mart is empty.

    Not max(sent_at) over the mart: the mart has only a date (create_date), and neither it nor
    staging has an index on sent_at, so that would read every row each cycle. Staging is indexed
    on _transformed_at (one value per build), both tables on message_id. First the batch: the
    _transformed_at index walked backwards to the first row with a mart row. Then its newest row
    that reached the mart: the batch's rows through the same index, each looked up in the mart's
    index by a correlated EXISTS (a join would be planned as a scan of the whole mart). The
    batch's value is passed as a parameter, so the planner sizes the batch from the statistics.
    The cost follows the size of a build, not of the tables. A message sent long ago and
    delivered late may be the newest of its batch: the caller keeps the highest value it saw.
    """
    import psycopg
    from psycopg import sql

    mart = sql.Identifier(mart_schema)
    last_batch = sql.SQL(
        "SELECT s._transformed_at FROM staging.stg_sqs__login_events AS s"
        " WHERE EXISTS (SELECT FROM {mart}.user_logins AS u WHERE u.message_id = s.message_id)"
        " ORDER BY s._transformed_at DESC LIMIT 1"
    ).format(mart=mart)
    newest = sql.SQL(
        "SELECT extract(epoch FROM max(CASE WHEN EXISTS ("
        "SELECT FROM {mart}.user_logins AS u WHERE u.message_id = s.message_id) THEN s.sent_at END))::float8"
        " FROM staging.stg_sqs__login_events AS s WHERE s._transformed_at = %s"
    ).format(mart=mart)
    # options="": not PGOPTIONS, which holds the keys for dbt in this process (db.connect).
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True, options="") as conn:
        batch = conn.execute(last_batch).fetchone()
        if batch is None:
            return None
        row = conn.execute(newest, batch).fetchone()  # an aggregate: always one row
        sent_at: float | None = None if row is None else row[0]
        return sent_at


class TransformMetrics(Collector):
    """The service's state, updated by `observe` after each build (the service's thread) and
    read by scrapes (the server's threads): one lock, so a scrape sees one build's figures."""

    def __init__(self, interval: float, dsn: str | None = None, mart_schema: str = "public") -> None:
        self.interval = interval
        self.dsn = dsn
        self.mart_schema = mart_schema
        self.started = time.time()
        self.last_success: float | None = None
        self.builds = {"success": 0, "failure": 0}
        self.rows_added = dict.fromkeys(MODELS, 0)
        self.rows_added_total = dict.fromkeys(MODELS, 0)
        self.newest_sent_at: float | None = None
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.build_seconds = Histogram(
            "loginvault_transform_build_duration_seconds",
            "Seconds per dbt build of the transform service (failed builds included)",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )

    def observe(self, build: Build) -> None:
        self.build_seconds.observe(build.seconds)
        newest = self._newest_sent_at() if build.ok else None
        with self._lock:
            self.builds["success" if build.ok else "failure"] += 1
            if not build.ok:
                return
            self.last_success = build.finished_at
            for model in MODELS:
                self.rows_added[model] = build.rows_added.get(model, 0)
                self.rows_added_total[model] += self.rows_added[model]
            if newest is not None:
                self.newest_sent_at = max(newest, self.newest_sent_at or newest)

    def _newest_sent_at(self) -> float | None:
        if self.dsn is None:
            return None
        try:
            return newest_mart_sent_at(self.dsn, self.mart_schema)
        except Exception as exc:  # the gauge keeps its last value; the build itself succeeded
            log.warning("transform: newest user_logins row unavailable: %s", db.first_line(exc))
            return None

    def health(self) -> tuple[bool, str]:
        now = time.time()
        with self._lock:
            last = self.last_success
        if last is None:
            age = now - self.started
            return age <= STARTUP_INTERVALS * self.interval, f"no successful build in the {age:.0f} s since the start"
        age = now - last
        return age <= STALE_INTERVALS * self.interval, f"no successful build for {age:.0f} s"

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        with self._lock:
            builds = CounterMetricFamily(
                "loginvault_transform_builds", "dbt builds of the transform service", labels=["outcome"]
            )
            for outcome, count in self.builds.items():
                builds.add_metric([outcome], count)
            yield builds
            yield GaugeMetricFamily(
                "loginvault_transform_last_success_timestamp_seconds",
                "Unix time the last successful build ended (0: none yet)",
                value=self.last_success or 0,
            )
            yield GaugeMetricFamily(
                "loginvault_transform_interval_seconds",
                "The service's build interval (--every): the unit of the staleness alert",
                value=self.interval,
            )
            added = GaugeMetricFamily(
                "loginvault_transform_rows_added", "Rows the last successful build added", labels=["model"]
            )
            added_total = CounterMetricFamily(
                "loginvault_transform_rows_added", "Rows the successful builds added", labels=["model"]
            )
            for model in MODELS:
                added.add_metric([model], self.rows_added[model])
                added_total.add_metric([model], self.rows_added_total[model])
            yield added
            yield added_total
            if self.newest_sent_at is not None:
                yield GaugeMetricFamily(
                    "loginvault_user_logins_newest_row_age_seconds",
                    "Seconds since the SQS send time of the newest user_logins row seen after a build",
                    value=max(0.0, now - self.newest_sent_at),
                )


@contextmanager
def serving(
    interval: float, port: int, host: str = "0.0.0.0", mart_schema: str = "public"
) -> Iterator[TransformMetrics]:
    """The service's /metrics and /healthz while the `with` block runs; pass its `observe` to
    transform.run_every. The newest-row query runs as the transformer, as dbt does."""
    metrics = TransformMetrics(interval, db.role_dsn(config.TRANSFORMER_ROLE), mart_schema)
    with MetricsEndpoint(metrics.registry, metrics.health, port, host):
        log.info("transform: metrics on http://%s:%d/metrics, health on /healthz", host, port)
        yield metrics
