"""Acknowledging: after a load has committed, delete from the queue what landed and only that;
at the end of a run, give back (visibility 0) everything still held. At-least-once hinges here."""

from __future__ import annotations

import logging
import time

from ingest import LoginvaultError
from ingest.consumer.loading import LoadResult
from ingest.consumer.pending import PendingCalls
from ingest.consumer.sqs import MAX_BATCH, Message, Queue
from ingest.consumer.stats import Stats
from ingest.consumer.visibility import InFlight
from ingest.faults import pause_at

log = logging.getLogger(__name__)


class Acknowledger:
    """Deletes the landed messages of each committed load in parallel DeleteMessageBatch calls
    that overlap with the next load; refused messages stay in SQS (redelivery, then the DLQ)."""

    def __init__(self, queue: Queue, in_flight: InFlight, stats: Stats, workers: int) -> None:
        self.queue = queue
        self.in_flight = in_flight
        self.stats = stats
        self._deletes = PendingCalls(workers, "delete")

    def landed(self, result: LoadResult) -> None:
        """A load committed (called on the loader's thread): count it, let go of the refused
        messages, and delete the landed ones."""
        refused = result.refused
        self.stats.last_load_at = time.time()
        self.stats.count(landed=len(result.landed), refused=len(refused))
        # Not deleted, not released: they come back after their visibility timeout, and after
        # DLQ_MAX_RECEIVE_COUNT receives SQS moves them to the dead-letter queue.
        self.in_flight.remove(refused)
        pause_at("after_commit")
        for start in range(0, len(result.landed), MAX_BATCH):
            self._deletes.submit(self._delete, result.landed[start : start + MAX_BATCH])
        self.reap(wait=False)

    def reap(self, wait: bool) -> None:
        """Forget the deletes that have ended (all, waiting, when `wait`); report failed calls."""
        for error in self._deletes.reap(wait):
            if not isinstance(error, LoginvaultError):
                raise error
            log.warning("a delete failed: %s", error)  # SQS unreachable: those messages will be redelivered

    def finish(self) -> None:
        """Wait for every delete submitted, then end the deleter threads."""
        try:
            self.reap(wait=True)
        finally:
            self._deletes.shutdown()

    def release_held(self) -> int:
        """At the end (stop, error): every message still held goes back to the queue at once.
        Returns how many it gave back."""
        held = self.in_flight.held()
        try:
            return self.in_flight.release(held)
        except LoginvaultError as exc:  # SQS unreachable: they come back after the timeout
            log.warning("could not release %d messages: %s", len(held), exc)
            return 0

    def _delete(self, messages: list[Message]) -> None:
        try:
            deleted, failed = self.queue.delete(messages)
        finally:
            # Deleted or not, no longer held: if the call failed, they must come back after their
            # timeout rather than be kept invisible by the keeper for as long as the process lives.
            self.in_flight.remove(messages)
        self.stats.count(deleted=deleted, delete_failures=len(failed))
        if failed:
            # A stale receipt handle (visibility expired): SQS will redeliver and the mart
            # deduplicates, so this is reported, not fatal.
            log.warning("%d deletes failed, first: %s", len(failed), failed[0])
