"""Test doubles for the consumer's unit tests: an in-memory queue with SQS's visibility rules, a
loader that lands what it is told to, and small message factories. No PostgreSQL, no moto."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest import LoginvaultError
from ingest.consumer.sqs import MAX_BATCH, Message

_serial = itertools.count(1)


def message(body: str = "{}", receive_count: int = 1, message_id: str | None = None) -> Message:
    """One delivery, as the consumer gets it from ingest.consumer.sqs.Queue.receive."""
    n = next(_serial)
    now = datetime.now(UTC)
    return Message(message_id or f"m-{n}", body, now, now, receive_count, f"handle-{n}")


def messages(count: int) -> list[Message]:
    return [message(body=f'{{"n": {i}}}') for i in range(count)]


def chunks(batch: list[Message], size: int = MAX_BATCH) -> list[list[Message]]:
    """The deliveries split as ReceiveMessage calls return them."""
    return [batch[i : i + size] for i in range(0, len(batch), size)]


@dataclass
class _Stored:
    body: str
    visible_at: float = 0.0
    receive_count: int = 0
    handle: str | None = None  # the receipt handle of the latest receive


class MemoryQueue:
    """The Queue methods the consumer uses (receive, delete, change_visibility, url), in memory.

    As SQS: a receive hides a message for the visibility timeout under a new receipt handle and
    waits up to `wait_seconds` for one to become visible; an entry whose handle is not the
    latest fails on its own (the call does not).
    """

    url = "memory://queues/login-queue"

    def __init__(self, bodies: Sequence[str] = ()) -> None:
        self._stored: dict[str, _Stored] = {}
        self._changed = threading.Condition()
        self.deleted: list[str] = []  # message ids, in the order deleted
        self.unreachable = False  # every call raises LoginvaultError, as when SQS cannot be reached
        self.send(*bodies)

    def send(self, *bodies: str) -> list[str]:
        ids = [f"q-{next(_serial)}" for _ in bodies]
        with self._changed:
            self._stored.update({message_id: _Stored(body) for message_id, body in zip(ids, bodies, strict=True)})
            self._changed.notify_all()
        return ids

    def receive(self, max_messages: int = MAX_BATCH, wait_seconds: int = 0, visibility_timeout: int = 300) -> list:
        self._reach()
        deadline = time.monotonic() + wait_seconds
        with self._changed:
            while not (taken := self._take(max_messages, visibility_timeout)) and time.monotonic() < deadline:
                self._changed.wait(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
        return taken

    def delete(self, batch: Sequence[Message]) -> tuple[int, list[dict]]:
        self._reach()
        deleted, failed = 0, []
        with self._changed:
            for m in batch:
                if self._current(m):
                    del self._stored[m.message_id]
                    self.deleted.append(m.message_id)
                    deleted += 1
                else:
                    failed.append({"message_id": m.message_id, "code": "ReceiptHandleIsInvalid", "reason": "stale"})
        return deleted, failed

    def change_visibility(self, batch: Sequence[Message], timeout: int) -> list[dict]:
        self._reach()
        failed = []
        with self._changed:
            for m in batch:
                if self._current(m):
                    self._stored[m.message_id].visible_at = time.monotonic() + timeout
                else:
                    failed.append({"message_id": m.message_id, "code": "ReceiptHandleIsInvalid"})
            self._changed.notify_all()
        return failed

    def expire(self) -> None:
        """Every message in flight becomes visible, as when its visibility timeout runs out."""
        with self._changed:
            for stored in self._stored.values():
                stored.visible_at = 0.0
            self._changed.notify_all()

    def depth(self) -> tuple[int, int]:
        """(visible, in flight), exactly."""
        now = time.monotonic()
        with self._changed:
            visible = sum(1 for s in self._stored.values() if s.visible_at <= now)
            return visible, len(self._stored) - visible

    def _take(self, max_messages: int, visibility_timeout: int) -> list[Message]:
        now = time.monotonic()
        received_at = datetime.now(UTC)
        taken = []
        for message_id, stored in self._stored.items():
            if len(taken) == max_messages:
                break
            if stored.visible_at <= now:
                stored.visible_at = now + visibility_timeout
                stored.receive_count += 1
                stored.handle = f"{message_id}/{stored.receive_count}"
                taken.append(
                    Message(message_id, stored.body, received_at, received_at, stored.receive_count, stored.handle)
                )
        return taken

    def _current(self, m: Message) -> bool:
        stored = self._stored.get(m.message_id)
        return stored is not None and stored.handle == m.receipt_handle

    def _reach(self) -> None:
        if self.unreachable:
            raise LoginvaultError("cannot reach the SQS endpoint memory://queues: is it running?")


@dataclass
class FakeLoader:
    """Lands every message but those with a refused body; records each batch it was handed.

    `gate`, when given, holds every load until it is set (a slow load); `error` fails them all.
    """

    refuse: set[str] = field(default_factory=set)
    gate: threading.Event | None = None
    error: BaseException | None = None
    batches: list[list[Message]] = field(default_factory=list)
    loading: threading.Event = field(default_factory=threading.Event)  # set once a load has begun

    def load(self, batch: Sequence[Message], queue: str) -> list[Message]:
        self.batches.append(list(batch))
        self.loading.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.error is not None:
            raise self.error
        return [m for m in batch if m.body not in self.refuse]
