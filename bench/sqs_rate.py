"""SQS: the consumer (`loginvault run --follow --receivers W`) against a moto server, vs a bare boto3
loop of receive(10) + DeleteMessageBatch with the same W threads and the same ReceiveMessage
call, each on a fresh queue, each over the same messages from a producer that keeps the
visible backlog near BACKLOG (moto slows with depth), each arm, the producer and moto in
processes of their own.

What holds on real SQS is what the consumer itself costs, not how fast moto answers on two
shared cores: the headline figures are the consumer's CPU per 1,000 messages (its process
only) against the bare loop's, and the SQS requests per message (ReceiveMessage,
DeleteMessageBatch, ChangeMessageVisibilityBatch, … counted by botocore's event hooks), at the
steady state: from the 10% mark of the messages received until the producer has sent its
last, a backlog present throughout. The drain after it and the whole run are in the figures,
and so is the wall-clock ratio (which moto's CPU sets), as information.

A consumer's CPU per message is the bare loop's work, plus a fixed cost per load (dlt's
extract, normalize and load steps, its COPY job) spread over the batch, plus a little per
message: the batch size decides. On moto (a few hundred msg/s) the consumer keeps up, no
backlog forms, and it loads whenever a loader is free (latency first), in batches of a few
hundred at most. The consumer runs at the CLI's defaults (a 1 s window) and once more with a
5 s window, each load's CPU on its loader thread recorded; a line through (messages, CPU) of
every load gives the fixed cost of a load and the cost of a message in it, hence the ratio at
full batches of 1,000 (what a backlog on real SQS, answering in tens of ms, fills within the
default second) and the batch size at which the target would be met. After each run, loads
of 100 and 1,000 synthetic messages with nothing else running give a load's whole CPU alone
(dlt's COPY job thread included), for comparison.

SQS delivers at least once: a message handed to two receivers is loaded twice (dbt keeps one
row), and the older receipt handle may then fail to delete; moto may also lose a delete when
DeleteMessageBatch calls overlap, and the message comes back after the (short) visibility
timeout. Moto can also drop a message sent beside a delete (it is never delivered). Success is
every message sent landed (distinct ids, checked against the ids SQS gave them) but those moto
never delivered, and the queue empty at the end; redeliveries, failed deletes and messages
moto never delivered are reported."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import statistics
import threading
import time
import uuid

from bench import harness, sqs_arms
from bench.harness import Result, execute
from bench.meter import Sample
from ingest import config
from ingest.consumer import sqs
from ingest.consumer.sqs import MAX_BATCH, Queue
from ingest.local import sample
from ingest.settings import RunSettings, SqsSettings

BACKLOG = 200
SENDERS = 3  # the producer's sender threads
# Every arm's visibility timeout: short, so that a delete moto lost comes back within the run.
VISIBILITY_TIMEOUT = 30
# The window of the consumer's second arm: larger batches than the default second gives at
# moto's rate (a longer window also keeps more messages in flight, and moto slows with them).
LONG_BATCH_SECONDS = 5.0
# The ratio the target allows; the fit below says at which batch size the consumer meets it.
TARGET_RATIO = 1.5
# The steady state starts once this share of the messages has been received (start-up behind).
STEADY_FROM = 0.10
# Per-arm time limit: far above any run, only so that a wedged arm fails the bench.
ARM_TIMEOUT_SECONDS = 900
# SQS operations a consumer may call, reported per message.
OPERATIONS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch", "GetQueueAttributes")


def produce(settings: SqsSettings, total: int, observed, backlog: int = BACKLOG, produced=None, ids=None) -> None:
    """Send `total` sample events, keeping the visible backlog near `backlog`; `observed` gets
    the sum and count of the visible depths seen; `produced` (if any) is set once all are sent,
    and `ids` (a Connection, if any) then gets the ids SQS gave them.

    Several sender threads: moto serves connections in turn, and a single sender would get one
    turn in nine against four receivers and four deleters, never building a backlog."""
    queue = sqs_arms.patient_queue(settings)
    bodies = (sample.to_body(e) for e in sample.synthetic_events(total, seed=13))
    lock = threading.Lock()
    state = {"claimed": 0, "visible": 0, "since_reading": 0}
    finished = threading.Event()
    sent: list[str] = []

    def gauge() -> None:
        while not finished.is_set():
            visible, _ = queue.depth()
            with lock:
                state["visible"], state["since_reading"] = visible, 0
            observed[0] += visible
            observed[1] += 1
            finished.wait(0.05)

    def send() -> None:
        while True:
            with lock:
                if state["claimed"] >= total:
                    return
                room = backlog - state["visible"] - state["since_reading"]
                if room >= min(MAX_BATCH, total - state["claimed"]):
                    chunk = [b for _, b in zip(range(MAX_BATCH), bodies, strict=False)]
                    state["claimed"] += len(chunk)
                    state["since_reading"] += len(chunk)
                else:
                    chunk = []
            if chunk:
                entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
                response = queue.client.send_message_batch(QueueUrl=queue.url, Entries=entries)
                if response.get("Failed") or len(response.get("Successful", [])) != len(chunk):
                    raise RuntimeError(f"SQS refused messages: {response.get('Failed')}")
                sent.extend(e["MessageId"] for e in response["Successful"])
            else:
                time.sleep(0.005)

    threads = [threading.Thread(target=send, name=f"send-{i}") for i in range(SENDERS)]
    watcher = threading.Thread(target=gauge, name="gauge", daemon=True)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(sent) != total:
        raise RuntimeError(f"the producer sent {len(sent)} of {total} messages")
    if produced is not None:
        produced.set()
    finished.set()
    if ids is not None:
        ids.send(sent)


class Producer:
    """The producer, in a process of its own: like a real one, it takes no CPU time from the
    consumer being measured. `produced` (a multiprocessing Event) is set once all are sent;
    `sent_ids` holds their ids after `join`."""

    def __init__(self, queue: Queue, total: int, backlog: int = BACKLOG, produced=None) -> None:
        context = multiprocessing.get_context("spawn")
        self.observed = context.Array("d", 2, lock=False)  # written by the producer only
        self.sent_ids: list[str] = []
        self._ids, ids = context.Pipe(duplex=False)
        self.process = context.Process(
            target=produce,
            args=(queue.settings, total, self.observed, backlog, produced, ids),
            daemon=True,
            name="producer",
        )

    def start(self) -> None:
        self.process.start()

    def join(self, timeout: float | None = None) -> float:
        """Waits for the producer (stops it after `timeout` s); the mean visible backlog it saw."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # The ids first: a producer blocks in sending them until they are read.
        while not self._ids.poll(0.2) and self.process.is_alive():
            if deadline is not None and time.monotonic() > deadline:
                break
        if self._ids.poll():
            self.sent_ids = self._ids.recv()
        self.process.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        elif self.process.exitcode != 0:
            raise RuntimeError(f"the producer failed (exit {self.process.exitcode})")
        return self.observed[0] / max(1, self.observed[1])


