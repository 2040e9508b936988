"""Unit: the adaptive batch builder (batch size, window, carry-over) over the inbox; no services."""

from __future__ import annotations

import threading
import time

from doubles import chunks, message, messages
from ingest.consumer.batching import BatchBuilder, Inbox
from ingest.settings import RunSettings

# Set: a put into a full inbox gives up at once instead of blocking the test.
stopped = threading.Event()
stopped.set()


def builder(
    *arrived: list, batch_size: int = 100, batch_seconds: float = 5.0, loading: bool = False, visibility: int = 300
) -> BatchBuilder:
    """A batch builder whose inbox holds the chunks given (and is still open)."""
    options = RunSettings(batch_size=batch_size, batch_seconds=batch_seconds, visibility_timeout=visibility)
    inbox = Inbox(options.batch_size)
    for chunk in arrived:
        assert inbox.put(chunk, stopped), "more chunks than the inbox holds"
    return BatchBuilder(inbox, options, threading.Event(), loading=lambda: loading)


def timed(build: BatchBuilder) -> tuple[list, float]:
    started = time.monotonic()
    batch = build.next_batch()
    return batch, time.monotonic() - started


def test_while_no_load_runs_a_batch_goes_at_once_with_what_has_arrived():
    # GIVEN 20 messages in the inbox, room for 100 in a batch, and no load running
    arrived = messages(20)
    build = builder(*chunks(arrived), loading=False)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it goes with the 20 at once instead of waiting out its 5 s window
    assert batch == arrived
    assert seconds < build.window / 2


def test_while_a_load_runs_a_batch_collects_until_its_window_ends():
    # GIVEN 10 messages in the inbox, a 0.3 s window, and a load running
    arrived = messages(10)
    build = builder(*chunks(arrived), batch_seconds=0.3, loading=True)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it waited for more until the window ended (not for the default 5 s one), then went
    assert batch == arrived
    assert 0.3 <= seconds < RunSettings().batch_seconds * 5


def test_a_full_batch_goes_at_once_even_while_a_load_runs():
    # GIVEN 30 messages in the inbox, batches of 20, a 5 s window, and a load running
    arrived = messages(30)
    build = builder(*chunks(arrived), batch_size=20, loading=True)
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
    # GIVEN a 60 s window asked for, but a visibility timeout of 2 s, and a load running
    arrived = messages(10)
    build = builder(*chunks(arrived), batch_seconds=60, visibility=2, loading=True)
    # WHEN the next batch is built
    batch, seconds = timed(build)
    # THEN it waited 0.5 s at most: a message is never held near its visibility timeout by batching
    assert build.window == 0.5
    assert batch == arrived
    assert seconds < 2  # well before the visibility timeout


def test_once_the_receivers_are_done_the_last_messages_go_and_then_nothing():
    # GIVEN 20 messages in an inbox that the receivers have closed, batches of 8
    arrived = messages(20)
    build = builder(*chunks(arrived), batch_size=8, loading=True)
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
    build = BatchBuilder(inbox, options, threading.Event(), loading=lambda: True)
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
    build = BatchBuilder(inbox, options, threading.Event(), loading=lambda: True)
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
