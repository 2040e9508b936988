"""`loginvault seed`: sample login events into the queue, synthetic or from a file."""

from __future__ import annotations

import argparse
import sys

from ingest import count, settings
from ingest.cli.command import Command
from ingest.settings import CommonSettings, SeedSettings, SqsSettings


class SeedCommand(Command):
    name = "seed"
    help = "send sample login events to SQS_QUEUE_URL"
    flags = (SeedSettings,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local import sample

        queue = settings.load(SqsSettings)
        chosen = settings.load(SeedSettings, args)
        if chosen.file is not None:
            events = sample.file_events(chosen.file)
        else:
            events = sample.synthetic_events(chosen.count, chosen.random_seed)
        sent = sample.send_events(queue, events)
        print(f"seed: sent {count(sent, 'message')} to {queue.queue_url}", file=sys.stderr)
        return 0
