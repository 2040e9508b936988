"""SQS plumbing: a retrying boto3 client, long-polling receive, checked batch delete and send.

Every call that can fail because of the user's setup (endpoint, queue, credentials) is wrapped in
`translate_errors`, which turns botocore's exceptions into one-sentence LoginvaultErrors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from ingest import LoginvaultError, config
from ingest.settings import SqsSettings

log = logging.getLogger(__name__)

MAX_BATCH = 10  # SQS's limit for ReceiveMessage, SendMessageBatch and DeleteMessageBatch
MAX_WAIT_SECONDS = 20  # SQS's limit for WaitTimeSeconds
MAX_BATCH_BYTES = 256 * 1024  # SendMessageBatch payload limit
RECEIVE_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount"]
# Set by a DLQ redrive on the copy it sends back, so that the copy keeps the original's
# identity (the mart deduplicates on message_id) and send time.
ORIGINAL_ID_ATTRIBUTE = "loginvault_message_id"
ORIGINAL_SENT_ATTRIBUTE = "loginvault_sent_timestamp"


class SqsClient(Protocol):
    """The calls of boto3's SQS client made here (boto3 ships no types: the responses are its dicts)."""

    exceptions: Any

    def get_queue_url(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]: ...
    def create_queue(self, **kwargs: Any) -> dict[str, Any]: ...
    def receive_message(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]: ...
    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]: ...
    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Message:
    """One delivery of an SQS message, as it lands in raw.login_events."""

    message_id: str
    body: str
    sent_at: datetime
    received_at: datetime
    receive_count: int
    receipt_handle: str


def make_client(
    endpoint_url: str | None, region: str, retry_mode: str = "standard", max_attempts: int = 5, read_timeout: int = 30
) -> SqsClient:
    """A boto3 SQS client with botocore's retry mode (standard by default) and bounded attempts."""
    cfg = Config(
        region_name=region,
        retries={"mode": retry_mode, "max_attempts": max_attempts},
        connect_timeout=5,
        # Long polls hold the connection for up to 20 s: the read timeout must be longer.
        read_timeout=max(read_timeout, MAX_WAIT_SECONDS + 10),
        max_pool_connections=32,
    )
    client: SqsClient = boto3.session.Session().client("sqs", endpoint_url=endpoint_url, config=cfg)
    return client


@contextlib.contextmanager
def translate_errors(endpoint_url: str | None, queue_url: str | None = None) -> Iterator[None]:
    """Turn the SQS errors a user can cause into one clear sentence."""
    where = endpoint_url or "AWS's default SQS endpoint"
    try:
        yield
    except EndpointConnectionError:
        raise LoginvaultError(
            f"cannot reach the SQS endpoint {where}: is it running (`make stack-up`) and SQS_ENDPOINT_URL right?"
        ) from None
    except NoCredentialsError:
        raise LoginvaultError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile"
        ) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            raise LoginvaultError(
                f"the SQS queue {queue_url or ''} does not exist: check SQS_QUEUE_URL (or run `make stack-up`)"
            ) from None
        if code in {
            "AccessDenied",
            "AccessDeniedException",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
        }:
            raise LoginvaultError(
                f"SQS refused the credentials or permissions ({code}) for {queue_url or where}"
            ) from None
        raise LoginvaultError(f"SQS call failed: {code}: {exc.response.get('Error', {}).get('Message', '')}") from None
    except BotoCoreError as exc:
        raise LoginvaultError(f"SQS call to {where} failed: {exc}") from None


