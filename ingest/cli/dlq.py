"""`loginvault dlq [--redrive]`: the dead-letter queue of SQS_QUEUE_URL, and moving it back."""

from __future__ import annotations

import argparse
import sys

from ingest import count, settings
from ingest.cli.command import Command
from ingest.setting_values import argument_type, positive
from ingest.settings import CommonSettings, SqsSettings


class DlqCommand(Command):
    name = "dlq"
    help = "report the dead-letter queue of SQS_QUEUE_URL; --redrive moves its messages back"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--redrive", action="store_true", help="move the DLQ's messages back to the source queue")
        parser.add_argument(
            "--max-messages",
            type=argument_type(positive),
            metavar="N",
            help="with --redrive: move at most N",
        )

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.consumer import sqs

        queue = settings.load(SqsSettings)
        if args.redrive:
            moved = sqs.dlq_redrive(queue, max_messages=args.max_messages)
            print(f"dlq: moved {count(moved, 'message')} back to {queue.queue_url}", file=sys.stderr)
            return 0
        report = sqs.dlq_report(queue)
        print(
            f"dlq: {report.url}: {count(report.visible, 'message')} waiting, {report.in_flight} in flight",
            file=sys.stderr,
        )
        for message_id, receive_count, sent_at in report.sample:
            print(f"{message_id}\treceived {count(receive_count, 'time')}\tsent {sent_at:%Y-%m-%dT%H:%M:%SZ}")
        return 0
