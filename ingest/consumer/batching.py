"""Batching: the inbox the receivers fill, and the batch builder that empties it into
micro-batches of at most batch_size messages and batch_bytes bytes of bodies (a batch holds at
least one message): the ingest's memory is bounded by bytes, whatever size the bodies are."""

from __future__ import annotations

import queue as queue_module
import threading
import time
from dataclasses import dataclass

from ingest.consumer.sqs import MAX_BATCH, Message
from ingest.settings import RunSettings

# How long a wait for messages lasts at most before the builder looks at the stop again.
IDLE_POLL_SECONDS = 0.2
# After a receive that found the queue drained, how long without another chunk means that no
# more are coming for now (the receivers are in their long polls): then a batch goes. Chunks
# keep coming every few ms while messages flow, even when each receive finds only a few.
QUIET_SECONDS = 0.1


def body_bytes(messages: list[Message]) -> int:
    """The size of the messages' bodies (characters: a body is mostly ASCII JSON)."""
    return sum(len(m.body) for m in messages)


@dataclass(frozen=True)
class Chunk:
    """What one ReceiveMessage brought, and whether it brought fewer messages than it asked for:
    SQS had no more to hand at that moment, the queue has drained (a long poll returns as soon
    as it has a message, and with all it can find up to the number asked)."""

    messages: list[Message]
    drained: bool


class Inbox:
    """The hand-over from the receivers to the batch builder: a Chunk per ReceiveMessage."""

    def __init__(self, batch_size: int, batch_bytes: int | None = None) -> None:
        # Bounded: receivers wait rather than hold more than two batches' worth of messages, or
        # of bytes (a chunk is always taken into an empty inbox).
        self._chunks: queue_module.Queue[Chunk] = queue_module.Queue(maxsize=max(2, 2 * batch_size // MAX_BATCH))
        self._max_bytes = 2 * batch_bytes if batch_bytes else None
        self._bytes = 0
        self._room = threading.Condition()
        self._closed = threading.Event()

    def put(self, messages: list[Message], stopping: threading.Event, asked: int = MAX_BATCH) -> bool:
        """Hand over what a receive of `asked` messages brought, waiting while the inbox is full;
        False when stopped before it was taken."""
        size = body_bytes(messages)
        chunk = Chunk(messages, drained=len(messages) < asked)
        with self._room:
            while self._max_bytes and self._bytes and self._bytes + size > self._max_bytes:
                if stopping.is_set():
                    return False
                self._room.wait(0.5)
            self._bytes += size
        while True:
            try:
                self._chunks.put(chunk, timeout=0.5)
                return True
            except queue_module.Full:
                if stopping.is_set():
                    self._taken(size)
                    return False

    def get(self, timeout: float) -> Chunk | None:
        """The oldest chunk, or None when none came within `timeout` seconds."""
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue_module.Empty:
            return None
        self._taken(body_bytes(chunk.messages))
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

    A batch fills while messages keep coming and goes when they stop: it goes when it is full
    (batch_size messages or batch_bytes bytes), when batch_seconds (at most a quarter of the
    visibility timeout) have passed since its first message, or when the queue has drained —
    the last receive brought fewer messages than it asked for (SQS had no more) and no other
    chunk has come for QUIET_SECONDS since. So a quiet queue's messages are loaded at once (a
    tenth of a second later), while a busy one's are loaded in batches as large as the window
    allows, whether the receives find a backlog or a few messages each: every load has a fixed
    CPU cost (dlt's extract, normalize and load steps, ~0.08 s) that a larger batch spreads
    over more messages, and a message waits at most the window for it. Whether a load is
    running does not matter: a batch that goes while both loaders are busy waits for one in
    LoadDispatcher.dispatch, and meanwhile the receivers fill the inbox for the next.
    """

    def __init__(self, inbox: Inbox, options: RunSettings, stopping: threading.Event) -> None:
        self.inbox = inbox
        self.batch_size = options.batch_size
        self.batch_bytes = options.batch_bytes
        self.window = min(options.batch_seconds, options.visibility_timeout / 4)
        self.stopping = stopping
        self._carry: list[Message] = []  # received beyond the last batch's size
        self._drained = False  # whether the last chunk taken found the queue drained
        self._last_chunk_at = 0.0  # when it was taken

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
            self._drained, self._last_chunk_at = chunk.drained, time.monotonic()
            batch, size = self._fill(batch, size, chunk.messages)
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

    def _ready(self, first_at: float) -> bool:
        """Whether a started batch goes now: its window is over, the run stops, or the queue has
        drained (the last receive found no more) and no chunk has come since for QUIET_SECONDS."""
        now = time.monotonic()
        if now - first_at >= self.window or self.stopping.is_set():
            return True
        return self._drained and now - self._last_chunk_at >= QUIET_SECONDS

    def _timeout(self, first_at: float | None) -> float:
        """How long to wait for the next chunk: never past the window, nor past the quiet time
        after a drained receive, nor so long that a stop goes unseen (a chunk ends the wait as
        soon as it comes)."""
        if first_at is None:
            return IDLE_POLL_SECONDS
        until = first_at + self.window
        if self._drained:
            until = min(until, self._last_chunk_at + QUIET_SECONDS)
        return max(0.001, min(IDLE_POLL_SECONDS, until - time.monotonic()))
