"""`loginvault seed`: sample login events into the queue, synthetic or from a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest import count, settings
from ingest.cli.command import Command
from ingest.setting_values import argument_type, positive
from ingest.settings import CommonSettings, SqsSettings


class SeedCommand(Command):
    name = "seed"
    help = "send sample login events to SQS_QUEUE_URL"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--count",
            type=argument_type(positive),
            default=100,
            metavar="N",
            help="synthetic events to send (default 100)",
        )
        group.add_argument(
            "--file", help="send the events of a JSON array / JSON Lines file (.gz ok); string elements are sent as-is"
        )
        parser.add_argument(
            "--random-seed", type=int, default=42, metavar="N", help="seed of the synthetic generator (default 42)"
        )

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local import sample

        queue = settings.load(SqsSettings)
        if args.file:
            events = sample.file_events(Path(args.file))
        else:
            events = sample.synthetic_events(args.count, args.random_seed)
        sent = sample.send_events(queue, events)
        print(f"seed: sent {count(sent, 'message')} to {queue.queue_url}", file=sys.stderr)
        return 0
