"""Receiving: receiver threads long-poll the queue into the inbox, within the run's message budget;
every message is held (InFlight) from the moment it arrives until it is deleted or released."""

from __future__ import annotations

import threading
import time

from ingest.consumer.batching import Inbox
from ingest.consumer.sqs import MAX_BATCH, Message, Queue
from ingest.consumer.stats import Stats
from ingest.consumer.visibility import InFlight
from ingest.faults import pause_at
from ingest.settings import RunSettings


class MessageBudget:
    """How many more messages the run may receive (--max-messages), shared by the receivers."""

    def __init__(self, limit: int | None) -> None:
        self._left = limit  # None: unlimited
        self._lock = threading.Lock()

    def reserve(self, want: int) -> int:
        """Take up to `want` from the budget; 0 when it is spent."""
        with self._lock:
            if self._left is None:
                return want
            take = min(want, self._left)
            self._left -= take
            return take

    def give_back(self, unused: int) -> None:
        with self._lock:
            if self._left is not None:
                self._left += unused


class Receivers:
    """`receivers` threads sharing one boto3 client (thread-safe), so that receiving overlaps with
    loading and deleting. A receiver ends when the budget is spent, at an empty long poll unless
    following, at the stop, or on an error (kept for the run loop, which raises it)."""

    def __init__(
        self,
        queue: Queue,
        options: RunSettings,
        inbox: Inbox,
        in_flight: InFlight,
        stats: Stats,
        stopping: threading.Event,
    ) -> None:
        self.queue = queue
        self.options = options
        self.inbox = inbox
        self.in_flight = in_flight
        self.stats = stats
        self.stopping = stopping
        self.budget = MessageBudget(options.max_messages)
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._running = options.receivers
        self._polling = 0  # long polls under way
        self._threads = [
            threading.Thread(target=self._receive_loop, name=f"receiver-{i}", daemon=True)
            for i in range(options.receivers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the receivers to end, `timeout` seconds at the most in all."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def open_polls(self) -> int:
        """How many long polls are under way (their messages are released as they return)."""
        with self._lock:
            return self._polling

    def raise_error(self) -> None:
        """Re-raise the first error a receiver met (it stopped the run)."""
        if self.errors:
            raise self.errors[0]

    def _receive_loop(self) -> None:
        try:
            while not self.stopping.is_set() and self._receive_once():
                pass
        except BaseException as exc:  # reported by the run loop, which stops the run
            self.errors.append(exc)
            self.stopping.set()
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self.inbox.close()

    def _receive_once(self) -> bool:
        """One long poll into the inbox; False when this receiver is done."""
        wait = self.options.wait_seconds
        assert wait is not None, "RunSettings.__post_init__ resolves the long poll's wait"
        want = self.budget.reserve(MAX_BATCH)
        if want == 0:
            return False
        with self._lock:
            self._polling += 1
        try:
            messages = self.queue.receive(want, wait, self.options.visibility_timeout)
        finally:
            with self._lock:
                self._polling -= 1
        self.budget.give_back(want - len(messages))
        self._received(messages)
        if self.stopping.is_set():
            self.in_flight.release(messages)  # arrived after the stop: not ours to load
            return False
        if not messages:
            return self.options.follow  # an empty long poll: drained, unless following
        pause_at("after_receive")
        if not self.inbox.put(messages, self.stopping, asked=want):
            self.in_flight.release(messages)  # stopped while the inbox was full
            return False
        return True

    def _received(self, messages: list[Message]) -> None:
        self.stats.last_poll_at = time.time()
        self.stats.count(received=len(messages), redeliveries=sum(1 for m in messages if m.receive_count > 1))
        self.in_flight.add(messages)
