"""The two arms of the SQS benchmark, each the body of a process of its own (so that its CPU time
is its own): the consumer (ingest.consumer.Consumer with RawLoaders, as `loginvault run --follow`
runs it) and the bare boto3 loop (receive 10, DeleteMessageBatch, nothing else), with the same
receiver threads, the same ReceiveMessage call (attributes included) and the same long poll.

Each consumes until every one of `total` distinct messages is done (landed and deleted for the
consumer, deleted for the bare loop): SQS delivers at least once, so a message may come twice,
and a stale receipt handle may fail to delete; both are counted, neither is an error. The arm
sends back its Report through `conn`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.meter import RequestCounter, Sample, Samples, stage_cpu
from ingest.consumer import Consumer
from ingest.consumer.raw_loader import RawLoader
from ingest.consumer.sqs import (
    ORIGINAL_ID_ATTRIBUTE,
    ORIGINAL_SENT_ATTRIBUTE,
    RECEIVE_ATTRIBUTES,
    Message,
    Queue,
    make_client,
)
from ingest.local import sample
from ingest.settings import RunSettings, SqsSettings

# How often an arm looks whether it is done, and then whether the queue is empty.
DONE_POLL_SECONDS = 0.2  # each look costs the arm CPU: not too often
EMPTY_POLL_SECONDS = 0.5
MOTO_ATTEMPTS = 12


@dataclass
class Report:
    """What an arm measured: its samples and marks, and the at-least-once counts of the run."""

    samples: list[Sample]
    marks: dict[str, Sample]
    counts: dict[str, int] = field(default_factory=dict)
    loads: list[tuple[int, float]] = field(default_factory=list)  # (messages, loader thread CPU s)
    calibration: list[tuple[int, float]] = field(default_factory=list)  # (messages, process CPU s)


class DistinctIds:
    """The distinct message ids done so far, from any thread; `full` is set at `total`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.full = threading.Event()
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids) -> None:
        with self._lock:
            self._ids.update(ids)
            if len(self._ids) >= self.total:
                self.full.set()


class TrackingLoader:
    """A RawLoader that also records the ids of what landed (the bench's completion test), and
    the size and CPU of each load on the loader's thread (dlt's extract, normalize and load
    steps; not the COPY job itself, which dlt runs on a worker thread of its own)."""

    def __init__(self, loader: RawLoader, done: DistinctIds) -> None:
        self.loader = loader
        self.done = done
        self.costs: list[tuple[int, float]] = []

    @property
    def loads(self) -> int:
        return len(self.costs)

    @property
    def cpu_us(self) -> int:
        return int(sum(cpu for _, cpu in self.costs) * 1e6)

    def load(self, messages: Sequence[Message], queue: str) -> list[Message]:
        started = time.thread_time()
        landed = self.loader.load(messages, queue)
        self.costs.append((len(messages), time.thread_time() - started))
        self.done.add(m.message_id for m in landed)
        return landed


# The loads of the calibration after the run: their sizes, each RUNS times, interleaved.
CALIBRATION_SIZES = (100, 1000)
CALIBRATION_RUNS = 4
CALIBRATION_QUEUE = "bench-calibration"  # raw.login_events.queue of its rows


def calibrate(loader: RawLoader) -> list[tuple[int, float]]:
    """(messages, process CPU s) of loads of synthetic messages made one after another, after
    the run, with nothing else working in the process: the whole CPU of a load, dlt's COPY job
    (on a thread of dlt's own, which the run's loader threads do not see) included."""
    now = datetime.now(UTC)
    costs = []
    for k in range(CALIBRATION_RUNS):
        for size in CALIBRATION_SIZES:
            bodies = (sample.to_body(e) for e in sample.synthetic_events(size, seed=k))
            messages = [Message(uuid.uuid4().hex, body, now, now, 1, "") for body in bodies]
            started = time.process_time()
            loader.load(messages, CALIBRATION_QUEUE)
            costs.append((size, time.process_time() - started))
    return costs


