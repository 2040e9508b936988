"""Unit: the batch builder (fill while messages come, go when the queue drains; batch size, window,
carry-over) over the inbox; no services."""

from __future__ import annotations

import threading
import time

from doubles import chunks, message, messages
from ingest.consumer.batching import QUIET_SECONDS, BatchBuilder, Inbox
from ingest.settings import RunSettings

# Set: a put into a full inbox gives up at once instead of blocking the test.
stopped = threading.Event()
stopped.set()


def builder(*arrived: list, batch_size: int = 100, batch_seconds: float = 5.0, visibility: int = 300) -> BatchBuilder:
    """A batch builder whose inbox holds the chunks given (and is still open); a chunk of fewer
    than MAX_BATCH messages is what a receive brings when the queue has drained."""
    options = RunSettings(batch_size=batch_size, batch_seconds=batch_seconds, visibility_timeout=visibility)
    inbox = Inbox(options.batch_size)
    for chunk in arrived:
        assert inbox.put(chunk, stopped), "more chunks than the inbox holds"
    return BatchBuilder(inbox, options, threading.Event())


def timed(build: BatchBuilder) -> tuple[list, float]:
    started = time.monotonic()
    batch = build.next_batch()
    return batch, time.monotonic() - started


def test_when_the_queue_has_drained_a_batch_goes_at_once_with_what_has_arrived():
    # GIVEN 15 messages in the inbox: a full receive of 10, then one of 5 (the queue had no more)
    arrived = messages(15)
    build = builder(*chunks(arrived))
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it goes with the 15 once no more come for a moment, instead of waiting out its 5 s window
    assert batch == arrived
    assert QUIET_SECONDS <= seconds < build.window / 2


def test_while_full_receives_keep_coming_a_batch_collects_until_its_window_ends():
    # GIVEN two full receives (10 each) in the inbox and a 0.3 s window: the queue has more
    arrived = messages(20)
    build = builder(*chunks(arrived), batch_seconds=0.3)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it waited for more until the window ended (not for the default 5 s one), then went
    assert batch == arrived
    assert 0.3 <= seconds < RunSettings().batch_seconds * 5


def test_while_short_receives_keep_coming_a_batch_collects_until_its_window_ends():
    # GIVEN receives of 3 messages each (the queue holds only a few at a time), one every 20 ms
    # for 1.2 s or more, and a 0.3 s window
    build = builder(batch_seconds=0.3, batch_size=1000)  # an inbox that holds every receive
    sent: list = []
    flowing = threading.Event()
    flowing.set()

    def flow() -> None:
        for _ in range(60):
            chunk = messages(3)
            sent.extend(chunk)
            assert build.inbox.put(chunk, stopped)
            time.sleep(0.02)
        flowing.clear()

    flow_thread = threading.Thread(target=flow)
    flow_thread.start()
    # WHEN the next batch is built
    batch, seconds = timed(build)
    still_flowing = flowing.is_set()
    flow_thread.join()
    # THEN it went when its window ended, while messages still came, with the messages of many
    # receives (not with the first few, as a batch that went at the first drained receive would)
    assert seconds >= 0.3
    assert still_flowing
    assert len(batch) > 3 * 5
    assert batch == sent[: len(batch)]


def test_a_receive_that_asked_for_fewer_and_got_them_all_is_not_a_drained_queue():
    # GIVEN a receive that asked for 3 (the run's message budget) and got 3, and a 0.3 s window
    options = RunSettings(batch_size=100, batch_seconds=0.3)
    inbox = Inbox(options.batch_size)
    arrived = messages(3)
    assert inbox.put(arrived, stopped, asked=3)
    build = BatchBuilder(inbox, options, threading.Event())
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN the batch waited for its window: the queue may well have more
    assert batch == arrived
    assert seconds >= 0.3


def test_a_batch_goes_once_a_drained_receive_comes_while_it_collects():
    # GIVEN a full receive in the inbox, a 5 s window, and a receive of 4 (the queue has drained)
    # that arrives 0.2 s later
    first, last = messages(10), messages(4)
    build = builder(first)
    put_at: list[float] = []

    def later() -> None:
        time.sleep(0.2)
        put_at.append(time.monotonic())
        assert build.inbox.put(last, stopped)

    putter = threading.Thread(target=later)
    putter.start()
    # WHEN the next batch is built
    batch, seconds = timed(build)
    went_at = time.monotonic()
    putter.join()
    # THEN it went with both once no chunk came for QUIET_SECONDS after the drained receive, long
    # before its window ended
    assert batch == first + last
    assert went_at - put_at[0] >= QUIET_SECONDS
    assert seconds < build.window / 2


