"""The run loop: wires the consumer's units together — receive, batch, load, acknowledge, keep
visible — and stops them in order. The work itself is in the units."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ingest import count
from ingest.consumer.acknowledging import Acknowledger
from ingest.consumer.batching import BatchBuilder, Inbox
from ingest.consumer.loading import LoadDispatcher, Loader
from ingest.consumer.receiving import Receivers
from ingest.consumer.sqs import Queue
from ingest.consumer.stats import Stats
from ingest.consumer.visibility import InFlight, VisibilityKeeper
from ingest.settings import RunSettings

log = logging.getLogger(__name__)

# Beyond its wait time, how long a stop waits for a long poll to come back (the network's share).
POLL_GRACE_SECONDS = 5.0


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
        inbox = Inbox(options.batch_size, options.batch_bytes)
        self.batches = BatchBuilder(inbox, options, self.stopping)
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
        """The batches in hand land and their deletes end, everything else held is released, and
        the long polls under way are let return (their wait time at most), their messages released.

        No new poll starts after the stop. A poll abandoned (the process ended meanwhile) would
        keep what SQS hands it invisible for the visibility timeout: that is what the wait avoids.
        """
        self.stopping.set()
        try:
            self.loading.finish()
        finally:
            try:
                self.acknowledger.finish()
            finally:
                self.acknowledger.release_held()
                self._let_polls_return()
                self.keeper.stop()

    def _let_polls_return(self) -> None:
        polls = self.receivers.open_polls()
        if not polls:
            return
        wait = self.options.wait_seconds
        assert wait is not None, "RunSettings.__post_init__ resolves the long poll's wait"
        log.info(
            "stopping: waiting up to %d s for %s to return, to release what %s (a second signal abandons %s)",
            wait, count(polls, "open long poll"), "it receives" if polls == 1 else "they receive",
            "it" if polls == 1 else "them",
        )  # fmt: skip
        self.receivers.join(wait + POLL_GRACE_SECONDS)
        self.acknowledger.release_held()  # what came back while a receiver was handing it on
        left = self.receivers.open_polls()
        if left:
            log.warning(
                "stopping: %s did not return: what SQS hands %s comes back after the visibility timeout (%d s)",
                count(left, "long poll"), "it" if left == 1 else "them", self.options.visibility_timeout,
            )  # fmt: skip

    def abandoning(self) -> str:
        """For a second signal: the long polls it abandons, and when their messages come back."""
        polls = self.receivers.open_polls()
        if not polls:
            return ""
        return (
            f"; {count(polls, 'open long poll')} abandoned: what SQS hands {'it' if polls == 1 else 'them'}"
            f" comes back after the visibility timeout ({self.options.visibility_timeout} s)"
        )


Ingest = Consumer  # the name the consumer had before it was split into units