def measure(
    arm: str, settings: SqsSettings, dsn: str, total: int, options: RunSettings
) -> tuple[sqs_arms.Report, list[str]]:
    """One arm over `total` messages on the queue of `settings`, in a process of its own; its
    report and the ids of the messages sent."""
    context = multiprocessing.get_context("spawn")
    produced = context.Event()
    ours, theirs = context.Pipe()
    if arm == "consumer":
        target = sqs_arms.consumer_arm
        args = (settings, harness.role_dsn(dsn, config.LOADER_ROLE), total, options, produced, theirs)
    else:
        target = sqs_arms.bare_arm
        args = (settings, total, options.receivers, options.wait_seconds, options.visibility_timeout, produced, theirs)
    process = context.Process(target=target, args=args, daemon=True, name=arm)
    process.start()
    try:
        if _receive(ours, process, 120) != "ready":
            raise RuntimeError(f"the {arm} arm did not start")
        producer = Producer(Queue(settings), total, produced=produced)
        producer.start()
        report = _receive(ours, process, ARM_TIMEOUT_SECONDS)
        report.counts["mean_visible_backlog"] = round(producer.join(), 1)
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    return report, producer.sent_ids


def _receive(conn, process, timeout: float):
    """The arm's next message; fails if the arm died or took longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.5):
        if not process.is_alive():
            raise RuntimeError(f"the {process.name} arm died (exit {process.exitcode}): see its traceback above")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {process.name} arm took more than {timeout:.0f} s")
    return conn.recv()


def queue_left(settings: SqsSettings, wait: float = 5.0) -> tuple[int, int]:
    """(visible, in flight) at the end; waits a little for in-flight deletes to be answered."""
    queue = sqs_arms.patient_queue(settings)
    deadline = time.monotonic() + wait
    while True:
        depth = queue.depth()
        if depth == (0, 0) or time.monotonic() > deadline:
            return depth
        time.sleep(0.2)


def window(start: Sample, end: Sample) -> dict:
    """CPU, requests and rate between two samples, per message received in between."""
    messages = end.counts["received"] - start.counts["received"]
    seconds = end.at - start.at
    calls = {op: end.requests.get(op, 0) - start.requests.get(op, 0) for op in OPERATIONS}
    per = max(1, messages)
    figures = {
        "messages": messages,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(messages / seconds) if seconds > 0 else 0,
        "cpu_ms_per_1k": round((end.cpu - start.cpu) / per * 1e6, 1),
        "requests_per_msg": round(sum(calls.values()) / per, 4),
        "requests_by_op_per_msg": {op: round(n / per, 4) for op, n in calls.items() if n},
    }
    if "loads" in end.counts:  # the consumer's: messages per load, and the loads' share of the CPU
        loads = end.counts["loads"] - start.counts["loads"]
        figures["mean_batch"] = round((end.counts["landed"] - start.counts["landed"]) / max(1, loads), 1)
        load_cpu = (end.counts["load_cpu_us"] - start.counts["load_cpu_us"]) / 1e6
        figures["load_thread_cpu_ms_per_1k"] = round(load_cpu / per * 1e6, 1)
    if end.stages:  # the consumer's CPU by stage (receive, batch, load, acknowledge, bench)
        figures["stage_cpu_ms_per_1k"] = {
            stage: round((seconds - start.stages.get(stage, 0.0)) / per * 1e6, 1)
            for stage, seconds in end.stages.items()
        }
    return figures


def windows(report: sqs_arms.Report, total: int) -> dict[str, dict]:
    """The run cut into steady state, drain and overall (see the module's docstring)."""
    steady_start = next((s for s in report.samples if s.counts["received"] >= STEADY_FROM * total), report.samples[0])
    produced, done, empty = report.marks["produced"], report.marks["done"], report.marks["empty"]
    return {
        "steady": window(steady_start, produced),
        "drain": window(produced, done),
        "lost_deletes": window(done, empty),
        "overall": window(report.samples[0], empty),
    }


def load_cost(loads: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed ms per load, ms per message) of the loads' CPU on the loader threads: a least
    squares line through (messages, CPU) of every load of both consumer arms."""
    if len({size for size, _ in loads}) < 2:
        return float("nan"), float("nan")
    slope, intercept = statistics.linear_regression([s for s, _ in loads], [c for _, c in loads])
    return intercept * 1000, slope * 1000


def run(dsn: str, endpoint_url: str, n: int, receivers: int) -> list[Result]:
    # As `loginvault run --follow` runs by default (batches of 1,000 within a 1 s window, two
    # loaders, 20 s long polls), but the receiver threads and the visibility timeout; a second
    # consumer arm with a longer window, for the cost of a load against the cost of a message.
    default = RunSettings(
        follow=True, receivers=receivers, wait_seconds=20, visibility_timeout=VISIBILITY_TIMEOUT, progress_seconds=1e9
    )
    longer = dataclasses.replace(default, batch_seconds=LONG_BATCH_SECONDS)
    region = SqsSettings(None).region
    arms: dict[str, dict] = {}
    reports: dict[str, sqs_arms.Report] = {}
    consumers = ("consumer", "consumer_5s")
    # Each on a fresh queue; the bare loop first and last (the baseline is their mean).
    plan = (("bare", "bare", default), ("consumer", "consumer", default), ("consumer_5s", "consumer", longer))
    for label, arm, options in (*plan, ("bare2", "bare", default)):
        name = f"bench-{label.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        url, _ = sqs.ensure_queues(endpoint_url, region, name=name)
        settings = SqsSettings(url, endpoint_url, region)
        report, sent = measure(arm, settings, dsn, n, options)
        left = queue_left(settings)
        assert left == (0, 0), (label, report.counts, left)
        assert len(set(sent)) == n, (label, len(sent), n)
        if arm == "consumer":
            rows = execute(dsn, "SELECT message_id FROM raw.login_events WHERE queue = %s", (name,))
            landed = {m for (m,) in rows}
            # Every message landed but those moto dropped (never delivered: see wait_until_done).
            assert landed <= set(sent), (label, len(landed - set(sent)))
            assert n - len(landed) == report.counts["not_delivered"], (label, len(landed), report.counts)
            report.counts.update(raw_rows=len(rows), batch_seconds=options.batch_seconds)
            reports[label] = report
        arms[label] = {**windows(report, n), "counts": report.counts}

    def bare(metric: str, part: str = "steady") -> float:
        return (arms["bare"][part][metric] + arms["bare2"][part][metric]) / 2

    def versus_bare(label: str, metric: str, part: str = "steady") -> float:
        """The arm's figure over the bare loop's; NaN (no ratio, target not met) when the bare
        loop's window holds nothing to compare with, as at the smoke run's sizes."""
        baseline = bare(metric, part)
        return round(arms[label][part][metric] / baseline, 3) if baseline else math.nan

    consumer = arms["consumer"]
    cpu_ratio = versus_bare("consumer", "cpu_ms_per_1k")
    requests = consumer["steady"]["requests_per_msg"]
    # What holds at batches of 1,000: the consumer's CPU outside the loads (receiving,
    # deleting, batching, dlt's COPY job) as measured, plus a load's cost at 1,000 by the fit.
    bare_ms = bare("cpu_ms_per_1k") / 1000  # per message
    # The loads' fixed cost and cost per message on the loader threads during the runs; what
    # else the consumer spends per message (receiving, deleting, batching, dlt's COPY job
    # thread) as measured. And a load's whole CPU alone, from the calibration after each run.
    per_load, per_message = load_cost([cost for r in reports.values() for cost in r.loads])
    outside = (consumer["steady"]["cpu_ms_per_1k"] - consumer["steady"]["load_thread_cpu_ms_per_1k"]) / 1000
    alone_per_load, alone_per_message = load_cost([cost for r in reports.values() for cost in r.calibration])
    at_1000 = (outside + per_load / 1000 + per_message) / bare_ms if bare_ms else math.nan
    room = TARGET_RATIO * bare_ms - outside - per_message
    figures = {
        "messages": n,
        "receivers": receivers,
        "backlog": BACKLOG,
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "consumer": {
            "batch_size": default.batch_size,
            "batch_seconds": default.batch_seconds,
            "loaders": default.loaders,
        },
        "steady_state": f"from {STEADY_FROM:.0%} of the messages received until the producer had sent its last",
        "cpu_ms_per_1k": {
            "consumer": consumer["steady"]["cpu_ms_per_1k"],
            "consumer_5s": arms["consumer_5s"]["steady"]["cpu_ms_per_1k"],
            "bare": [arms["bare"]["steady"]["cpu_ms_per_1k"], arms["bare2"]["steady"]["cpu_ms_per_1k"]],
            "ratio_5s": versus_bare("consumer_5s", "cpu_ms_per_1k"),
            "ratio_overall": versus_bare("consumer", "cpu_ms_per_1k", "overall"),
        },
        "mean_batch": {a: arms[a]["steady"]["mean_batch"] for a in consumers},
        "load_thread_cpu_ms_per_1k": {a: arms[a]["steady"]["load_thread_cpu_ms_per_1k"] for a in consumers},
        # Where the CPU goes (steady state): receiver threads, the run loop, the loads (dlt's
        # worker threads included), the deletes and visibility keeper, the bench's own threads.
        "stage_cpu_ms_per_1k": {a: arms[a]["steady"].get("stage_cpu_ms_per_1k", {}) for a in consumers},
        "load_cost": {
            "fixed_ms_per_load": round(per_load, 1),
            "ms_per_message": round(per_message, 4),
            # Process CPU of loads of 100 and 1,000 messages alone, after each consumer run.
            "alone": {"fixed_ms_per_load": round(alone_per_load, 1), "ms_per_message": round(alone_per_message, 4)},
            "outside_loads_ms_per_msg": round(outside, 3),
            "ratio_at_batch_1000": round(at_1000, 3),
            "batch_for_target": round(per_load / room) if room > 0 else None,
        },
        "requests_per_msg": {
            "steady": requests,
            "drain": consumer["drain"]["requests_per_msg"],
            "overall": consumer["overall"]["requests_per_msg"],
            "steady_5s": arms["consumer_5s"]["steady"]["requests_per_msg"],
            "bare_steady": round(bare("requests_per_msg"), 4),
        },
        "wall_ratio": {
            "steady": versus_bare("consumer", "msgs_per_s"),
            "steady_5s": versus_bare("consumer_5s", "msgs_per_s"),
            "overall": versus_bare("consumer", "msgs_per_s", "overall"),
        },
        "redeliveries": {label: arm["counts"]["redeliveries"] for label, arm in arms.items()},
        "delete_failures": {label: arm["counts"]["delete_failures"] for label, arm in arms.items()},
        # Sent, acknowledged by moto, never delivered: moto's unlocked delete dropped them.
        "not_delivered": {label: arm["counts"]["not_delivered"] for label, arm in arms.items()},
        "arms": arms,
    }
    note = f"mean batch {consumer['steady']['mean_batch']:g} at {consumer['steady']['msgs_per_s']} msg/s"
    lost = sum(arm["counts"]["not_delivered"] for arm in arms.values())
    if lost:
        note += f"; {lost} messages sent but never delivered by moto"
    return [
        Result("sqs", cpu_ratio, "consumer CPU/msg <= 1.5 x bare loop's", cpu_ratio <= TARGET_RATIO, figures, note),
        Result("sqs", requests, "<= 0.25 SQS requests/msg (steady)", requests <= 0.25, {}, "requests per message"),
    ]
