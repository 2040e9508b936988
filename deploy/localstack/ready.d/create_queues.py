"""LocalStack READY hook (docker-compose.yml mounts this directory on /etc/localstack/init/ready.d).

Creates `login-queue` and its dead-letter queue `login-queue-dlq` (redrive after 5 receives), as
`make stack-up` does on moto (ingest/consumer/sqs.py: ensure_queues). Idempotent: CreateQueue with the same
attributes returns the existing queue. LocalStack runs it inside its own Python, where boto3 is
installed; AWS_ENDPOINT_URL only lets it be tried against another SQS endpoint.
"""

import json
import os

import boto3

QUEUE = "login-queue"
MAX_RECEIVE_COUNT = 5  # ingest/config.py: DLQ_MAX_RECEIVE_COUNT
VISIBILITY_TIMEOUT = 300  # ingest/config.py: DEFAULT_VISIBILITY_TIMEOUT
RETENTION = 14 * 24 * 3600

sqs = boto3.client(
    "sqs",
    endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "http://localhost:4566"),
    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
dlq_url = sqs.create_queue(QueueName=f"{QUEUE}-dlq", Attributes={"MessageRetentionPeriod": str(RETENTION)})["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue_url = sqs.create_queue(
    QueueName=QUEUE,
    Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "MessageRetentionPeriod": str(RETENTION),
    },
)["QueueUrl"]
print(f"loginvault: {queue_url} (dead-letter queue {dlq_url}, after {MAX_RECEIVE_COUNT} receives)", flush=True)