class Queue:
    """One SQS queue: receive, delete and send through a shared, thread-safe boto3 client."""

    def __init__(self, settings: SqsSettings, client: SqsClient | None = None) -> None:
        self.settings = settings
        self.url = settings.queue_url
        self.client = client or make_client(settings.endpoint_url, settings.region, settings.retry_mode)

    def errors(self) -> contextlib.AbstractContextManager[None]:
        return translate_errors(self.settings.endpoint_url, self.url)

    def attributes(self) -> dict[str, str]:
        """Queue attributes; also the pre-flight check that endpoint, queue and credentials work."""
        with self.errors():
            attributes: dict[str, str] = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])[
                "Attributes"
            ]
            return attributes

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages, as SQS approximates them."""
        attrs = self.attributes()
        return int(attrs.get("ApproximateNumberOfMessages", 0)), int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

    def receive(
        self,
        max_messages: int = MAX_BATCH,
        wait_seconds: int = MAX_WAIT_SECONDS,
        visibility_timeout: int = config.DEFAULT_VISIBILITY_TIMEOUT,
    ) -> list[Message]:
        """One long-polling ReceiveMessage call."""
        with self.errors():
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(max_messages, MAX_BATCH)),
                WaitTimeSeconds=max(0, min(wait_seconds, MAX_WAIT_SECONDS)),
                VisibilityTimeout=visibility_timeout,
                MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
                MessageAttributeNames=[ORIGINAL_ID_ATTRIBUTE, ORIGINAL_SENT_ATTRIBUTE],
            )
        received_at = datetime.now(UTC)
        return [_message(m, received_at) for m in response.get("Messages", [])]

    def delete(self, messages: Sequence[Message]) -> tuple[int, list[dict[str, str | None]]]:
        """DeleteMessageBatch in chunks of 10; returns (deleted, failed entries), every entry checked."""
        deleted = 0
        failed: list[dict[str, str | None]] = []
        for chunk in _chunks(messages, MAX_BATCH):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)]
            with self.errors():
                response = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            deleted += len(response.get("Successful", []))
            for entry in response.get("Failed", []):
                message = chunk[int(entry["Id"])]
                failed.append(
                    {"message_id": message.message_id, "code": entry.get("Code"), "reason": entry.get("Message")}
                )
        return deleted, failed

    def change_visibility(self, messages: Sequence[Message], timeout: int) -> list[dict[str, str | None]]:
        """ChangeMessageVisibilityBatch; returns the failed entries (e.g. stale receipt handles)."""
        failed: list[dict[str, str | None]] = []
        for chunk in _chunks(messages, MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout}
                for i, m in enumerate(chunk)
            ]
            with self.errors():
                response = self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            failed += [
                {"message_id": chunk[int(e["Id"])].message_id, "code": e.get("Code")}
                for e in response.get("Failed", [])
            ]
        return failed

    def send(self, bodies: Iterable[str]) -> int:
        """SendMessageBatch in chunks of ≤10 messages and ≤256 KiB; raises if any entry failed."""
        sent = 0
        for chunk in _send_chunks(bodies):
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
            with self.errors():
                response = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            if response.get("Failed"):
                first = response["Failed"][0]
                raise LoginvaultError(
                    f"SQS rejected {len(response['Failed'])} of {len(chunk)} messages: {first.get('Code')}: {first.get('Message')}"
                )
            sent += len(response.get("Successful", []))
        return sent


def _message(raw: dict[str, Any], received_at: datetime) -> Message:
    attrs = raw.get("Attributes", {})
    original = {name: value.get("StringValue") for name, value in raw.get("MessageAttributes", {}).items()}
    sent_ms = int(original.get(ORIGINAL_SENT_ATTRIBUTE) or attrs.get("SentTimestamp", 0)) or int(
        received_at.timestamp() * 1000
    )
    return Message(
        message_id=original.get(ORIGINAL_ID_ATTRIBUTE) or raw["MessageId"],
        body=raw["Body"],
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
        received_at=received_at,
        receive_count=int(attrs.get("ApproximateReceiveCount", 1)),
        receipt_handle=raw["ReceiptHandle"],
    )


def _chunks(items: Sequence[Message], size: int) -> Iterator[Sequence[Message]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _send_chunks(bodies: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    size = 0
    for body in bodies:
        n = len(body.encode("utf-8"))
        if n > MAX_BATCH_BYTES:
            raise LoginvaultError(f"a message of {n} bytes exceeds SQS's 256 KiB limit")
        if chunk and (len(chunk) == MAX_BATCH or size + n > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(body)
        size += n
    if chunk:
        yield chunk


def ensure_queues(endpoint_url: str | None, region: str, name: str = config.QUEUE_NAME) -> tuple[str, bool]:
    """Create `name` and its dead-letter queue (redrive after DLQ_MAX_RECEIVE_COUNT receives).

    Returns the queue URL and whether the queue was created by this call.
    """
    client = make_client(endpoint_url, region)
    with translate_errors(endpoint_url):
        try:
            existing: str = client.get_queue_url(QueueName=name)["QueueUrl"]
            return existing, False
        except client.exceptions.QueueDoesNotExist:
            pass
        dlq_url = client.create_queue(QueueName=config.dlq_name(name))["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(config.DLQ_MAX_RECEIVE_COUNT)}
        url: str = client.create_queue(
            QueueName=name,
            Attributes={
                "RedrivePolicy": json.dumps(redrive),
                "VisibilityTimeout": str(config.DEFAULT_VISIBILITY_TIMEOUT),
                "MessageRetentionPeriod": str(14 * 24 * 3600),
            },
        )["QueueUrl"]
        return url, True


# ---------------------------------------------------------------- dead-letter queue


@dataclass(frozen=True)
class DlqReport:
    url: str
    visible: int
    in_flight: int
    sample: list[tuple[str, int, datetime]]  # (message id, receive count, sent at) of a few


def dead_letter_queue(source: Queue) -> Queue:
    """The queue named by the source queue's RedrivePolicy."""
    policy = source.attributes().get("RedrivePolicy")
    if not policy:
        raise LoginvaultError(f"{source.url} has no dead-letter queue (no RedrivePolicy)")
    arn = json.loads(policy)["deadLetterTargetArn"]
    account, name = arn.split(":")[4], arn.split(":")[5]
    with source.errors():
        url: str = source.client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return Queue(dataclasses.replace(source.settings, queue_url=url), client=source.client)


