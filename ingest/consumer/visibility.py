"""Visibility keeping: which messages this process holds (InFlight), and the keeper thread that
extends their visibility timeout so that a slow load is never redelivered mid-way."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from ingest.consumer.sqs import Message, Queue
from ingest.consumer.stats import Stats

log = logging.getLogger(__name__)


class InFlight:
    """The messages this process holds (received, not yet deleted or released), and when each
    becomes visible again; thread-safe."""

    def __init__(self, queue: Queue, timeout: int, stats: Stats) -> None:
        self.queue = queue
        self.timeout = timeout
        self.stats = stats
        self._lock = threading.Lock()
        self._deadlines: dict[str, tuple[Message, float]] = {}

    def __len__(self) -> int:
        # No lock: a signal handler asks, on a thread that may hold it (a dict's len is atomic).
        return len(self._deadlines)

    def add(self, messages: Sequence[Message]) -> None:
        deadline = time.monotonic() + self.timeout
        with self._lock:
            for m in messages:
                self._deadlines[m.receipt_handle] = (m, deadline)

    def remove(self, messages: Sequence[Message]) -> None:
        with self._lock:
            for m in messages:
                self._deadlines.pop(m.receipt_handle, None)

    def held(self) -> list[Message]:
        with self._lock:
            return [m for m, _ in self._deadlines.values()]

    def extend_due(self) -> None:
        """ChangeMessageVisibility for what has used half its timeout; stale handles reported."""
        now = time.monotonic()
        with self._lock:
            due = [m for m, deadline in self._deadlines.values() if deadline - now <= self.timeout / 2]
        if not due:
            return
        failed = {f["message_id"] for f in self.queue.change_visibility(due, self.timeout)}
        extended = stale = 0
        with self._lock:
            for m in due:
                if m.receipt_handle not in self._deadlines:
                    # Deleted or released while the call was on its way: a failure says nothing
                    # of a handle this process no longer holds.
                    continue
                self._deadlines[m.receipt_handle] = (m, now + self.timeout)
                if m.message_id in failed:
                    stale += 1
                else:
                    extended += 1
        self.stats.count(extended=extended, stale_handles=stale)
        if stale:
            # The message became visible and was received again (here or by another worker):
            # its load goes on (at-least-once); the mart keeps one row per message_id.
            log.warning("%d receipt handles were stale when extending visibility", stale)

    def release(self, messages: Sequence[Message]) -> int:
        """Make the given messages this process still holds visible again at once (visibility 0):
        received but not to be loaded here. Returns how many it gave back.

        Only what is still held: a stop and a receiver may both give back the same messages.
        """
        with self._lock:
            held = [m for m in messages if self._deadlines.pop(m.receipt_handle, None) is not None]
        if not held:
            return 0
        failed = self.queue.change_visibility(held, 0)
        self.stats.count(released=len(held) - len(failed))
        return len(held)


class VisibilityKeeper:
    """A thread that, every tick, extends the visibility of the held messages about to need it."""

    def __init__(self, in_flight: InFlight) -> None:
        self.in_flight = in_flight
        # A tick well within half the timeout, the point at which a message is due.
        self.tick = max(0.2, min(5.0, in_flight.timeout / 8))
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="visibility", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _keep(self) -> None:
        while not self._done.wait(self.tick):
            try:
                self.in_flight.extend_due()
            except Exception as exc:  # a failed extension must not stop the load
                log.warning("extending visibility failed: %s", exc)
