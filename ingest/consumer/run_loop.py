"""The run loop: wires the consumer's units together — receive, batch, load, acknowledge, keep
visible — and stops them in order. The work itself is in the units."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ingest.consumer.acknowledging import Acknowledger
from ingest.consumer.batching import BatchBuilder, Inbox
from ingest.consumer.loading import LoadDispatcher, Loader
from ingest.consumer.receiving import Receivers
from ingest.consumer.stats import Stats
from ingest.consumer.visibility import InFlight, VisibilityKeeper
from ingest.settings import RunSettings
from ingest.sqs import Queue

log = logging.getLogger(__name__)

# How long a stop that released messages waits for the receivers still in a long poll. SQS
# answers a pending poll as soon as messages become visible; moto looks again every second.
STOP_GRACE_SECONDS = 1.5


class Consumer:
    """Receivers long-poll SQS into an inbox; the run loop takes micro-batches from it and hands
    each to a loader (dlt → raw.login_events); what landed is deleted. Until drained, stopped
    (`stopping`, set by a signal) or max_messages received.

    At-least-once by construction: a message is deleted only after the load it landed in has
    committed. A crash or a failed load before that means SQS redelivers it (a second raw row
    with the same message_id, which dbt deduplicates); it never means loss.
    """

    def __init__(self, queue: Queue, loaders: Loader | Sequence[Loader], options: RunSettings) -> None:
        self.queue = queue
        self.options = options
        self.stats = Stats()
        self.stopping = threading.Event()
        self.in_flight = InFlight(queue, options.visibility_timeout, self.stats)
        self.keeper = VisibilityKeeper(self.in_flight)
        self.acknowledger = Acknowledger(queue, self.in_flight, self.stats, workers=max(2, options.receivers))
        queue_name = queue.url.rstrip("/").rsplit("/", 1)[-1]  # raw.login_events.queue
        loaders = [loaders] if hasattr(loaders, "load") else loaders
        self.loading = LoadDispatcher(loaders, queue_name, self.stopping, self.acknowledger.landed)
        inbox = Inbox(options.batch_size)
        self.batches = BatchBuilder(inbox, options, self.stopping, self.loading.busy)
        self.receivers = Receivers(queue, options, inbox, self.in_flight, self.stats, self.stopping)

    @property
    def load_observers(self) -> list[Callable[[float], None]]:
        """Called with each committed load's seconds (metrics)."""
        return self.loading.observers

    def held(self) -> int:
        """How many messages this process holds: received, neither deleted nor released yet."""
        return len(self.in_flight)

    def run(self) -> Stats:
        self.receivers.start()
        self.keeper.start()
        try:
            self._consume()
        finally:
            self._stop()
        return self.stats

    def _consume(self) -> None:
        last_progress = time.monotonic()
        while True:
            batch = self.batches.next_batch()
            if batch:
                self.loading.dispatch(batch)
            self.loading.reap(wait=False)
            self.receivers.raise_error()
            if batch and time.monotonic() - last_progress >= self.options.progress_seconds:
                log.info("progress: %s", self.stats.line())
                last_progress = time.monotonic()
            if self.stopping.is_set():
                return  # the batches in hand land; what else is held is released by _stop
            if not batch and self.batches.drained():
                return

    def _stop(self) -> None:
        """The batches in hand land and their deletes end, then everything else held is released.

        Receivers blocked in a long poll are not waited out: what a pending poll receives after
        the stop is released as it arrives while the process lives, or else comes back after
        its visibility timeout (redelivered, never lost).
        """
        self.stopping.set()
        try:
            self.loading.finish()
        finally:
            try:
                self.acknowledger.finish()
            finally:
                if self.acknowledger.release_held():
                    # A pending long poll may be answered by that very release: let it come
                    # back and release its messages in turn, then sweep once more.
                    self.receivers.join(STOP_GRACE_SECONDS)
                    self.acknowledger.release_held()
                self.keeper.stop()


Ingest = Consumer  # the name the consumer had before it was split into units
