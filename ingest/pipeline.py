"""The ingest: long-poll SQS into micro-batches, append each to raw.login_events with dlt, then ack.

At-least-once by construction: a batch's messages are deleted from the queue only after
`pipeline.run()` has committed its load. A crash or failed load before that means SQS
redelivers them (a second raw row with the same message_id, which dbt deduplicates); it never
means loss. Nothing is parsed here: a malformed body is data too and lands verbatim.
"""

from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ingest import LoginvaultError, config
from ingest.faults import pause_at
from ingest.raw_loader import RawLoader
from ingest.sqs import MAX_BATCH, Message, Queue

log = logging.getLogger(__name__)

# How often a batch that is collecting looks whether the running loads have ended.
_LOAD_POLL_SECONDS = 0.01


@dataclass
class RunOptions:
    follow: bool = False
    max_messages: int | None = None
    batch_size: int = 1000
    batch_seconds: float = 1.0
    wait_seconds: int = 3
    visibility_timeout: int = config.DEFAULT_VISIBILITY_TIMEOUT
    retry_budget_seconds: float = 60.0
    progress_seconds: float = 2.0
    workers: int = 1
    loaders: int = 2


@dataclass
class Stats:
    received: int = 0
    landed: int = 0
    deleted: int = 0
    redeliveries: int = 0
    delete_failures: int = 0
    extended: int = 0
    stale_handles: int = 0
    released: int = 0
    poison: int = 0
    last_poll_at: float | None = None  # Unix time of the last successful ReceiveMessage
    last_load_at: float | None = None  # Unix time of the last committed load
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        rate = self.landed / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"received {self.received}, landed {self.landed}, deleted {self.deleted}, "
            f"redeliveries {self.redeliveries}, {self.seconds:.1f} s, {rate:.0f} messages/s"
        )
        extras = {
            "visibility extended": self.extended,
            "stale receipt handles": self.stale_handles,
            "delete failures": self.delete_failures,
            "released": self.released,
            "refused by the database": self.poison,
        }
        return text + "".join(f", {name} {n}" for name, n in extras.items() if n)


class InFlight:
    """The messages this process holds (received, not yet deleted or released), and when each
    becomes visible again. The keeper extends the ones about to, so a slow load is never
    redelivered mid-way; thread-safe."""

    def __init__(self, queue: Queue, timeout: int, stats: Stats) -> None:
        self.queue = queue
        self.timeout = timeout
        self.stats = stats
        self._lock = threading.Lock()
        self._deadlines: dict[str, tuple[Message, float]] = {}

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
        with self._lock:
            for m in due:
                if m.receipt_handle in self._deadlines:
                    self._deadlines[m.receipt_handle] = (m, now + self.timeout)
            self.stats.extended += len(due) - len(failed)
            self.stats.stale_handles += len(failed)
        if failed:
            # The message became visible and was received again (here or by another worker):
            # its load goes on (at-least-once); the mart keeps one row per message_id.
            log.warning("%d receipt handles were stale when extending visibility", len(failed))

    def release(self, messages: Sequence[Message]) -> None:
        """Make messages visible again at once (visibility 0): received but not to be loaded here."""
        if messages:
            failed = self.queue.change_visibility(messages, 0)
            self.remove(messages)
            with self._lock:
                self.stats.released += len(messages) - len(failed)


