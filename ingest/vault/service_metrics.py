"""Prometheus metrics and the health check of the recovery service (`recovery serve
--metrics-port P`): requests served by kind and outcome, budget refusals, the age of the oldest
request the service has yet to take, and when it last polled. /healthz: 200 while the last poll
of the request table succeeded within max(60 s, 3 poll intervals), 503 otherwise."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge

# The names the alert rules and the dashboard use (tests/unit/test_monitoring.py checks them).
METRIC_NAMES = (
    "loginvault_recovery_requests_total",
    "loginvault_recovery_errors_total",
    "loginvault_recovery_budget_refusals_total",
    "loginvault_recovery_oldest_waiting_request_seconds",
    "loginvault_recovery_waiting_requests",
    "loginvault_recovery_timed_out_requests",
    "loginvault_recovery_last_poll_timestamp_seconds",
)


class ServiceMetrics:
    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loginvault_recovery_requests", "Requests served, by kind and outcome", ("kind", "outcome"),
            registry=self.registry,
        )  # fmt: skip
        self.refusals = Counter(
            "loginvault_recovery_budget_refusals", "Lookups refused over a login's daily budget", registry=self.registry
        )
        self.errors = Counter(
            "loginvault_recovery_errors",
            "Requests the service could not serve (rolled back: unanswered, unaudited, tried again)",
            registry=self.registry,
        )
        self.oldest = Gauge(
            "loginvault_recovery_oldest_waiting_request_seconds",
            "Age of the oldest request the service has yet to take (0 when none)",
            registry=self.registry,
        )
        self.waiting = Gauge(
            "loginvault_recovery_waiting_requests", "Requests the service has yet to take", registry=self.registry
        )
        self.timed_out = Gauge(
            "loginvault_recovery_timed_out_requests",
            "Requests their asker cancelled unanswered in the last 10 minutes (its timeout ran out)",
            registry=self.registry,
        )
        self.last_poll = Gauge(
            "loginvault_recovery_last_poll_timestamp_seconds",
            "When the service last read the request table successfully (Unix time)",
            registry=self.registry,
        )
        self.max_poll_age = max(60.0, 3 * poll_seconds)
        self._lock = threading.Lock()
        self._last_poll = time.monotonic()  # a fresh service is healthy until its first poll is due
        self._serving = 0  # a long erasure in hand is not a hung service

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self._serving += 1
        try:
            yield
        finally:
            with self._lock:
                self._serving -= 1
                self._last_poll = time.monotonic()

    def served(self, kind: str, outcome: str, waited_seconds: float) -> None:
        self.requests.labels(kind, outcome).inc()
        if outcome == "over_budget":
            self.refusals.inc()

    def failed(self) -> None:
        self.errors.inc()

    def queue(self, waiting: int, oldest_seconds: float, timed_out: int) -> None:
        self.waiting.set(waiting)
        self.oldest.set(oldest_seconds)
        self.timed_out.set(timed_out)

    def polled(self) -> None:
        with self._lock:
            self._last_poll = time.monotonic()
        self.last_poll.set(time.time())

    def health(self) -> tuple[bool, str]:
        with self._lock:
            age = time.monotonic() - self._last_poll
            serving = self._serving > 0
        if age > self.max_poll_age and not serving:
            return False, f"no successful poll of the request table for {age:.0f} s"
        return True, "ok"
