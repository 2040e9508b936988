"""Unit: acknowledging — delete only what landed, leave the refused in the queue, count stale
handles, release what is held at a stop; over an in-memory queue, no services."""

from __future__ import annotations

import logging
import time

from doubles import MemoryQueue
from ingest.consumer.acknowledging import Acknowledger
from ingest.consumer.loading import LoadResult
from ingest.consumer.stats import Stats
from ingest.consumer.visibility import InFlight

BODIES = [f'{{"user_id": "u-{i}", "ip": "10.0.0.{i}"}}' for i in range(5)]


def held(queue: MemoryQueue, visibility: int = 300) -> tuple[Acknowledger, list]:
    """GIVEN: the queue's messages received and held by this process; its acknowledger."""
    stats = Stats()
    in_flight = InFlight(queue, visibility, stats)
    received = queue.receive(10, visibility_timeout=visibility)
    in_flight.add(received)
    return Acknowledger(queue, in_flight, stats, workers=2), received


def test_only_what_landed_is_deleted():
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue)
    # WHEN a load committed 3 of the 5 (the database refused 2)
    ack.landed(LoadResult(batch, batch[:3], seconds=0.1))
    ack.finish()
    # THEN those 3 are deleted, the 2 refused are not, and neither is held any longer
    assert queue.deleted == [m.message_id for m in batch[:3]]
    assert queue.depth() == (0, 2)
    assert ack.in_flight.held() == []
    stats = ack.stats
    assert (stats.landed, stats.deleted, stats.refused, stats.delete_failures) == (3, 3, 2, 0)
    assert stats.last_load_at is not None


def test_refused_messages_come_back_after_their_visibility_timeout():
    # GIVEN messages held with a 1 s visibility timeout
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue, visibility=1)
    # WHEN the database refused every one of a load but the first
    ack.landed(LoadResult(batch, batch[:1], seconds=0.1))
    ack.finish()
    # THEN the refused are neither deleted nor released: SQS redelivers them after the timeout
    assert queue.depth() == (0, 4)
    time.sleep(1.1)
    redelivered = queue.receive(10)
    assert sorted(m.message_id for m in redelivered) == sorted(m.message_id for m in batch[1:])
    assert {m.receive_count for m in redelivered} == {2}


def test_a_stale_receipt_handle_fails_its_delete_and_is_counted_not_fatal(caplog):
    # GIVEN a message whose visibility ran out and which was received again: its handle is stale
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue)
    queue.expire()
    queue.receive(1)
    # WHEN the load that held the old handle commits
    with caplog.at_level(logging.WARNING):
        ack.landed(LoadResult(batch, batch, seconds=0.1))
        ack.finish()
    # THEN the others are deleted, the stale one is counted as a failed delete, and the run goes on
    assert (ack.stats.deleted, ack.stats.delete_failures) == (4, 1)
    assert "1 deletes failed" in caplog.text
    assert all(body not in caplog.text for body in BODIES), "a message body reached the log"


def test_an_unreachable_queue_fails_the_deletes_without_failing_the_run(caplog):
    # GIVEN held messages, and a queue that cannot be reached when it is time to delete
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue)
    queue.unreachable = True
    # WHEN their load commits
    with caplog.at_level(logging.WARNING):
        ack.landed(LoadResult(batch, batch, seconds=0.1))
        ack.finish()
    # THEN nothing is deleted, and it is reported, not raised
    assert queue.deleted == []
    assert ack.stats.landed == 5 and ack.stats.deleted == 0
    assert "a delete failed: cannot reach the SQS endpoint" in caplog.text
    # …and they are no longer held: not kept invisible, so SQS redelivers them after the timeout
    assert ack.in_flight.held() == []


def test_at_a_stop_everything_still_held_is_released_once():
    # GIVEN 5 held messages, 2 of them landed and deleted
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue)
    ack.landed(LoadResult(batch[:2], batch[:2], seconds=0.1))
    ack.finish()
    # WHEN the run stops and releases what it holds, twice (a stop sweeps again after the grace)
    released = [ack.release_held(), ack.release_held()]
    # THEN the other 3 are visible again at once, released (and counted) once
    assert released == [3, 0]
    assert queue.depth() == (3, 0)
    assert ack.stats.released == 3
    assert ack.in_flight.held() == []


def test_a_release_that_cannot_reach_the_queue_is_reported(caplog):
    # GIVEN held messages and an unreachable queue
    queue = MemoryQueue(BODIES)
    ack, _ = held(queue)
    queue.unreachable = True
    # WHEN the run stops
    with caplog.at_level(logging.WARNING):
        released = ack.release_held()
    # THEN nothing is released (they come back after their timeout), and it says so
    assert released == 0
    assert "could not release 5 messages" in caplog.text


def test_an_extension_racing_a_delete_counts_no_stale_handle(caplog):
    # GIVEN held messages due for an extension, and a delete of them that completes while the
    # ChangeMessageVisibility call is on its way (the acknowledger and the keeper run at once)
    queue = MemoryQueue(BODIES)
    ack, batch = held(queue, visibility=2)
    ack.in_flight._deadlines = {h: (m, 0.0) for h, (m, _) in ack.in_flight._deadlines.items()}  # all due
    change_visibility = queue.change_visibility

    def deleted_meanwhile(due, timeout):
        ack.landed(LoadResult(batch, batch, seconds=0.1))
        ack.finish()
        return change_visibility(due, timeout)  # every handle is gone: each entry fails

    queue.change_visibility = deleted_meanwhile
    # WHEN the keeper extends
    with caplog.at_level(logging.WARNING):
        ack.in_flight.extend_due()
    # THEN nothing held was stale: no count, no warning (the stale-handle alert stays quiet)
    assert queue.deleted == [m.message_id for m in batch]
    assert (ack.stats.stale_handles, ack.stats.extended) == (0, 0)
    assert "stale" not in caplog.text


def test_an_extension_of_a_message_received_again_counts_a_stale_handle():
    # GIVEN a held message whose visibility ran out and which was received again elsewhere
    queue = MemoryQueue(BODIES[:1])
    ack, batch = held(queue, visibility=1)
    time.sleep(1.1)
    assert queue.receive(10)  # another receiver: the held handle is stale now
    ack.in_flight._deadlines = {h: (m, 0.0) for h, (m, _) in ack.in_flight._deadlines.items()}
    # WHEN the keeper extends THEN the stale handle is counted
    ack.in_flight.extend_due()
    assert (ack.stats.stale_handles, ack.stats.extended) == (1, 0)
