"""The ingest: long-poll SQS into micro-batches, append each to raw.login_events with dlt, then ack.

At-least-once by construction: a batch's messages are deleted from the queue only after
`pipeline.run()` has committed its load. A crash or failed load before that means SQS
redelivers them (a second raw row with the same message_id, which dbt deduplicates); it never
means loss. Nothing is parsed here: a malformed body is data too and lands verbatim.
"""

from __future__ import annotations

import copy
import logging
import os
import queue as queue_module
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ingest import LoginvaultError, config
from ingest.sqs import MAX_BATCH, Message, Queue

# dlt's settings for this pipeline, unless the user's dlt config says otherwise.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# dlt logs a failing job with its traceback and the database's DETAIL (which quotes the row, i.e.
# cleartext PII); RawLoader reports the root cause in one line instead.
os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")
# Arrow tables get dlt's row id and load id too: raw rows link to raw._dlt_loads.
os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID", "true")
os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")
# dlt gzips its intermediate files by default: for a local hand-over to COPY that is pure CPU.
os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
# A failing job raises at once: RawLoader owns the retries (backoff, jitter, one budget).
os.environ.setdefault("LOAD__RAISE_ON_MAX_RETRIES", "1")
# Each process keeps its own throwaway working dir; there is no dlt state to restore.
os.environ.setdefault("RESTORE_FROM_DESTINATION", "false")
# dlt's extract sleeps one poll interval (default 10 ms) after the last item of a resource when
# it has no parallel futures to wait for (the case here): a tenth of a small load's time.
os.environ.setdefault("EXTRACT__FUTURES_POLL_INTERVAL", "0.001")

import dlt  # noqa: E402  (after its configuration above)
import pyarrow as pa  # noqa: E402

log = logging.getLogger(__name__)

# `parquet` is handed to ADBC's binary COPY (adbc-driver-postgresql is a dependency), `csv` to
# psycopg2's text COPY. `auto` (the default) picks by batch size: ADBC opens a connection of its
# own for every load (~35 ms), which only pays off for large batches; a small one goes through
# dlt's open psycopg2 connection as csv.
LOADER_FILE_FORMAT = os.environ.get("INGEST_LOADER_FILE_FORMAT", "auto")
PARQUET_MIN_ROWS = 5000
# How often a batch that is collecting looks whether the running loads have ended.
_LOAD_POLL_SECONDS = 0.01


def file_format(rows: int) -> str:
    """The dlt loader file format for a load of `rows` messages."""
    if LOADER_FILE_FORMAT != "auto":
        return LOADER_FILE_FORMAT
    return "parquet" if rows >= PARQUET_MIN_ROWS else "csv"


ARROW_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("body", pa.large_string(), nullable=False),
        pa.field("sent_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("receive_count", pa.int32(), nullable=False),
        pa.field("queue", pa.string(), nullable=False),
    ]
)
# The raw contract's column types, for dlt (bootstrap.sql creates the table with the same).
COLUMNS = {
    "message_id": {"data_type": "text", "nullable": False},
    "body": {"data_type": "text", "nullable": False},
    "sent_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    "received_at": {"data_type": "timestamp", "timezone": True, "nullable": False},
    "receive_count": {"data_type": "bigint", "precision": 32, "nullable": False},
    "queue": {"data_type": "text", "nullable": False},
}


def login_events(messages: Sequence[Message], queue: str):
    """dlt resource of one micro-batch of SQS deliveries, as an Arrow table in raw's layout.

    Reads exactly the messages given; the caller acknowledges them (deletes them from the
    queue) only after the load of this resource has committed.
    """
    table = pa.table(
        [
            [m.message_id for m in messages],
            [m.body for m in messages],
            [m.sent_at for m in messages],
            [m.received_at for m in messages],
            [m.receive_count for m in messages],
            [queue] * len(messages),
        ],
        schema=ARROW_SCHEMA,
    )
    return dlt.resource(table, name=config.RAW_TABLE, write_disposition="append", columns=COLUMNS)


