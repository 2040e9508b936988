"""Unit: the consumer's units wired together by its run loop, over an in-memory queue and a fake
loader: what lands is deleted, what is refused stays, a failed load deletes nothing, a stop lands
the batch in hand, releases the rest and lets the open long polls return. No services."""

from __future__ import annotations

import threading
import time

import pytest

from doubles import FakeLoader, MemoryQueue
from ingest import LoginvaultError
from ingest.consumer import Consumer
from ingest.settings import RunSettings

BODIES = [f'{{"user_id": "u-{i}"}}' for i in range(25)]


def run(queue: MemoryQueue, loader: FakeLoader, **options) -> Consumer:
    consumer = Consumer(queue, [loader], RunSettings(wait_seconds=0, loaders=1, **options))
    consumer.run()
    return consumer


def test_a_drain_lands_and_deletes_every_message_in_batches():
    # GIVEN 25 messages in the queue
    queue, loader = MemoryQueue(BODIES), FakeLoader()
    # WHEN a run drains it in batches of at most 7
    consumer = run(queue, loader, batch_size=7)
    # THEN every message landed once, in batches of at most 7, and left the queue
    assert sorted(m.body for batch in loader.batches for m in batch) == sorted(BODIES)
    assert max(len(batch) for batch in loader.batches) <= 7
    assert queue.depth() == (0, 0)
    stats = consumer.stats
    assert (stats.received, stats.landed, stats.deleted, stats.released) == (25, 25, 25, 0)


def test_refused_messages_stay_in_the_queue_and_the_rest_is_deleted():
    # GIVEN 25 messages, 2 of which the database refuses
    queue, loader = MemoryQueue(BODIES), FakeLoader(refuse={BODIES[3], BODIES[17]})
    # WHEN a run drains the queue
    consumer = run(queue, loader, batch_size=10)
    # THEN 23 are deleted; the 2 refused wait in the queue (in flight) for redelivery
    assert len(queue.deleted) == 23
    assert queue.depth() == (0, 2)
    assert (consumer.stats.landed, consumer.stats.refused) == (23, 2)
    assert "refused 2" in consumer.stats.line()


def test_max_messages_stops_after_n():
    queue, loader = MemoryQueue(BODIES), FakeLoader()
    consumer = run(queue, loader, max_messages=12)
    assert (consumer.stats.received, consumer.stats.deleted) == (12, 12)
    assert queue.depth() == (13, 0)


def test_a_failed_load_stops_the_run_deletes_nothing_and_releases_what_is_held():
    # GIVEN a loader whose loads fail
    queue = MemoryQueue(BODIES)
    loader = FakeLoader(error=LoginvaultError("loading into raw failed after 3 attempts: boom"))
    # WHEN a run meets the failure
    with pytest.raises(LoginvaultError, match="boom"):
        run(queue, loader, batch_size=10)
    # THEN nothing was deleted, and every message it held is visible again at once
    assert queue.deleted == []
    assert queue.depth() == (25, 0)


def test_a_stop_lands_the_batch_in_hand_and_releases_the_rest_without_waiting_out_the_long_poll():
    # GIVEN a following run with a 20 s long poll, its first batch of 10 in a slow load
    queue, gate = MemoryQueue(BODIES), threading.Event()
    loader = FakeLoader(gate=gate)
    consumer = Consumer(queue, [loader], RunSettings(follow=True, wait_seconds=20, batch_size=10, loaders=1))
    running = threading.Thread(target=consumer.run)
    running.start()
    assert loader.loading.wait(timeout=5)
    # WHEN the run is stopped, and then the load in hand commits
    consumer.stopping.set()
    gate.set()
    started = time.monotonic()
    running.join(timeout=10)
    # THEN it ends well before the long poll would: the batch in hand landed, the rest was released
    assert not running.is_alive()
    assert time.monotonic() - started < 10  # half the long poll: it did not wait the poll out
    assert len(loader.batches) == 1
    assert queue.deleted == [m.message_id for m in loader.batches[0]]
    assert queue.depth() == (15, 0)
    assert consumer.stats.released >= 15
    assert consumer.held() == 0


def test_a_stop_lets_the_open_long_polls_return_and_releases_what_they_bring():
    # GIVEN a following run whose two receivers wait in 20 s long polls of an empty queue
    queue = MemoryQueue()
    consumer = Consumer(queue, [FakeLoader()], RunSettings(follow=True, wait_seconds=20, receivers=2, loaders=1))
    running = threading.Thread(target=consumer.run)
    running.start()
    deadline = time.monotonic() + 5
    while consumer.receivers.open_polls() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert consumer.receivers.open_polls() == 2
    assert "2 open long polls abandoned" in consumer.abandoning()
    # WHEN the run is stopped, and messages arrive while it stops
    consumer.stopping.set()
    running.join(timeout=0.5)  # a run that did not wait for its polls would have ended by now
    polls_at_the_end = None if running.is_alive() else consumer.receivers.open_polls()
    queue.send(*BODIES[:5])
    running.join(timeout=30)
    # THEN the run ended only once its polls had returned, and what they brought is visible again
    assert not running.is_alive()
    assert polls_at_the_end is None, f"the run ended with {polls_at_the_end} polls open"
    assert consumer.receivers.open_polls() == 0 and consumer.abandoning() == ""
    assert queue.depth() == (5, 0)
    assert consumer.stats.released == consumer.stats.received >= 5