# The consumer's stages by the names of their threads (the run loop, which builds the batches and
# hands them on, is the main thread); what no named thread spent (dlt's own worker threads, e.g.
# its COPY job) is counted to the loads. "bench" is this module's own threads.
CONSUMER_STAGES = {
    "receive": ("receiver-",),
    "batch": ("MainThread",),
    "load": ("load",),
    "acknowledge": ("delete", "visibility"),
    "bench": ("sampler", "mark-", "stop-when-done"),
}


# Set to a directory: the consumer arm records where its CPU goes with py-spy (when installed).
PROFILE_ENV = "LOGINVAULT_BENCH_PROFILE"


def profile_this_process(name: str) -> subprocess.Popen | None:
    """py-spy sampling this process's running threads (idle ones left out) into
    $LOGINVAULT_BENCH_PROFILE/<name>.txt as collapsed stacks; None when not asked for. py-spy
    pauses the process for each sample: a profiled run's figures are not for comparison."""
    where = os.environ.get(PROFILE_ENV)
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if not where or not py_spy:
        return None
    os.makedirs(where, exist_ok=True)
    out = os.path.join(where, f"{name}.txt")
    command = [py_spy, "record", "--pid", str(os.getpid()), "--rate", "100", "--format", "raw"]
    profiler = subprocess.Popen([*command, "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches
    return profiler


def _stop_profile(profiler: subprocess.Popen | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profiler.wait(timeout=60)


def patient_queue(settings: SqsSettings) -> Queue:
    """A Queue whose client retries more than the consumer's default: moto's server closes every
    connection after one request and listens with a short backlog, so under load a connect can
    be refused, which real SQS does not do. Every process of the benchmark uses the same."""
    return Queue(
        settings,
        client=make_client(settings.endpoint_url, settings.region, settings.retry_mode, max_attempts=MOTO_ATTEMPTS),
    )


def wait_until_done(
    done: DistinctIds, held: Callable[[], int], settings: SqsSettings, samples: Samples, failed: list, produced
) -> None:
    """Until every message is done and nothing is held (marked "done"), then until the queue is
    empty too (marked "empty"). Raises what `failed` holds.

    Moto rewrites a queue's message list on every delete without the lock its sends take: a
    delete beside another can bring a deleted message back (it is received and deleted again
    after its visibility timeout), and a delete beside a send can drop the message just sent,
    which is then never delivered. So the wait also ends once everything is sent, nothing is
    held, and the queue is empty at two looks in a row: no message can come any more (one
    received by nobody and not deleted would be counted visible or in flight), and what is not
    done by then was lost by moto; the arm reports how many (`not_delivered`)."""
    gauge = patient_queue(settings)  # a client of its own: its GetQueueAttributes are not the arm's requests
    empty_looks, next_look = 0, 0.0
    while not (done.full.is_set() and held() == 0):
        if failed:
            raise failed[0]
        time.sleep(DONE_POLL_SECONDS)
        if produced.is_set() and held() == 0 and time.monotonic() >= next_look:
            next_look = time.monotonic() + EMPTY_POLL_SECONDS
            empty_looks = empty_looks + 1 if gauge.depth() == (0, 0) and held() == 0 else 0
            if empty_looks >= 2:
                break
    samples.mark("done")
    while gauge.depth() != (0, 0):
        if failed:
            raise failed[0]
        time.sleep(EMPTY_POLL_SECONDS)
    samples.mark("empty")


def _mark_when(event, samples: Samples, name: str) -> None:
    """Mark the samples when `event` (set by another process) is set."""

    def wait() -> None:
        event.wait()
        samples.mark(name)

    threading.Thread(target=wait, name=f"mark-{name}", daemon=True).start()


def consumer_arm(settings: SqsSettings, loader_dsn: str, total: int, options: RunSettings, produced, conn) -> None:
    """The consumer over `total` messages; `produced` is set once the producer has sent them all."""
    queue = patient_queue(settings)
    requests = RequestCounter()
    requests.register(queue.client)
    done = DistinctIds(total)
    raw_loaders = [RawLoader(loader_dsn) for _ in range(options.loaders)]
    loaders = [TrackingLoader(loader, done) for loader in raw_loaders]
    consumer = Consumer(queue, loaders, options)
    stats = consumer.stats
    samples = Samples(
        lambda: {
            "received": stats.received,
            "done": len(done),
            "deleted": stats.deleted,
            "landed": stats.landed,
            "loads": sum(loader.loads for loader in loaders),
            "load_cpu_us": sum(loader.cpu_us for loader in loaders),
        },
        requests,
        stages=stage_cpu(CONSUMER_STAGES, rest="load"),
    )

    def stop_when_done() -> None:
        # Every message landed, nothing held (every delivery's delete answered), the queue empty.
        wait_until_done(done, consumer.held, settings, samples, [], produced)
        consumer.stopping.set()

    profiler = profile_this_process("consumer")
    conn.send("ready")
    samples.start()
    _mark_when(produced, samples, "produced")
    threading.Thread(target=stop_when_done, name="stop-when-done", daemon=True).start()
    try:
        try:
            consumer.run()
        finally:
            samples.stop()
            _stop_profile(profiler)
        calibration = calibrate(raw_loaders[0])
    finally:
        for loader in raw_loaders:
            loader.close()
    counts = {
        name: getattr(stats, name)
        for name in ("received", "landed", "deleted", "redeliveries", "delete_failures", "stale_handles", "released")
    }
    counts["loads"] = sum(loader.loads for loader in loaders)
    counts["not_delivered"] = total - len(done)
    costs = [cost for loader in loaders for cost in loader.costs]
    conn.send(Report(samples.taken, samples.marks, counts, costs, calibration))


def bare_arm(
    settings: SqsSettings, total: int, receivers: int, wait_seconds: int, visibility_timeout: int, produced, conn
) -> None:
    """The bare loop over `total` messages: `receivers` threads of receive(10) + DeleteMessageBatch."""
    queue = patient_queue(settings)  # the same client settings (retries, timeouts, pool) as the consumer's
    client, url = queue.client, queue.url
    requests = RequestCounter()
    requests.register(client)
    done = DistinctIds(total)
    lock = threading.Lock()
    counts = {"received": 0, "deleted": 0, "redeliveries": 0, "delete_failures": 0, "in_hand": 0}
    errors: list[BaseException] = []
    finished = threading.Event()

    def consume() -> None:
        try:
            receive_and_delete()
        except BaseException as exc:  # the arm fails with it (below), rather than hang
            errors.append(exc)

    def receive_and_delete() -> None:
        while not finished.is_set():
            response = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=visibility_timeout,
                MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
                MessageAttributeNames=[ORIGINAL_ID_ATTRIBUTE, ORIGINAL_SENT_ATTRIBUTE],
            )
            messages = response.get("Messages", [])
            if not messages:
                continue
            with lock:
                counts["in_hand"] += len(messages)
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            result = client.delete_message_batch(QueueUrl=url, Entries=entries)
            deleted = [messages[int(e["Id"])]["MessageId"] for e in result.get("Successful", [])]
            redelivered = sum(1 for m in messages if m["Attributes"].get("ApproximateReceiveCount", "1") != "1")
            with lock:
                counts["received"] += len(messages)
                counts["deleted"] += len(deleted)
                counts["redeliveries"] += redelivered
                counts["delete_failures"] += len(result.get("Failed", []))
            done.add(deleted)
            with lock:  # after `done`: never nothing in hand while a message is not counted done
                counts["in_hand"] -= len(messages)

    samples = Samples(
        lambda: {"received": counts["received"], "done": len(done), "deleted": counts["deleted"]}, requests
    )
    profiler = profile_this_process("bare")
    conn.send("ready")
    samples.start()
    _mark_when(produced, samples, "produced")
    # Daemon threads: at the end, a thread may still be in a long poll of an empty queue.
    threads = [threading.Thread(target=consume, name=f"bare-{i}", daemon=True) for i in range(receivers)]
    for thread in threads:
        thread.start()
    wait_until_done(done, lambda: counts["in_hand"], settings, samples, errors, produced)
    finished.set()
    samples.stop()
    _stop_profile(profiler)
    del counts["in_hand"]
    counts["not_delivered"] = total - len(done)
    conn.send(Report(samples.taken, samples.marks, dict(counts)))
