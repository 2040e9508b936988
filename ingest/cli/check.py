"""`loginvault check`: the database's privileges, ownerships and role memberships against
ingest/schema/sql/acl.toml (ingest/schema/acl.py)."""

from __future__ import annotations

import argparse

from ingest import config
from ingest.cli.command import Command
from ingest.settings import CommonSettings


class CheckCommand(Command):
    name = "check"
    help = "compare every privilege, owner and role membership with ingest/schema/sql/acl.toml (as the transformer's login)"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """Each difference on stdout, one a line, then one `error:` line and exit 1; nothing and
        exit 0 when the database is as declared."""
        from ingest import db
        from ingest.schema import acl

        with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
            found = acl.check(conn, common.mart_schema)
        for line in found:
            print(line)
        if found:
            raise acl.Differences(f"{len(found)} differences from ingest/schema/sql/acl.toml (listed above)")
        print("check: every privilege, owner and membership is as ingest/schema/sql/acl.toml declares")
        return 0
