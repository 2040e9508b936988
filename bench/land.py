"""Land: `ingest run`'s code path from a decoded SQS response to a committed raw load, fed by an
in-process source (no network), against COPY (the physical limit) and row-by-row INSERT+commit
(the typical hand-written consumer), on the same rows, the same table, the same cluster."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg

from bench import harness
from bench.harness import Result, execute, timed
from ingest import config
from ingest.consumer import Consumer, sqs
from ingest.consumer.raw_loader import RawLoader
from ingest.local import sample
from ingest.settings import RunSettings


class SyntheticQueue:
    """Stands in for ingest.sqs.Queue: serves bodies as decoded ReceiveMessage responses (the
    dicts botocore returns), turned into Messages by the same code as the real queue; every
    delete and visibility change succeeds."""

    url = "inprocess://bench/login-queue"

    def __init__(self, bodies: Iterator[str]) -> None:
        self._bodies = bodies
        self._serial = 0
        self._lock = threading.Lock()
        self._sent_ms = int(datetime.now(UTC).timestamp() * 1000)

    def receive(self, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int = 300) -> list:
        with self._lock:
            bodies = [b for _, b in zip(range(max_messages), self._bodies, strict=False)]
            first, self._serial = self._serial, self._serial + len(bodies)
        received_at = datetime.now(UTC)
        return [
            sqs._message(
                {
                    "MessageId": f"00000000-0000-4000-8000-{first + i:012d}",
                    "ReceiptHandle": f"bench-{first + i}",
                    "Body": body,
                    "Attributes": {"SentTimestamp": str(self._sent_ms), "ApproximateReceiveCount": "1"},
                },
                received_at,
            )
            for i, body in enumerate(bodies)
        ]

    def delete(self, messages) -> tuple[int, list]:
        return len(messages), []

    def change_visibility(self, messages, timeout) -> list:
        return []


def land(dsn: str, bodies: Iterator[str], batch_size: int, receivers: int = 1) -> tuple[int, float]:
    """Run the ingest (default options but the batch size) over `bodies`; returns (landed, seconds)."""
    options = RunSettings(batch_size=batch_size, wait_seconds=0, receivers=receivers, progress_seconds=1e9)
    loaders = [RawLoader(harness.role_dsn(dsn, config.LOADER_ROLE)) for _ in range(options.loaders)]
    try:
        ingest = Consumer(SyntheticQueue(bodies), loaders, options)
        with timed() as seconds:
            stats = ingest.run()
    finally:
        for loader in loaders:
            loader.close()
    return stats.landed, seconds()


def _copy_text(rows: list[tuple]) -> bytes:
    """The rows in COPY's text format, prepared before the clock starts."""

    def field(value) -> str:
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    return "".join("\t".join(field(v) for v in row) + "\n" for row in rows).encode()


def copy_baseline(dsn: str, rows: list[tuple]) -> float:
    """Seconds for one COPY of `rows` into a table like raw.login_events (same columns, indexes)."""
    execute(
        dsn, "DROP TABLE IF EXISTS raw.bench_copy; CREATE TABLE raw.bench_copy (LIKE raw.login_events INCLUDING ALL)"
    )
    data = _copy_text(rows)
    with psycopg.connect(dsn) as conn, timed() as seconds:
        with conn.cursor().copy("COPY raw.bench_copy FROM STDIN") as copy:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        conn.commit()
    assert execute(dsn, "SELECT count(*) FROM raw.bench_copy")[0][0] == len(rows)
    execute(dsn, "DROP TABLE raw.bench_copy")
    return seconds()


def row_by_row_baseline(dsn: str, rows: list[tuple]) -> float:
    """Seconds for one INSERT and one commit per message, as a hand-written consumer does."""
    execute(
        dsn, "DROP TABLE IF EXISTS raw.bench_rows; CREATE TABLE raw.bench_rows (LIKE raw.login_events INCLUDING ALL)"
    )
    with psycopg.connect(dsn) as conn, timed() as seconds:
        for row in rows:
            conn.execute("INSERT INTO raw.bench_rows VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row)
            conn.commit()
    execute(dsn, "DROP TABLE raw.bench_rows")
    return seconds()


def run(dsn: str, n: int, row_by_row_n: int, batch_size: int) -> list[Result]:
    bodies = [sample.to_body(e) for e in sample.synthetic_events(n, seed=11)]
    now = datetime.now(UTC)
    rows = [(str(uuid.uuid4()), b, now, now, 1, "login-queue", "1.0", uuid.uuid4().hex[:14]) for b in bodies]

    landed, land_s = land(dsn, iter(bodies), batch_size)
    assert landed == n, (landed, n)
    assert execute(dsn, "SELECT count(*) FROM raw.login_events")[0][0] == n
    copy_s = copy_baseline(dsn, rows)
    rbr_s = row_by_row_baseline(dsn, rows[:row_by_row_n])
    land_rate, copy_rate, rbr_rate = n / land_s, n / copy_s, row_by_row_n / rbr_s
    figures = {
        "messages": n,
        "batch_size": batch_size,
        "land_msgs_per_s": round(land_rate),
        "copy_rows_per_s": round(copy_rate),
        "row_by_row_n": row_by_row_n,
        "row_by_row_msgs_per_s": round(rbr_rate),
    }
    return [
        Result("land", land_rate / copy_rate, ">= 0.40 x COPY rate", land_rate / copy_rate >= 0.40, figures, "vs COPY"),
        Result(
            "land",
            land_rate / rbr_rate,
            ">= 15 x row-by-row rate",
            land_rate / rbr_rate >= 15,
            figures,
            "vs row-by-row",
        ),
    ]


if __name__ == "__main__":  # a quick look: python -m bench.land N
    import sys

    from bench.harness import cluster

    with cluster() as pg:
        print(json.dumps([r.__dict__ for r in run(pg.dsn(), int(sys.argv[1]), 2000, int(sys.argv[2]))], indent=1))
