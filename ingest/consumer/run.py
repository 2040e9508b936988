"""`loginvault run`: the ingest as a process. Pre-flight checks of the queue and of the ingest's
own login, the loaders, the consumer with its signals and (optionally) its metrics server."""

from __future__ import annotations

import logging

from ingest import config, db
from ingest.consumer import Consumer, Stats
from ingest.consumer.raw_loader import RawLoader
from ingest.consumer.sqs import Queue
from ingest.settings import RunSettings, SqsSettings
from ingest.signals import stop_on_signals

log = logging.getLogger("ingest")


def run(options: RunSettings, sqs: SqsSettings) -> Stats:
    """Drain the queue into raw.login_events (or follow it until a signal); the run's counts."""
    queue = Queue(sqs)
    queue.attributes()  # pre-flight: endpoint, queue and credentials
    db.check_workload(config.LOADER_ROLE)  # pre-flight: the ingest's own login, no superuser
    dsn = db.role_dsn(config.LOADER_ROLE)
    loaders = [
        RawLoader(dsn, retry_budget_seconds=options.retry_budget_seconds, file_format=options.loader_file_format)
        for _ in range(options.loaders)
    ]
    try:
        loaders[0].check()
        ingest = Consumer(queue, loaders, options)
        stop_on_signals(
            ingest.stopping,
            "finishing the batch in hand, releasing the rest, letting the open long polls return",
            held=ingest.held,
            abandoning=ingest.abandoning,
        )
        if not options.metrics_port:
            return ingest.run()
        from ingest.consumer.metrics import MetricsServer

        with MetricsServer(ingest, options.metrics_port, options.metrics_host, max_poll_age=options.max_poll_age):
            log.info("metrics on http://%s:%d/metrics, health on /healthz", options.metrics_host, options.metrics_port)
            return ingest.run()
    finally:
        for loader in loaders:
            loader.close()
