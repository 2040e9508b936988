"""`loginvault recover` (a privacy officer: token → value, value → token) and `loginvault audit`
(an auditor: the recovery audit). The lookups and the audit are the database's (ingest/recover.py,
ingest/audit.py); this module says what came of them."""

from __future__ import annotations

import argparse
import sys

from ingest import LoginvaultError
from ingest.cli.command import Command, print_rows
from ingest.settings import CommonSettings

# Outcomes that answer nothing: the sentence each is reported with (exit 1).
REFUSALS = {
    "over_budget": "this login's daily recovery budget is used up (the refusal was audited): an admin can raise it"
    " (docs/operations.md, Recover PII)",
    "decrypt_failed": "the vault entry cannot be decrypted with LOGINVAULT_ENCRYPTION_KEY: wrong key? (the failed"
    " lookup was audited)",
    "invalid": "that is not a valid {kind}, so no login can carry it (audited)",
    "wrong_key": "the keys in the environment are not the registered ones (the refusal was audited):"
    " `loginvault keys status` shows their fingerprints",
}


class RecoverCommand(Command):
    name = "recover"
    help = "as a privacy officer (loginvault_pii_admin): token → value, or value → token (audited)"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--token", help="print the kind and cleartext of this token")
        what.add_argument("--ip", help="print the token of this IP and how many logins carry it")
        what.add_argument("--device-id", help="print the token of this device id and how many logins carry it")
        parser.add_argument("--reason", required=True, help="why (ticket, request): written to pii.recovery_audit")

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.recover import recover

        if args.token:
            result = recover(reason=args.reason, token=args.token)
        else:
            kind, value = ("ip", args.ip) if args.ip is not None else ("device_id", args.device_id)
            result = recover(reason=args.reason, value=value, kind=kind)
        if result.outcome in REFUSALS:
            raise LoginvaultError(REFUSALS[result.outcome].format(kind=(result.kind or "").replace("_", " ")))
        if result.direction == "value_to_token":
            print(f"{result.token}\t{result.logins}")
            print(
                f"recover: {result.kind} token carried by {result.logins} login(s); the lookup was audited",
                file=sys.stderr,
            )
            return 0
        if not result.found:
            print("recover: no such token in the vault (the lookup was audited)", file=sys.stderr)
            return 1
        print_rows(None, result.values)
        if result.outcome == "found_pre_rotation":
            print(
                f"recover: a token from before the last HMAC key rotation (it resolves until `keys retire hmac`);"
                f" its current token is {result.current_token}; the lookup was audited",
                file=sys.stderr,
            )
        return 0


class AuditCommand(Command):
    name = "audit"
    help = "as an auditor (loginvault_auditor): print the recovery audit"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", metavar="WHEN", help="only rows since WHEN: 7d, 12h, 30m, or a date/time (UTC)")

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """The recovery audit, oldest first, tab-separated with a header."""
        from ingest import audit

        since = audit.parse_since(args.since) if args.since else None
        print_rows(audit.COLUMNS, audit.rows(since))
        return 0
