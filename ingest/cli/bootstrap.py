"""`loginvault bootstrap`: the production bootstrap, as the admin PG_DSN."""

from __future__ import annotations

import argparse

from ingest import settings
from ingest.cli.command import Command
from ingest.settings import BootstrapSettings, CommonSettings


class BootstrapCommand(Command):
    name = "bootstrap"
    help = "as the admin PG_DSN: the idempotent bootstrap SQL, and a login for each LOGINVAULT_<ROLE>_DSN set"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.schema import bootstrap

        budget = settings.load(BootstrapSettings).recovery_daily_budget
        bootstrap.run(common.mart_schema, budget)
        return 0
