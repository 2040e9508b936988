"""Batching: the inbox the receivers fill, and the adaptive batch builder that empties it into
micro-batches of at most batch_size messages and batch_bytes bytes of bodies (a batch holds at
least one message): the ingest's memory is bounded by bytes, whatever size the bodies are."""

from __future__ import annotations

import queue as queue_module
import threading
import time
from collections.abc import Callable

from ingest.consumer.sqs import MAX_BATCH, Message
from ingest.settings import RunSettings

# How often a batch that is collecting looks whether the running loads have ended.
LOAD_POLL_SECONDS = 0.01
# How long an empty wait for messages lasts before the builder looks at the stop and the inbox again.
IDLE_POLL_SECONDS = 0.2
# This many full receives in a row (MAX_BATCH messages each) show a backlog in the queue.
BACKLOG_RECEIVES = 10


def body_bytes(messages: list[Message]) -> int:
    """The size of the messages' bodies (characters: a body is mostly ASCII JSON)."""
    return sum(len(m.body) for m in messages)


class Inbox:
    """The hand-over from the receivers to the batch builder: chunks of one ReceiveMessage each."""

    def __init__(self, batch_size: int, batch_bytes: int | None = None) -> None:
        # Bounded: receivers wait rather than hold more than two batches' worth of messages, or
        # of bytes (a chunk is always taken into an empty inbox).
        self._chunks: queue_module.Queue[list[Message]] = queue_module.Queue(
            maxsize=max(2, 2 * batch_size // MAX_BATCH)
        )
        self._max_bytes = 2 * batch_bytes if batch_bytes else None
        self._bytes = 0
        self._room = threading.Condition()
        self._closed = threading.Event()

    def put(self, messages: list[Message], stopping: threading.Event) -> bool:
        """Hand over a chunk, waiting while the inbox is full; False when stopped before it was taken."""
        size = body_bytes(messages)
        with self._room:
            while self._max_bytes and self._bytes and self._bytes + size > self._max_bytes:
                if stopping.is_set():
                    return False
                self._room.wait(0.5)
            self._bytes += size
        while True:
            try:
                self._chunks.put(messages, timeout=0.5)
                return True
            except queue_module.Full:
                if stopping.is_set():
                    self._taken(size)
                    return False

    def get(self, timeout: float) -> list[Message] | None:
        """The oldest chunk, or None when none came within `timeout` seconds."""
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue_module.Empty:
            return None
        self._taken(body_bytes(chunk))
        return chunk

    def _taken(self, size: int) -> None:
        with self._room:
            self._bytes -= size
            self._room.notify_all()

    def empty(self) -> bool:
        return self._chunks.empty()

    def close(self) -> None:
        """No more chunks will come: every receiver has ended."""
        self._closed.set()

    def drained(self) -> bool:
        return self._closed.is_set() and self._chunks.empty()


class BatchBuilder:
    """Builds the next micro-batch from the inbox; what a chunk brings beyond it is carried over.

    Adaptive: while no load is running, a batch goes as soon as it has what is in the inbox, so
    a message waits for a load only as long as the load before it takes; while loads are
    running, it collects messages until it is full or batch_seconds (at most a quarter of the
    visibility timeout) after its first. So batches grow with the arrival rate and the load
    time, and an idle ingest loads a message without waiting out the window.

    Under a backlog (BACKLOG_RECEIVES full receives in a row) a batch waits out its window (or
    fills) even while no load runs: loading at once would save the newest messages a fraction
    of the wait the backlog imposes anyway, while every load has a fixed CPU cost (dlt's
    extract, normalize and load steps, ~0.1 s) that a larger batch spreads over more messages.
    """

    def __init__(
        self, inbox: Inbox, options: RunSettings, stopping: threading.Event, loading: Callable[[], bool]
    ) -> None:
        self.inbox = inbox
        self.batch_size = options.batch_size
        self.batch_bytes = options.batch_bytes
        self.window = min(options.batch_seconds, options.visibility_timeout / 4)
        self.stopping = stopping
        self.loading = loading  # whether a load is running
        self._carry: list[Message] = []  # received beyond the last batch's size
        self._full_in_a_row = 0  # receives of MAX_BATCH messages since the last smaller one

    def next_batch(self) -> list[Message]:
        """Up to batch_size messages and batch_bytes bytes (at least one message); empty when
        stopped or the inbox is drained with nothing carried."""
        carried, self._carry = self._carry, []
        batch, size = self._fill([], 0, carried)
        first_at = time.monotonic() if batch else None
        while len(batch) < self.batch_size and size < self.batch_bytes and not self._carry:
            if first_at is not None and self._ready(first_at):
                break
            chunk = self.inbox.get(self._timeout(first_at))
            if chunk is None:
                if self.inbox.drained() or (self.stopping.is_set() and not batch):
                    break
                continue
            self._full_in_a_row = self._full_in_a_row + 1 if len(chunk) >= MAX_BATCH else 0
            batch, size = self._fill(batch, size, chunk)
            first_at = first_at or time.monotonic()
        return batch

    def _fill(self, batch: list[Message], size: int, messages: list[Message]) -> tuple[list[Message], int]:
        """`batch` (of `size` bytes) with as many of `messages` as fit; the rest carried over."""
        for i, message in enumerate(messages):
            fits = len(batch) < self.batch_size and (not batch or size + len(message.body) <= self.batch_bytes)
            if not fits:
                self._carry += messages[i:]
                break
            batch.append(message)
            size += len(message.body)
        return batch, size

    def drained(self) -> bool:
        """Nothing carried over, nothing in the inbox, and nothing more to come."""
        return not self._carry and self.inbox.drained()

    def backlog(self) -> bool:
        """Whether the receives show a backlog in the queue (the last BACKLOG_RECEIVES were full)."""
        return self._full_in_a_row >= BACKLOG_RECEIVES

    def _ready(self, first_at: float) -> bool:
        """Whether a started batch goes now: its window is over, the run stops, or nothing more is
        waiting while no load runs and no backlog shows (the adaptive rule)."""
        if time.monotonic() - first_at >= self.window or self.stopping.is_set():
            return True
        return self.inbox.empty() and not self.loading() and not self.backlog()

    def _timeout(self, first_at: float | None) -> float:
        """How long to wait for the next chunk: never past the window; while a load runs, look
        often whether it has ended, unless a backlog shows (then the batch waits out its window
        whatever the loads do, and a 10 ms poll would cost ~1% of a core for nothing)."""
        if first_at is None:
            return IDLE_POLL_SECONDS
        poll = IDLE_POLL_SECONDS if self.backlog() else LOAD_POLL_SECONDS
        return max(0.001, min(poll, first_at + self.window - time.monotonic()))
