"""Raw loading: append a micro-batch of SQS deliveries to raw.login_events with dlt, verbatim.

RawLoader owns everything between a batch in hand and a committed load: the Arrow table of the
batch, the file format, retries with backoff, and the bisection that leaves out the rows the
database refuses; dlt itself is reached through ingest/consumer/dlt_boundary.py only. It knows nothing of the queue: the caller deletes what
`load` returns, and only that (at-least-once). Nothing is parsed here: a malformed body is data
too and lands verbatim.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence

import pyarrow as pa

from ingest import LoginvaultError, config, db
from ingest.consumer import dlt_boundary
from ingest.consumer.sqs import Message
from ingest.faults import pause_at

log = logging.getLogger(__name__)

# `parquet` is handed to ADBC's binary COPY (adbc-driver-postgresql is a dependency), `csv` to
# psycopg2's text COPY. `auto` (the default, INGEST_LOADER_FILE_FORMAT) picks by batch size: ADBC
# opens a connection of its own for every load (~35 ms), which only pays off for large batches; a
# small one goes through dlt's open psycopg2 connection as csv.
PARQUET_MIN_ROWS = 5000


def file_format(rows: int, configured: str = "auto") -> str:
    """The dlt loader file format for a load of `rows` messages."""
    if configured != "auto":
        return configured
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


def login_events(messages: Sequence[Message], queue: str) -> dlt_boundary.DltResource:
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
    return dlt_boundary.raw_resource(table, config.RAW_TABLE)


class RawLoader:
    """Appends micro-batches to raw.login_events as the loader role, retrying database errors."""

    def __init__(self, dsn: str, retry_budget_seconds: float = 60.0, file_format: str = "auto") -> None:
        self.dsn = dsn
        self.retry_budget_seconds = retry_budget_seconds
        self.file_format = file_format  # auto, parquet or csv
        # dlt's own settings come from ingest/consumer/dlt_defaults.toml unless the environment or
        # the user's .dlt/config.toml says otherwise.
        dlt_boundary.require_packaged_defaults()
        self._workdir = tempfile.mkdtemp(prefix="loginvault-dlt-")
        self._config_lookups: dict[object, object] = {}  # dlt's, answered once per loader
        self.pipeline = self._new_pipeline()

    def _new_pipeline(self) -> dlt_boundary.Pipeline:
        return dlt_boundary.new_pipeline(self.dsn, self._workdir, config.PIPELINE_NAME, config.RAW_SCHEMA)

    def check(self) -> None:
        """Pre-flight: the DSN connects, acts as a role that may insert into raw.login_events."""
        import psycopg

        table = f"{config.RAW_SCHEMA}.{config.RAW_TABLE}"
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                row = conn.execute("SELECT current_user, to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if row is None or not row[1]:
                    raise LoginvaultError(
                        f"table {table} does not exist: run the bootstrap (`make stack-up`, or `loginvault bootstrap` with an admin PG_DSN)"
                    )
                granted = conn.execute("SELECT has_table_privilege(%s, 'INSERT')", (table,)).fetchone()
                if granted is None or not granted[0]:
                    raise LoginvaultError(f"role {row[0]} may not insert into {table}: run the bootstrap or grant it")
        except psycopg.OperationalError as exc:
            raise db.cannot_connect(self.dsn, exc) from None

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
        landed, refused_messages = self._bisect(messages, queue)
        if not landed:
            raise LoginvaultError(f"loading into raw failed: every message was refused ({refused_messages[0][1]})")
        for message, reason in refused_messages:
            # The message id and receive count only: never the body (it may hold PII).
            log.error(
                "message %s refused (receive %d of %d before the dead-letter queue): %s",
                message.message_id,
                message.receive_count,
                config.DLQ_MAX_RECEIVE_COUNT,
                reason,
            )
        return landed

    def _bisect(self, messages: Sequence[Message], queue: str) -> tuple[list[Message], list[tuple[Message, str]]]:
        """Load each half of a refused batch; split a refused half again, down to single messages."""
        landed: list[Message] = []
        refused_messages: list[tuple[Message, str]] = []
        half = len(messages) // 2
        for part in (messages[:half], messages[half:]):
            try:
                self._run_with_retries(part, queue)
                landed += part
            except _RowsRefused as refused:
                if len(part) == 1:
                    refused_messages.append((part[0], str(refused)))
                else:
                    more_landed, more_refused = self._bisect(part, queue)
                    landed += more_landed
                    refused_messages += more_refused
        return landed, refused_messages

    def _run_with_retries(self, messages: Sequence[Message], queue: str) -> None:
        deadline = time.monotonic() + self.retry_budget_seconds
        attempt = 0
        while True:
            try:
                pause_at("in_load")
                resource = login_events(messages, queue)
                dlt_boundary.run(
                    self.pipeline, resource, file_format(len(messages), self.file_format), self._config_lookups
                )
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
    return 'unique constraint "pg_' in db.first_line(exc)


def _retryable(exc: BaseException) -> bool:
    """Errors of the database or the way to it (down, restarting, refusing, timing out)."""
    import adbc_driver_manager
    import psycopg2

    return isinstance(exc, psycopg2.Error | adbc_driver_manager.Error | OSError) or dlt_boundary.is_transient(exc)


def _innermost(exc: BaseException) -> BaseException:
    while True:
        inner = exc.__cause__ or getattr(exc, "exception", None)  # dlt's step errors hold it as .exception
        if not isinstance(inner, BaseException):
            return exc
        exc = inner


def _root_cause(exc: BaseException) -> str:
    """The innermost error's first line: dlt nests the database's message several levels deep.

    Only the first line: PostgreSQL's DETAIL quotes the failing row, i.e. cleartext PII.
    """
    return db.redact_dsn(db.first_line(_innermost(exc)))
