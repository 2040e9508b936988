"""The cleartext lifecycle: `loginvault retention apply` (the window, ingest/lifecycle/retention.py), `loginvault
raw partition` (an earlier version's raw into day partitions) and `loginvault erase` (a data
subject, ingest/vault/erase.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from ingest import LoginvaultError, count, settings
from ingest.cli import logs
from ingest.cli.command import Command
from ingest.cli.recover import checked_reason
from ingest.settings import CommonSettings, EraseSettings, Reason, RequestSettings, RetentionSettings

log = logging.getLogger("ingest")


class RetentionApply(Command):
    name = "apply"
    help = (
        "as dbt's login: drop the days of raw and staged cleartext before the window whose messages reached the marts"
    )
    flags = (RetentionSettings,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """Once, or every S seconds until a signal; a failed run of the service is logged and retried."""
        from ingest.lifecycle import retention
        from ingest.signals import stop_on_signals

        window = settings.load(RetentionSettings, args)
        stop = threading.Event()
        if window.every:
            stop_on_signals(stop, "finishing the retention run in hand")
        while True:
            try:
                report = retention.apply(window.days, dry_run=window.dry_run)
            except LoginvaultError as exc:
                if not window.every:
                    raise
                log.error("retention: %s (next run in %.0f s)", exc, window.every)
            else:
                for line in report.lines():
                    if window.every:
                        log.info(line)
                    else:
                        logs.report(line, common.log_format)
            if not window.every or stop.wait(window.every):
                return 0


class RetentionCommand(Command):
    name = "retention"
    help = "the cleartext window: apply it"
    actions = (RetentionApply(),)


class RawPartition(Command):
    name = "partition"
    help = "as the admin PG_DSN: convert an unpartitioned raw.login_events to day partitions"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.lifecycle import retention

        moved = retention.partition_raw(settings.require("PG_DSN"))
        if moved < 0:
            print("raw: raw.login_events is partitioned already: nothing to do", file=sys.stderr)
        else:
            print(f"raw: raw.login_events partitioned by day, {count(moved, 'row')} kept", file=sys.stderr)
        return 0


class RawCommand(Command):
    name = "raw"
    help = "raw.login_events itself: partition an earlier version's by day"
    actions = (RawPartition(),)


class EraseCommand(Command):
    name = "erase"
    help = "as a privacy officer (loginvault_pii_admin, no key): erase a data subject through the recovery service (audited)"
    flags = (EraseSettings, Reason, RequestSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import erase

        reason = checked_reason(args)
        subject = settings.load(EraseSettings, args)
        timeout = settings.load(RequestSettings, args).timeout
        result = erase.erase(subject.user_id, reason, timeout, dry_run=subject.dry_run)
        print(result.line(subject.dry_run), file=sys.stderr)
        return 0
