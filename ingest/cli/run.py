"""`loginvault run`: the ingest, SQS_QUEUE_URL into raw.login_events (ingest/consumer/run.py)."""

from __future__ import annotations

import argparse

from ingest import settings
from ingest.cli import logs
from ingest.cli.command import Command
from ingest.setting_values import argument_type, choice
from ingest.settings import CommonSettings, RunSettings, SqsSettings


class RunCommand(Command):
    name = "run"
    help = "ingest SQS_QUEUE_URL into raw.login_events (drains, then exits; --follow keeps polling)"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        settings.add_arguments(parser, RunSettings)
        # Also accepted after `run`, where deployments put it (the default stays the global one).
        parser.add_argument(
            "--log-format",
            type=argument_type(choice("text", "json")),
            default=argparse.SUPPRESS,
            metavar="FORMAT",
            help="as before the command",
        )

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.consumer.run import run

        options = settings.load(RunSettings, args)
        stats = run(options, settings.load(SqsSettings))
        logs.report(f"ingest: {stats.line()}", common.log_format)
        return 0
