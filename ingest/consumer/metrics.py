"""Prometheus metrics and a health check for `run --follow --metrics-port P`.

/metrics: the run's counters (received, landed, deleted, redelivered, refused, released, …),
a histogram of batch load seconds, the time of the last successful load and poll, and the
depths of the queue and of its dead-letter queue as SQS approximates them. /healthz: 200 while polls succeed, 503 when none has
for `max_poll_age` seconds (a stuck or disconnected worker). No message content is exposed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.consumer import Consumer
from ingest.consumer.sqs import Queue, dead_letter_queue
from ingest.metrics_http import MetricsEndpoint

log = logging.getLogger(__name__)

COUNTERS = {
    "received": ("loginvault_messages_received", "SQS deliveries received"),
    "landed": ("loginvault_messages_landed", "Messages committed to raw.login_events"),
    "deleted": ("loginvault_messages_deleted", "Messages deleted from the queue after their load"),
    "redeliveries": ("loginvault_messages_redelivered", "Deliveries with ApproximateReceiveCount > 1"),
    "refused": ("loginvault_messages_refused", "Messages the database refused (left for the DLQ)"),
    "released": ("loginvault_messages_released", "Messages made visible again unloaded (at a stop)"),
    "delete_failures": ("loginvault_delete_failures", "DeleteMessageBatch entries that failed"),
    "extended": ("loginvault_visibility_extensions", "Visibility timeouts extended during a long load"),
    "stale_handles": ("loginvault_stale_receipt_handles", "Receipt handles found stale when extending"),
}


class IngestCollector(Collector):
    """Reads the run's Stats at scrape time, and the depths of the queue and its dead-letter
    queue that a poller thread keeps fresh."""

    def __init__(self, ingest: Consumer, depth_interval: float = 15.0) -> None:
        self.ingest = ingest
        self.depth: tuple[int, int] | None = None
        self.dlq_depth: tuple[int, int] | None = None
        self._dlq: Queue | None = None
        self._dlq_warned = False
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_depth, args=(depth_interval,), daemon=True, name="depth")
        self._poller.start()

    def _poll_depth(self, interval: float) -> None:
        while True:
            self._poll_dlq_depth()  # first: once the queue's depth shows, so has the DLQ's (if any)
            try:
                self.depth = self.ingest.queue.depth()
            except Exception as exc:  # the next scrape shows the last known depth
                log.debug("queue depth unavailable: %s", exc)
            if self._stop.wait(interval):
                return

    def _poll_dlq_depth(self) -> None:
        """The DLQ's depth; the DLQ is found through the queue's RedrivePolicy (looked for again
        each poll until there is one: without it, no DLQ and no metric). A failure (e.g. a role
        without GetQueueAttributes on the DLQ) is said once at WARNING, then at DEBUG: an alert
        on the DLQ would otherwise be blind without a word."""
        try:
            if self._dlq is None:
                if "RedrivePolicy" not in self.ingest.queue.attributes():
                    return
                self._dlq = dead_letter_queue(self.ingest.queue)
            self.dlq_depth = self._dlq.depth()
        except Exception as exc:
            log.log(
                logging.DEBUG if self._dlq_warned else logging.WARNING, "dead-letter queue depth unavailable: %s", exc
            )
            self._dlq_warned = True

    def stop(self) -> None:
        self._stop.set()

    def collect(self) -> Iterator[Metric]:
        stats = self.ingest.stats
        for attribute, (name, documentation) in COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=getattr(stats, attribute))
        yield GaugeMetricFamily(
            "loginvault_last_successful_load_timestamp_seconds",
            "Unix time of the last committed load (0: none yet)",
            value=stats.last_load_at or 0,
        )
        yield GaugeMetricFamily(
            "loginvault_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful ReceiveMessage (0: none yet)",
            value=stats.last_poll_at or 0,
        )
        if self.depth is not None:
            depth = GaugeMetricFamily(
                "loginvault_queue_messages", "Messages in the queue (SQS's approximation)", labels=["state"]
            )
            depth.add_metric(["visible"], self.depth[0])
            depth.add_metric(["in_flight"], self.depth[1])
            yield depth
        if self.dlq_depth is not None:
            dlq = GaugeMetricFamily(
                "loginvault_dlq_messages",
                "Messages in the dead-letter queue (SQS's approximation); absent without a RedrivePolicy",
                labels=["state"],
            )
            dlq.add_metric(["visible"], self.dlq_depth[0])
            dlq.add_metric(["in_flight"], self.dlq_depth[1])
            yield dlq


class MetricsServer:
    """The /metrics and /healthz endpoints of one ingest run, on a thread of their own."""

    def __init__(self, ingest: Consumer, port: int, host: str = "0.0.0.0", max_poll_age: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        self.collector = IngestCollector(ingest)
        self.registry.register(self.collector)
        load_seconds = Histogram(
            "loginvault_batch_load_seconds",
            "Seconds to load one micro-batch into raw (dlt run, COPY, commit)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        ingest.load_observers.append(load_seconds.observe)
        started = time.time()

        def health() -> tuple[bool, str]:
            age = time.time() - (ingest.stats.last_poll_at or started)
            return age <= max_poll_age, f"no successful poll for {age:.0f} s"

        self.endpoint = MetricsEndpoint(self.registry, health, port, host)

    def __enter__(self) -> MetricsServer:
        self.endpoint.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.endpoint.__exit__(*exc)
        self.collector.stop()
