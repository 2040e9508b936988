"""Unit tests of the SQS plumbing that need no server: batching, message records, error translation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ingest import LoginvaultError
from ingest.consumer import sqs

KIB = 1024


def test_send_chunks_at_most_ten_entries():
    bodies = [f"m{i}" for i in range(25)]
    chunks = list(sqs._send_chunks(bodies))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [b for c in chunks for b in c] == bodies


def test_send_chunks_at_most_256_kib_per_batch():
    bodies = [("x" * (100 * KIB)) for _ in range(5)]
    chunks = list(sqs._send_chunks(bodies))
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(sum(len(b.encode()) for b in c) <= sqs.MAX_BATCH_BYTES for c in chunks)


def test_send_chunks_counts_utf8_bytes_not_characters():
    # 3 bytes per character: 30,000 chars are ~88 KiB, so only two fit into one batch.
    bodies = ["€" * 30_000] * 3
    assert [len(c) for c in sqs._send_chunks(bodies)] == [2, 1]


def test_send_chunks_a_full_size_message_travels_alone():
    exact = "y" * sqs.MAX_BATCH_BYTES
    assert [len(c) for c in sqs._send_chunks(["a", exact, "b"])] == [1, 1, 1]


def test_send_chunks_rejects_an_oversized_message():
    with pytest.raises(LoginvaultError, match="exceeds SQS's 256 KiB limit"):
        list(sqs._send_chunks(["ok", "z" * (sqs.MAX_BATCH_BYTES + 1)]))


def test_send_chunks_of_nothing_is_nothing():
    assert list(sqs._send_chunks([])) == []


def test_message_from_a_receive_response():
    received_at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    raw = {
        "MessageId": "m-1",
        "Body": "not json {",
        "ReceiptHandle": "rh",
        "Attributes": {"SentTimestamp": "1714564800123", "ApproximateReceiveCount": "3"},
    }
    m = sqs._message(raw, received_at)
    assert m.message_id == "m-1" and m.body == "not json {" and m.receipt_handle == "rh"
    assert m.sent_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert m.receive_count == 3
    assert m.received_at == received_at


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "boom"}}, "ReceiveMessage")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "cannot reach the SQS endpoint http://e"),
        (NoCredentialsError(), "no AWS credentials found"),
        (_client_error("AWS.SimpleQueueService.NonExistentQueue"), "the SQS queue http://e/1/q does not exist"),
        (_client_error("QueueDoesNotExist"), "does not exist"),
        (_client_error("InvalidClientTokenId"), "SQS refused the credentials or permissions (InvalidClientTokenId)"),
        (_client_error("Throttling"), "SQS call failed: Throttling: boom"),
    ],
)
def test_translate_errors_gives_one_sentence(exc, expected):
    with pytest.raises(LoginvaultError) as info:
        with sqs.translate_errors("http://e", "http://e/1/q"):
            raise exc
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