class RawLoader:
    """Appends micro-batches to raw.login_events as the loader role, retrying database errors."""

    def __init__(self, dsn: str, retry_budget_seconds: float = 60.0) -> None:
        self.dsn = dsn
        self.retry_budget_seconds = retry_budget_seconds
        self.poison = 0  # messages the database refused, left for redelivery and the DLQ
        self._workdir = tempfile.mkdtemp(prefix="loginvault-dlt-")
        self.pipeline = self._new_pipeline()

    def _new_pipeline(self):
        destination = dlt.destinations.postgres(credentials=self.dsn)
        _memoize_capabilities(destination)
        return dlt.pipeline(
            pipeline_name=config.PIPELINE_NAME,
            pipelines_dir=self._workdir,
            destination=destination,
            dataset_name=config.RAW_SCHEMA,
        )

    def check(self) -> None:
        """Pre-flight: the DSN connects, acts as a role that may insert into raw.login_events."""
        import psycopg

        table = f"{config.RAW_SCHEMA}.{config.RAW_TABLE}"
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                row = conn.execute("SELECT current_user, to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if not row[1]:
                    raise LoginvaultError(
                        f"table {table} does not exist: run the bootstrap (`make stack-up`, or `python -m ingest bootstrap` with an admin PG_DSN)"
                    )
                if not conn.execute("SELECT has_table_privilege(%s, 'INSERT')", (table,)).fetchone()[0]:
                    raise LoginvaultError(f"role {row[0]} may not insert into {table}: run the bootstrap or grant it")
        except psycopg.OperationalError as exc:
            raise config.cannot_connect(self.dsn, exc) from None

    def load(self, messages: Sequence[Message], queue: str) -> list[Message]:
        """Append `messages` to raw and commit; returns the messages that landed.

        Database errors are retried with exponential backoff and jitter within the budget;
        when it runs out, LoginvaultError. A row the database refuses (a constraint, a bad
        value) does not hold the batch back: the batch is bisected, every other message lands,
        and the refused ones are left out, so they are redelivered and, after
        DLQ_MAX_RECEIVE_COUNT receives, moved to the dead-letter queue. When every message is
        refused, the cause is not in the messages: LoginvaultError. A failed dlt package is
        discarded with its working dir, so it can never block a later load.
        """
        try:
            self._run_with_retries(messages, queue)
            return list(messages)
        except _RowsRefused as refused:
            if len(messages) == 1:
                raise LoginvaultError(f"loading into raw failed: {refused}") from None
            log.warning("the database refused a row of a batch of %d (%s): bisecting", len(messages), refused)
        landed, poison = self._bisect(messages, queue)
        if not landed:
            raise LoginvaultError(f"loading into raw failed: every message was refused ({poison[0][1]})")
        for message, reason in poison:
            # The message id and receive count only: never the body (it may hold PII).
            log.error(
                "message %s cannot be loaded (receive %d of %d before the dead-letter queue): %s",
                message.message_id,
                message.receive_count,
                config.DLQ_MAX_RECEIVE_COUNT,
                reason,
            )
        self.poison += len(poison)
        return landed

    def _bisect(self, messages: Sequence[Message], queue: str) -> tuple[list[Message], list[tuple[Message, str]]]:
        """Load each half of a refused batch; split a refused half again, down to single messages."""
        landed: list[Message] = []
        poison: list[tuple[Message, str]] = []
        half = len(messages) // 2
        for part in (messages[:half], messages[half:]):
            try:
                self._run_with_retries(part, queue)
                landed += part
            except _RowsRefused as refused:
                if len(part) == 1:
                    poison.append((part[0], str(refused)))
                else:
                    more_landed, more_poison = self._bisect(part, queue)
                    landed += more_landed
                    poison += more_poison
        return landed, poison

    def _run_with_retries(self, messages: Sequence[Message], queue: str) -> None:
        deadline = time.monotonic() + self.retry_budget_seconds
        attempt = 0
        while True:
            try:
                pause_at("in_load")
                self.pipeline.run(login_events(messages, queue), loader_file_format=file_format(len(messages)))
                return
            except Exception as exc:  # dlt wraps every step's error in PipelineStepFailed
                error = exc
            # A failed package stays pending in dlt's working dir and would be loaded first by
            # the next run: drop it with the dir. Nothing of it was deleted from the queue.
            self._discard()
            cause = _innermost(error)
            if _refuses_rows(cause):
                raise _RowsRefused(_root_cause(error)) from None
            if not _retryable(cause):
                raise error  # a bug, not the database: fail loudly, with the traceback
            attempt += 1
            delay = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                raise LoginvaultError(f"loading into raw failed after {attempt} attempts: {_root_cause(error)}")
            log.warning("load failed (%s); retrying in %.1fs", _root_cause(error), delay)
            time.sleep(delay)

    def _discard(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = tempfile.mkdtemp(prefix="loginvault-dlt-")
        self.pipeline = self._new_pipeline()

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


def _memoize_capabilities(destination) -> None:
    """dlt asks the destination for its capabilities ~15 times per `pipeline.run()`, and each
    answer resolves the destination's whole configuration again (~2 ms): a fifth of a small
    load's CPU. The answer depends only on that configuration (fixed for the process) and the
    naming convention, so each is computed once and handed out as a copy (dlt edits it)."""
    compute = destination.capabilities
    cache: dict = {}
    lock = threading.Lock()

    def capabilities(config=None, naming=None):
        if config is not None:  # a final, resolved config: dlt's own path, not cached
            return compute(config, naming)
        key = None if naming is None else (type(naming), getattr(naming, "max_length", None))
        with lock:
            if key not in cache:
                cache[key] = compute(None, naming)
            return copy.deepcopy(cache[key])

    destination.capabilities = capabilities


class _RowsRefused(Exception):
    """The database refused the content of a row (integrity or data error): retrying won't help."""


def _refuses_rows(exc: BaseException) -> bool:
    """The database refused a row's content (constraint, bad value), via psycopg2 or ADBC.

    Not a unique violation of a system catalog index (`pg_type_typname_nsp_index`, ...): that
    is two sessions creating the same table at once (workers starting on a fresh database),
    which a retry resolves.
    """
    import adbc_driver_manager
    import psycopg2

    if _catalog_race(exc):
        return False
    return isinstance(
        exc,
        psycopg2.IntegrityError
        | psycopg2.DataError
        | adbc_driver_manager.IntegrityError
        | adbc_driver_manager.DataError,
    )


def _catalog_race(exc: BaseException) -> bool:
    """A concurrent CREATE of the same object: a unique violation on a `pg_catalog` index."""
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    if constraint.startswith("pg_") or getattr(diag, "schema_name", None) == "pg_catalog":
        return True
    return 'unique constraint "pg_' in config.first_line(exc)


def _retryable(exc: BaseException) -> bool:
    """Errors of the database or the way to it (down, restarting, refusing, timing out)."""
    import adbc_driver_manager
    import psycopg2
    from dlt.common.destination.exceptions import DestinationTransientException

    return isinstance(exc, psycopg2.Error | adbc_driver_manager.Error | OSError | DestinationTransientException)


def _innermost(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or getattr(exc, "exception", None) is not None:
        exc = exc.__cause__ or exc.exception
    return exc


def _root_cause(exc: BaseException) -> str:
    """The innermost error's first line: dlt nests the database's message several levels deep.

    Only the first line: PostgreSQL's DETAIL quotes the failing row, i.e. cleartext PII.
    """
    return config.redact_dsn(config.first_line(_innermost(exc)))


def pause_at(point: str) -> None:
    """A fault-injection point for the kill and outage tests (LOGINVAULT_FAULT_PAUSE=point=seconds).

    Unset in normal runs, where it costs one dict lookup. `seconds` may be `inf`: the process
    then waits at the point until it is killed.
    """
    spec = os.environ.get("LOGINVAULT_FAULT_PAUSE")
    if not spec:
        return
    name, _, seconds = spec.partition("=")
    if name == point:
        print(f"fault: paused at {point}", file=sys.stderr, flush=True)
        time.sleep(10**9 if seconds in ("", "inf") else float(seconds))


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
