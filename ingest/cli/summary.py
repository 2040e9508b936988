"""`loginvault summary`: what an analyst sees in the marts (ingest/transform/summary.py)."""

from __future__ import annotations

import argparse

from ingest.cli.command import Command
from ingest.settings import CommonSettings


class SummaryCommand(Command):
    name = "summary"
    help = "print what an analyst sees in the marts (as loginvault_analyst)"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.transform.summary import summary

        for line in summary(common.mart_schema).lines():
            print(line)
        return 0
