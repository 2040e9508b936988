"""`loginvault run`: the ingest, SQS_QUEUE_URL into raw.login_events (ingest/consumer/run.py)."""

from __future__ import annotations

import argparse

from ingest import settings
from ingest.cli import logs
from ingest.cli.command import Command
from ingest.settings import CommonSettings, RunSettings, SqsSettings


class RunCommand(Command):
    name = "run"
    help = "ingest SQS_QUEUE_URL into raw.login_events (drains, then exits; --follow keeps polling)"
    flags = (RunSettings,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.consumer.run import run

        options = settings.load(RunSettings, args)
        stats = run(options, settings.load(SqsSettings))
        logs.report(f"ingest: {stats.line()}", common.log_format)
        return 0