def test_a_full_batch_goes_at_once():
    # GIVEN 30 messages in the inbox (full receives: the queue has more), batches of 20, a 5 s window
    arrived = messages(30)
    build = builder(*chunks(arrived), batch_size=20)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it holds the first 20 and did not wait for the window
    assert batch == arrived[:20]
    assert seconds < build.window / 2


def test_what_a_chunk_brings_beyond_the_batch_size_is_carried_into_the_next_batch():
    # GIVEN two chunks of 10 and batches of 15
    arrived = messages(20)
    build = builder(*chunks(arrived), batch_size=15)
    # WHEN two batches are built
    first, second = build.next_batch(), build.next_batch()
    # THEN the second starts with the 5 carried over: every message once, in order
    assert first == arrived[:15]
    assert second == arrived[15:]


def test_the_window_is_at_most_a_quarter_of_the_visibility_timeout():
    # GIVEN a 60 s window asked for, but a visibility timeout of 2 s, and a full receive
    arrived = messages(10)
    build = builder(*chunks(arrived), batch_seconds=60, visibility=2)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it waited 0.5 s at most: a message is never held near its visibility timeout by batching
    assert build.window == 0.5
    assert batch == arrived
    assert seconds < 2  # well before the visibility timeout


def test_once_the_receivers_are_done_the_last_messages_go_and_then_nothing():
    # GIVEN 20 messages in an inbox that the receivers have closed, batches of 8
    arrived = messages(20)
    build = builder(*chunks(arrived), batch_size=8)
    build.inbox.close()
    # WHEN batches are built until one comes back empty
    batches = [build.next_batch() for _ in range(4)]
    # THEN every message went, the last batch without waiting for more, and the builder is drained
    assert [len(b) for b in batches] == [8, 8, 4, 0]
    assert [m for b in batches for m in b] == arrived
    assert build.drained()


def test_a_stop_ends_the_wait_for_a_first_message():
    # GIVEN an open, empty inbox
    build = builder()
    # WHEN the run stops
    build.stopping.set()
    batch, seconds = timed(build)
    # THEN the builder returns an empty batch without waiting out its 5 s window
    assert batch == []
    assert seconds < build.window / 2


def test_a_receiver_is_not_kept_waiting_on_a_full_inbox_after_the_stop():
    # GIVEN an inbox full with two batches' worth of chunks
    inbox = Inbox(batch_size=10)
    stopping = threading.Event()
    assert inbox.put(messages(10), stopping) and inbox.put(messages(10), stopping)
    # WHEN a receiver hands over one more chunk after the stop
    stopping.set()
    # THEN the inbox refuses it (the receiver releases those messages) instead of blocking
    assert not inbox.put(messages(10), stopping)


def large(count: int, size: int) -> list:
    return [message(body="x" * size) for _ in range(count)]


def test_a_batch_is_bounded_by_bytes_and_carries_the_rest():
    # GIVEN 10 bodies of 1,000 bytes, batches of 100 messages but 3,500 bytes
    arrived = large(10, 1000)
    options = RunSettings(batch_size=100, batch_bytes=3500, batch_seconds=5.0)
    inbox = Inbox(options.batch_size)
    for chunk in chunks(arrived):
        assert inbox.put(chunk, stopped)
    inbox.close()
    build = BatchBuilder(inbox, options, threading.Event())
    # WHEN the batches are built
    sizes = [len(build.next_batch()) for _ in range(4)]
    # THEN each holds what fits in 3,500 bytes, in order, and nothing is lost
    assert sizes == [3, 3, 3, 1]
    assert build.drained()


def test_a_body_larger_than_the_bound_goes_alone():
    options = RunSettings(batch_size=100, batch_bytes=10, batch_seconds=5.0)
    inbox = Inbox(options.batch_size)
    arrived = large(2, 50)
    assert inbox.put(arrived, stopped)
    inbox.close()
    build = BatchBuilder(inbox, options, threading.Event())
    assert [build.next_batch(), build.next_batch()] == [arrived[:1], arrived[1:]]


def test_the_inbox_holds_two_batches_of_bytes_at_most():
    # GIVEN an inbox for batches of 1,000 bytes
    inbox = Inbox(100, 1000)
    # WHEN chunks of 600 bytes come (a put into a full inbox gives up: the run is stopping)
    taken = [inbox.put(large(1, 600), stopped) for _ in range(4)]
    # THEN it takes the first three (an empty inbox takes any chunk), not a fourth, until one is got
    assert taken == [True, True, True, False]
    assert inbox.get(0.1) is not None
    assert inbox.put(large(1, 600), stopped)
