"""Loading: each batch goes to an idle loader on a thread of its own; what a load did with its
batch comes back as a LoadResult (the refused messages are data, not an exception)."""

from __future__ import annotations

import queue as queue_module
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.consumer.pending import PendingCalls
from ingest.consumer.sqs import Message


class Loader(Protocol):
    """What the consumer needs of a loader (ingest.raw_loader.RawLoader is the real one)."""

    def load(self, messages: Sequence[Message], queue: str) -> list[Message]:
        """Append and commit `messages`; returns the ones that landed (the rest were refused)."""


@dataclass(frozen=True)
class LoadResult:
    """One committed load: the batch handed over, the messages that landed, the seconds it took."""

    batch: list[Message]
    landed: list[Message]
    seconds: float

    @property
    def refused(self) -> list[Message]:
        """The messages the database refused: left in the queue for redelivery, then the DLQ."""
        landed = {m.receipt_handle for m in self.landed}
        return [m for m in self.batch if m.receipt_handle not in landed]


class LoadDispatcher:
    """Hands batches to idle loaders (several loaders, each its own dlt pipeline, overlap one
    batch's COPY with the next one's extract and normalize) and reports each committed load to
    `on_landed`, on the loader's thread. A failed load stops the run: `reap` re-raises it."""

    def __init__(
        self,
        loaders: Sequence[Loader],
        queue_name: str,
        stopping: threading.Event,
        on_landed: Callable[[LoadResult], None],
    ) -> None:
        self.loaders = list(loaders)
        self.queue_name = queue_name
        self.stopping = stopping
        self.on_landed = on_landed
        self.observers: list[Callable[[float], None]] = []  # called with each load's seconds (metrics)
        self._idle: queue_module.Queue[Loader] = queue_module.Queue()
        for loader in self.loaders:
            self._idle.put(loader)
        self._loads = PendingCalls(len(self.loaders), "load")
        # Until one load has committed, loads go one at a time: a first load may create dlt's
        # own tables (_dlt_version, ...), and two sessions creating the same table race in
        # PostgreSQL's catalog. After it, dlt finds its schema stored and issues no DDL.
        self._first_load = threading.Lock()
        self._loaded_once = threading.Event()

    def dispatch(self, batch: list[Message]) -> bool:
        """Hand a batch to the next idle loader, waiting for one (and failing fast if a load
        failed). False when the run stopped first: the batch is not in hand, so it is released
        with the rest of what is held instead of loaded after the signal."""
        while not self.stopping.is_set():
            try:
                loader = self._idle.get(timeout=0.2)
            except queue_module.Empty:
                self.reap(wait=False)
                continue
            if self.stopping.is_set():  # a loader came back after the stop: too late for this batch
                self._idle.put(loader)
                return False
            self._loads.submit(self._land, batch, loader)
            return True
        return False

    def reap(self, wait: bool) -> None:
        """Forget the loads that have ended (all, waiting, when `wait`); re-raise the first that failed."""
        errors = self._loads.reap(wait)
        if errors:
            raise errors[0]

    def finish(self) -> None:
        """Wait for the loads in hand to land (re-raising a failure), then end the loader threads."""
        try:
            self.reap(wait=True)
        finally:
            self._loads.shutdown()

    def _land(self, batch: list[Message], loader: Loader) -> None:
        started = time.perf_counter()
        try:
            landed = self._load(batch, loader)
        except BaseException:
            self.stopping.set()
            raise
        finally:
            self._idle.put(loader)
        result = LoadResult(batch, landed, time.perf_counter() - started)
        for observe in self.observers:
            observe(result.seconds)
        self.on_landed(result)

    def _load(self, batch: list[Message], loader: Loader) -> list[Message]:
        if self._loaded_once.is_set():
            return loader.load(batch, self.queue_name)
        with self._first_load:
            landed = loader.load(batch, self.queue_name)
            self._loaded_once.set()
            return landed
