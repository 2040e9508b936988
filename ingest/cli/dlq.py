"""`loginvault dlq status|redrive`: the dead-letter queue of SQS_QUEUE_URL, and moving it back."""

from __future__ import annotations

import argparse
import sys

from ingest import count, settings
from ingest.cli.command import Command
from ingest.settings import CommonSettings, DlqRedriveSettings, SqsSettings


class DlqStatus(Command):
    name = "status"
    help = "the dead-letter queue's depth and the ids of a few of its messages (never bodies)"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.consumer import sqs

        report = sqs.dlq_report(settings.load(SqsSettings))
        print(
            f"dlq: {report.url}: {count(report.visible, 'message')} waiting, {report.in_flight} in flight",
            file=sys.stderr,
        )
        for message_id, receive_count, sent_at in report.sample:
            print(f"{message_id}\treceived {count(receive_count, 'time')}\tsent {sent_at:%Y-%m-%dT%H:%M:%SZ}")
        return 0


class DlqRedrive(Command):
    name = "redrive"
    help = "move the dead-letter queue's messages back to the source queue"
    flags = (DlqRedriveSettings,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.consumer import sqs

        queue = settings.load(SqsSettings)
        moved = sqs.dlq_redrive(queue, max_messages=settings.load(DlqRedriveSettings, args).max_messages)
        print(f"dlq: moved {count(moved, 'message')} back to {queue.queue_url}", file=sys.stderr)
        return 0


class DlqCommand(Command):
    name = "dlq"
    help = "the dead-letter queue of SQS_QUEUE_URL: status, or redrive its messages back"
    actions = (DlqStatus(), DlqRedrive())