class Ingest:
    """Receivers long-poll SQS into a buffer; the loader takes micro-batches from it, loads each
    (dlt → raw.login_events), and deletes what landed. Until drained, stopped or N messages.

    `workers` receiver threads share one boto3 client (thread-safe), so receiving overlaps with
    loading and deleting. A keeper thread extends the visibility of every held message.
    """

    def __init__(self, queue: Queue, loaders: RawLoader | Sequence[RawLoader], options: RunOptions) -> None:
        self.queue = queue
        # Several loaders (each its own dlt pipeline) overlap one batch's COPY with the next
        # one's extract and normalize.
        self.loaders = [loaders] if isinstance(loaders, RawLoader) else list(loaders)
        self._idle_loaders: queue_module.Queue[RawLoader] = queue_module.Queue()
        for loader in self.loaders:
            self._idle_loaders.put(loader)
        self._load_pool = ThreadPoolExecutor(max_workers=len(self.loaders), thread_name_prefix="load")
        self.load_observers: list = []  # called with each committed load's seconds (metrics)
        self._loads: list[Future] = []
        self.options = options
        self.stats = Stats()
        self.stopping = threading.Event()
        self.queue_name = queue.url.rstrip("/").rsplit("/", 1)[-1]
        self.in_flight = InFlight(queue, options.visibility_timeout, self.stats)
        # Bounded: receivers wait rather than hold more than two batches' worth of messages.
        self._buffer: queue_module.Queue[list[Message]] = queue_module.Queue(
            maxsize=max(2, 2 * options.batch_size // MAX_BATCH)
        )
        self._lock = threading.Lock()
        self._budget = options.max_messages  # None: unlimited
        self._receivers_left = options.workers
        self._errors: list[BaseException] = []
        self._carry: list[Message] = []  # received beyond the last batch's size
        self._deleter = ThreadPoolExecutor(max_workers=max(2, options.workers), thread_name_prefix="delete")
        self._deletes: list[Future] = []
        # Until one load has committed, loads go one at a time: a first load may create dlt's
        # own tables (_dlt_version, ...), and two sessions creating the same table race in
        # PostgreSQL's catalog. After it, dlt finds its schema stored and issues no DDL.
        self._first_load = threading.Lock()
        self._loaded_once = threading.Event()

    # ------------------------------------------------------------ receivers

    def _reserve(self, want: int) -> int:
        with self._lock:
            if self._budget is None:
                return want
            take = min(want, self._budget)
            self._budget -= take
            return take

    def _give_back(self, unused: int) -> None:
        with self._lock:
            if self._budget is not None:
                self._budget += unused

    def _receive_loop(self) -> None:
        wait = self.options.wait_seconds
        try:
            while not self.stopping.is_set():
                want = self._reserve(MAX_BATCH)
                if want == 0:
                    break
                messages = self.queue.receive(want, wait, self.options.visibility_timeout)
                self._give_back(want - len(messages))
                with self._lock:
                    self.stats.last_poll_at = time.time()
                    self.stats.received += len(messages)
                    self.stats.redeliveries += sum(1 for m in messages if m.receive_count > 1)
                self.in_flight.add(messages)
                if self.stopping.is_set():
                    self.in_flight.release(messages)  # arrived after the stop: not ours to load
                    break
                if messages:
                    pause_at("after_receive")
                    self._put(messages)
                elif not self.options.follow:
                    break  # an empty long poll: drained
        except BaseException as exc:  # reported by the loader, which stops the run
            self._errors.append(exc)
            self.stopping.set()
        finally:
            with self._lock:
                self._receivers_left -= 1

    def _put(self, messages: list[Message]) -> None:
        while True:
            try:
                self._buffer.put(messages, timeout=0.5)
                return
            except queue_module.Full:
                if self.stopping.is_set():
                    self.in_flight.release(messages)
                    return

    def _receivers_done(self) -> bool:
        with self._lock:
            return self._receivers_left == 0

    # ------------------------------------------------------------ loader

    def _next_batch(self) -> list[Message]:
        """Up to batch_size messages; empty when the receivers are done and nothing is buffered.

        Adaptive: while no load is running, a batch goes as soon as it has what is buffered,
        so a message waits for a load only as long as the load before it takes; while loads
        are running, it collects messages until it is full or batch_seconds (at most a quarter
        of the visibility timeout) after its first. So batches grow with the arrival rate and
        the load time, and an idle ingest loads a message without waiting out the window.
        """
        batch, self._carry = self._carry[: self.options.batch_size], self._carry[self.options.batch_size :]
        window = min(self.options.batch_seconds, self.options.visibility_timeout / 4)
        first_at = time.monotonic() if batch else None
        while len(batch) < self.options.batch_size:
            if first_at is not None:
                if time.monotonic() - first_at >= window or self.stopping.is_set():
                    break
                if self._buffer.empty() and not self._loading():
                    break
            # Never past the window; while a load runs, look often whether it has ended.
            timeout = 0.2
            if first_at is not None:
                timeout = max(0.001, min(_LOAD_POLL_SECONDS, first_at + window - time.monotonic()))
            try:
                chunk = self._buffer.get(timeout=timeout)
            except queue_module.Empty:
                if (self._receivers_done() and self._buffer.empty()) or (self.stopping.is_set() and not batch):
                    break
                continue
            room = self.options.batch_size - len(batch)
            batch += chunk[:room]
            self._carry += chunk[room:]
            first_at = first_at or time.monotonic()
        return batch

    def _loading(self) -> bool:
        """Whether a load is running (a loader is out of the idle pool)."""
        return self._idle_loaders.qsize() < len(self.loaders)

    def _keep_visible(self, done: threading.Event) -> None:
        tick = max(0.2, min(5.0, self.options.visibility_timeout / 8))
        while not done.wait(tick):
            try:
                self.in_flight.extend_due()
            except Exception as exc:  # a failed extension must not stop the load
                log.warning("extending visibility failed: %s", exc)

    def run(self) -> Stats:
        receivers = [
            threading.Thread(target=self._receive_loop, name=f"receiver-{i}", daemon=True)
            for i in range(self.options.workers)
        ]
        done = threading.Event()
        keeper = threading.Thread(target=self._keep_visible, args=(done,), name="visibility", daemon=True)
        for thread in (*receivers, keeper):
            thread.start()
        last_progress = time.monotonic()
        try:
            while True:
                batch = self._next_batch()
                if batch:
                    self._dispatch(batch)
                self._reap_loads(wait=False)
                if self._errors:
                    raise self._errors[0]
                if time.monotonic() - last_progress >= self.options.progress_seconds and batch:
                    log.info("progress: %s", self.stats.line())
                    last_progress = time.monotonic()
                if self.stopping.is_set():
                    break  # the batch in hand is landed; what else is held is released below
                if not batch and not self._carry and self._receivers_done() and self._buffer.empty():
                    break
        finally:
            self.stopping.set()
            for thread in receivers:
                thread.join(timeout=self.options.wait_seconds + 10)
            try:
                self._reap_loads(wait=True)  # the batches in hand land before anything is released
            finally:
                self._load_pool.shutdown(wait=True)
                self._reap_deletes(wait=True)
                self._deleter.shutdown(wait=True)
                self._release_unloaded()
                done.set()
                keeper.join(timeout=5)
        return self.stats

    def _dispatch(self, batch: list[Message]) -> None:
        """Hand a batch to the next idle loader (waiting for one, and failing fast if a load failed)."""
        while True:
            try:
                loader = self._idle_loaders.get(timeout=0.2)
                break
            except queue_module.Empty:
                self._reap_loads(wait=False)
                if self.stopping.is_set():
                    # Stopped before a loader took it: not in hand, so released with the rest
                    # (its messages are still held) instead of loaded after the signal.
                    return
        self._loads.append(self._load_pool.submit(self._land, batch, loader))

    def _reap_loads(self, wait: bool) -> None:
        """Forget finished loads (all, waiting, when `wait`); re-raise the first that failed."""
        pending, error = [], None
        for future in self._loads:
            if not wait and not future.done():
                pending.append(future)
                continue
            try:
                future.result()
            except BaseException as exc:
                error = error or exc
        self._loads = pending
        if error is not None:
            raise error

    def _land(self, batch: list[Message], loader: RawLoader) -> None:
        """Load a batch; once committed, delete what landed in parallel DeleteMessageBatch calls
        that overlap with the next batch. Refused messages stay in SQS (redelivery, then DLQ)."""
        started = time.perf_counter()
        try:
            if self._loaded_once.is_set():
                landed = loader.load(batch, self.queue_name)
            else:
                with self._first_load:
                    landed = loader.load(batch, self.queue_name)
                    self._loaded_once.set()
        except BaseException:
            self.stopping.set()
            raise
        finally:
            self._idle_loaders.put(loader)
        for observe in self.load_observers:
            observe(time.perf_counter() - started)
        with self._lock:
            self.stats.last_load_at = time.time()
            self.stats.landed += len(landed)
            self.stats.poison = sum(each.poison for each in self.loaders)
        landed_handles = {m.receipt_handle for m in landed}
        self.in_flight.remove([m for m in batch if m.receipt_handle not in landed_handles])
        pause_at("after_commit")
        for start in range(0, len(landed), MAX_BATCH):
            self._deletes.append(self._deleter.submit(self._delete, landed[start : start + MAX_BATCH]))
        self._reap_deletes(wait=False)

    def _delete(self, messages: list[Message]) -> None:
        deleted, failed = self.queue.delete(messages)
        self.in_flight.remove(messages)
        with self._lock:
            self.stats.deleted += deleted
            self.stats.delete_failures += len(failed)
        if failed:
            # A stale receipt handle (visibility expired): SQS will redeliver and the mart
            # deduplicates, so this is reported, not fatal.
            log.warning("%d deletes failed, first: %s", len(failed), failed[0])

    def _reap_deletes(self, wait: bool) -> None:
        """Forget finished deletes (all of them, waiting, when `wait`); report failed calls."""
        pending = []
        for future in self._deletes:
            if not wait and not future.done():
                pending.append(future)
                continue
            try:
                future.result()
            except LoginvaultError as exc:  # SQS unreachable: those messages will be redelivered
                log.warning("a delete failed: %s", exc)
        self._deletes = pending

    def _release_unloaded(self) -> None:
        """At the end (stop, error): every message still held goes back to the queue at once."""
        self.in_flight.release(self._carry)
        self._carry = []
        while True:
            try:
                self.in_flight.release(self._buffer.get_nowait())
            except queue_module.Empty:
                break
        leftover = self.in_flight.held()
        if leftover:
            try:
                self.in_flight.release(leftover)
            except LoginvaultError as exc:  # SQS unreachable: they come back after the timeout
                log.warning("could not release %d messages: %s", len(leftover), exc)
