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
from ingest.settings import CommonSettings, RequestSettings, RetentionSettings, SettingError

log = logging.getLogger("ingest")


class RetentionCommand(Command):
    name = "retention"
    help = "as dbt's login: drop raw and staged cleartext older than the window"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["apply"])
        settings.add_arguments(parser, RetentionSettings)

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


class RawCommand(Command):
    name = "raw"
    help = "as the admin PG_DSN: convert an unpartitioned raw.login_events to day partitions"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["partition"])

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.lifecycle import retention

        moved = retention.partition_raw(settings.require("PG_DSN"))
        if moved < 0:
            print("raw: raw.login_events is partitioned already: nothing to do", file=sys.stderr)
        else:
            print(f"raw: raw.login_events partitioned by day, {count(moved, 'row')} kept", file=sys.stderr)
        return 0


class EraseCommand(Command):
    name = "erase"
    help = "as a privacy officer (loginvault_pii_admin, no key): erase a data subject through the recovery service (audited)"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--user-id", required=True, help="the subject's user_id, exactly as sent")
        parser.add_argument("--reason", required=True, help="why (request id): written to pii.erasure_audit")
        parser.add_argument("--dry-run", action="store_true", help="print the counts only (the lookup is audited)")
        settings.add_arguments(parser, RequestSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import erase, reasons

        problem = reasons.problem(args.reason)
        if problem:
            raise SettingError(f"--reason: {problem}")
        timeout = settings.load(RequestSettings, args).timeout
        result = erase.erase(args.user_id, args.reason, timeout, dry_run=args.dry_run)
        print(result.line(args.dry_run), file=sys.stderr)
        return 0