def dlq_report(settings: SqsSettings) -> DlqReport:
    """Depth of the DLQ and the ids of up to 10 of its messages (never their bodies)."""
    dlq = dead_letter_queue(Queue(settings))
    visible, in_flight = dlq.depth()
    # VisibilityTimeout 0: a look, not a take; the DLQ has no redrive of its own to trip.
    sample = dlq.receive(MAX_BATCH, wait_seconds=0, visibility_timeout=0) if visible else []
    return DlqReport(dlq.url, visible, in_flight, [(m.message_id, m.receive_count, m.sent_at) for m in sample])


def dlq_redrive(settings: SqsSettings, max_messages: int | None = None) -> int:
    """Move DLQ messages back to the source queue: send a copy (keeping the original message id
    and send time as attributes), then delete the DLQ message. Returns how many moved."""
    source = Queue(settings)
    dlq = dead_letter_queue(source)
    moved = 0
    while max_messages is None or moved < max_messages:
        want = MAX_BATCH if max_messages is None else min(MAX_BATCH, max_messages - moved)
        messages = dlq.receive(want, wait_seconds=1, visibility_timeout=60)
        if not messages:
            break
        entries = [
            {
                "Id": str(i),
                "MessageBody": m.body,
                "MessageAttributes": {
                    ORIGINAL_ID_ATTRIBUTE: {"DataType": "String", "StringValue": m.message_id},
                    ORIGINAL_SENT_ATTRIBUTE: {
                        "DataType": "Number",
                        "StringValue": str(int(m.sent_at.timestamp() * 1000)),
                    },
                },
            }
            for i, m in enumerate(messages)
        ]
        with source.errors():
            response = source.client.send_message_batch(QueueUrl=source.url, Entries=entries)
        sent = [messages[int(e["Id"])] for e in response.get("Successful", [])]
        deleted, failed = dlq.delete(sent)
        if response.get("Failed") or failed:
            raise LoginvaultError(
                f"redrive stopped: {len(response.get('Failed', []))} sends and {len(failed)} deletes failed"
                " (the messages not sent stay in the DLQ)"
            )
        moved += deleted
    return moved
