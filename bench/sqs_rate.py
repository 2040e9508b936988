"""SQS: `loginvault run --receivers W` against a moto server, vs a bare boto3 loop of receive(10) +
delete_message_batch with the same W threads, on the same server, each over the same number
of messages, with a producer keeping the visible backlog at <= 200 (moto slows with depth)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

from bench import harness
from bench.harness import Result, timed
from ingest import config, sample, sqs
from ingest.consumer import Consumer
from ingest.raw_loader import RawLoader
from ingest.settings import RunSettings, SqsSettings
from ingest.sqs import Queue

BACKLOG = 200


def produce(settings: SqsSettings, total: int, observed, backlog: int = BACKLOG) -> None:
    """Send `total` sample events, topping the visible backlog up to `backlog`; `observed` gets
    the sum and count of the visible depths it saw."""
    queue = Queue(settings)
    bodies = (sample.to_body(e) for e in sample.synthetic_events(total, seed=13))
    sent = 0
    while sent < total:
        visible, _ = queue.depth()
        observed[0] += visible
        observed[1] += 1
        room = min(backlog - visible, total - sent)
        if room < 10 and sent + room < total:
            time.sleep(0.01)
            continue
        sent += queue.send(b for _, b in zip(range(room), bodies, strict=False))


class Producer:
    """The producers, in a process of their own: like real ones, they take no CPU time (GIL)
    from the consumer being measured."""

    def __init__(self, queue: Queue, total: int, backlog: int = BACKLOG) -> None:
        context = multiprocessing.get_context("spawn")
        self.observed = context.Array("d", 2, lock=False)  # written by the producer only
        self.process = context.Process(
            target=produce, args=(queue.settings, total, self.observed, backlog), daemon=True
        )

    def start(self) -> None:
        self.process.start()

    def join(self, timeout: float | None = None) -> float:
        """Waits for the producer (stops it after `timeout` s); the mean visible backlog it saw."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        return self.observed[0] / max(1, self.observed[1])


def ingest_rate(settings: SqsSettings, dsn: str, n: int, receivers: int) -> tuple[float, float]:
    queue = Queue(settings)
    producer = Producer(queue, n)
    options = RunSettings(follow=True, max_messages=n, receivers=receivers, wait_seconds=1, progress_seconds=1e9)
    loaders = [RawLoader(harness.role_dsn(dsn, config.LOADER_ROLE)) for _ in range(options.loaders)]
    try:
        with timed() as seconds:
            producer.start()
            stats = Consumer(queue, loaders, options).run()
        backlog = producer.join()
    finally:
        for loader in loaders:
            loader.close()
    assert stats.landed == n and stats.deleted == n, stats.line()
    return n / seconds(), backlog


def bare_rate(settings: SqsSettings, n: int, receivers: int) -> tuple[float, float]:
    queue = Queue(settings)
    producer = Producer(queue, n)
    lock = threading.Lock()
    done = [0]

    def consume() -> None:
        client = queue.client
        while True:
            with lock:
                if done[0] >= n:
                    return
            response = client.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = response.get("Messages", [])
            if messages:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                client.delete_message_batch(QueueUrl=queue.url, Entries=entries)
                with lock:
                    done[0] += len(messages)

    with timed() as seconds:
        producer.start()
        threads = [threading.Thread(target=consume) for _ in range(receivers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    backlog = producer.join()
    return done[0] / seconds(), backlog


def run(dsn: str, endpoint_url: str, n: int, receivers: int) -> list[Result]:
    region = SqsSettings(None).region
    rates, backlogs = {}, {}
    # Each on a fresh queue; bare first, then ingest, then bare again (the baseline is their mean).
    for label in ("bare", "ingest", "bare2"):
        url, _ = sqs.ensure_queues(endpoint_url, region, name=f"bench-{label}-{uuid.uuid4().hex[:6]}")
        settings = SqsSettings(url, endpoint_url, region)
        if label == "ingest":
            rates[label], backlogs[label] = ingest_rate(settings, dsn, n, receivers)
        else:
            rates[label], backlogs[label] = bare_rate(settings, n, receivers)
    bare = (rates["bare"] + rates["bare2"]) / 2
    ratio = rates["ingest"] / bare
    figures = {
        "messages": n,
        "receivers": receivers,
        "backlog": BACKLOG,
        "mean_visible_backlog": {label: round(depth, 1) for label, depth in backlogs.items()},
        "ingest_msgs_per_s": round(rates["ingest"]),
        "bare_loop_msgs_per_s": round(bare),
        "bare_runs": [round(rates["bare"]), round(rates["bare2"])],
    }
    return [Result("sqs", ratio, ">= 0.9 x bare boto3 loop", ratio >= 0.9, figures)]
