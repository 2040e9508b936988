"""The ingest: long-poll SQS into micro-batches, append each to raw.login_events with dlt, then ack.

At-least-once by construction: a batch's messages are deleted from the queue only after
`pipeline.run()` has committed its load. A crash or failed load before that means SQS
redelivers them (a second raw row with the same message_id, which dbt deduplicates); it never
means loss. Nothing is parsed here: a malformed body is data too and lands verbatim.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
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
# A failing job raises at once: RawLoader owns the retries (backoff, jitter, one budget).
os.environ.setdefault("LOAD__RAISE_ON_MAX_RETRIES", "1")
# Each process keeps its own throwaway working dir; there is no dlt state to restore.
os.environ.setdefault("RESTORE_FROM_DESTINATION", "false")

import dlt  # noqa: E402  (after its configuration above)
import pyarrow as pa  # noqa: E402

log = logging.getLogger(__name__)

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
        self._workdir = tempfile.mkdtemp(prefix="loginvault-dlt-")
        self.pipeline = self._new_pipeline()

    def _new_pipeline(self):
        return dlt.pipeline(
            pipeline_name=config.PIPELINE_NAME,
            pipelines_dir=self._workdir,
            destination=dlt.destinations.postgres(credentials=self.dsn),
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
            raise LoginvaultError(
                f"cannot connect to PostgreSQL at {config.redact_dsn(self.dsn)}: {_first_line(exc)}"
            ) from None

    def load(self, messages: Sequence[Message], queue: str) -> None:
        """Append `messages` to raw and commit, retrying with backoff within the budget.

        Raises LoginvaultError when the budget runs out; the working dir is then discarded so
        a failed package can never block a later load (its messages will be redelivered).
        """
        deadline = time.monotonic() + self.retry_budget_seconds
        attempt = 0
        try:
            self.pipeline.run(login_events(messages, queue), loader_file_format="csv")
            return
        except Exception as exc:  # dlt wraps every step's error in PipelineStepFailed
            error = exc
        while True:
            attempt += 1
            delay = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                self._discard()
                raise LoginvaultError(f"loading into raw failed after {attempt} attempts: {_root_cause(error)}")
            log.warning("load failed (%s); retrying in %.1fs", _root_cause(error), delay)
            time.sleep(delay)
            try:
                if self.pipeline.has_pending_data:
                    self.pipeline.load()  # the normalized package is still there: load just it
                else:
                    self.pipeline.run(login_events(messages, queue), loader_file_format="csv")
                return
            except Exception as exc:
                error = exc

    def _discard(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = tempfile.mkdtemp(prefix="loginvault-dlt-")
        self.pipeline = self._new_pipeline()

    def close(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost error's first line: dlt nests the database's message several levels deep."""
    while exc.__cause__ is not None or getattr(exc, "exception", None) is not None:
        exc = exc.__cause__ or exc.exception
    return config.redact_dsn(_first_line(exc))


@dataclass
class RunOptions:
    follow: bool = False
    max_messages: int | None = None
    batch_size: int = 1000
    batch_seconds: float = 5.0
    wait_seconds: int = 3
    visibility_timeout: int = config.DEFAULT_VISIBILITY_TIMEOUT
    retry_budget_seconds: float = 60.0
    progress_seconds: float = 2.0


@dataclass
class Stats:
    received: int = 0
    landed: int = 0
    deleted: int = 0
    redeliveries: int = 0
    delete_failures: int = 0
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
        if self.delete_failures:
            text += f", delete failures {self.delete_failures}"
        return text


class Ingest:
    """Receive → load → delete, one micro-batch at a time, until drained, stopped or N messages."""

    def __init__(self, queue: Queue, loader: RawLoader, options: RunOptions) -> None:
        self.queue = queue
        self.loader = loader
        self.options = options
        self.stats = Stats()
        self.stopping = threading.Event()
        self.queue_name = queue.url.rstrip("/").rsplit("/", 1)[-1]

    def _remaining(self) -> int | None:
        if self.options.max_messages is None:
            return None
        return self.options.max_messages - self.stats.received

    def collect(self) -> list[Message]:
        """Fill a micro-batch: long-poll for the first message, then take what is ready."""
        batch: list[Message] = []
        first_wait = 20 if self.options.follow else self.options.wait_seconds
        started = time.monotonic()
        while not self.stopping.is_set():
            limits = [MAX_BATCH, self.options.batch_size - len(batch)]
            if self._remaining() is not None:
                limits.append(self._remaining())
            want = min(limits)
            if want <= 0:
                break
            messages = self.queue.receive(
                max_messages=want,
                wait_seconds=first_wait if not batch else 1,
                visibility_timeout=self.options.visibility_timeout,
            )
            batch += messages
            self.stats.received += len(messages)
            self.stats.redeliveries += sum(1 for m in messages if m.receive_count > 1)
            if not messages or time.monotonic() - started >= self.options.batch_seconds:
                break
        return batch

    def run(self) -> Stats:
        last_progress = time.monotonic()
        while not self.stopping.is_set():
            batch = self.collect()
            if batch:
                self.loader.load(batch, self.queue_name)
                self.stats.landed += len(batch)
                deleted, failed = self.queue.delete(batch)
                self.stats.deleted += deleted
                if failed:
                    self.stats.delete_failures += len(failed)
                    # A stale receipt handle (visibility expired): SQS will redeliver and the
                    # mart deduplicates, so this is reported, not fatal.
                    log.warning("%d deletes failed, first: %s", len(failed), failed[0])
            if time.monotonic() - last_progress >= self.options.progress_seconds:
                log.info("progress: %s", self.stats.line())
                last_progress = time.monotonic()
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                break
            if not batch and not self.options.follow:
                break  # drained: an empty long poll
        return self.stats

    def install_signal_handlers(self) -> None:
        def stop(signum, _frame):
            log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
            self.stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
