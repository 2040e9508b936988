"""`loginvault recover` (a privacy officer: token → value, value → token; four eyes' approve,
reject, pending, answer), `loginvault audit` (an auditor) and `loginvault recovery serve` (the
recovery service). The requests, the service and the audit are ingest/vault/, ingest/vault/recover.py
and ingest/vault/audit.py; this module says what came of them."""

from __future__ import annotations

import argparse
import sys

from ingest import LoginvaultError, settings
from ingest.cli.command import Command, print_rows
from ingest.settings import CommonSettings, RecoveryServiceSettings, RequestSettings, SettingError

# Outcomes that answer nothing: the sentence each is reported with (exit 1).
REFUSALS = {
    "over_budget": "this login's daily recovery budget of {limit} lookups is used up ({used} today; the refusal was"
    " audited); it resets at {resets_at} (UTC midnight); an admin can raise it (docs/operations.md, Recover PII)",
    "decrypt_failed": "the recovery service holds no key of the vault entry's encryption key version (the failed"
    " lookup was audited): its LOGINVAULT_ENCRYPTION_KEY_PREVIOUS is needed until `keys rotate encryption` ends",
    "tampered": "the vault's entry for that token decrypts to a value the token was not made from: the vault was"
    " written outside the transform (the lookup was audited; no value is given); see docs/operations.md",
    "invalid": "that is not a valid {kind}, so no login can carry it (audited)",
    "wrong_key": "the recovery service's keys are not the registered ones (the refusal was audited): restart it"
    " with the current keys (`loginvault keys status` shows their fingerprints)",
    "refused": "the recovery service refused the lookup: {error} (audited)",
}
ACTIONS = ("approve", "reject", "pending", "answer")


def report_recovery(result) -> int:
    """Print a recovery's answer: the value(s) or the token on stdout, a sentence on stderr."""
    if result.outcome in REFUSALS:
        raise LoginvaultError(
            REFUSALS[result.outcome].format_map(
                {"kind": (result.kind or "value").replace("_", " "), "error": "?", "limit": "?", "used": "?"}
                | result.detail
            )
        )
    if result.direction == "value_to_token":
        print(f"{result.token}\t{result.logins}")
        logins = "1 login" if result.logins == 1 else f"{result.logins} logins"
        print(f"recover: {result.kind} token carried by {logins}; the lookup was audited", file=sys.stderr)
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


class RecoverCommand(Command):
    name = "recover"
    help = "as a privacy officer (loginvault_pii_admin, no key): token → value or value → token through the recovery service (audited); four eyes: approve, reject, pending, answer"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", nargs="?", choices=ACTIONS, help="four eyes: decide, list or read requests")
        parser.add_argument("request_id", nargs="?", type=int, metavar="ID", help="with approve, reject, answer")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--token", help="print the kind and cleartext of this token")
        what.add_argument("--ip", help="print the token of this IP and how many logins carry it")
        what.add_argument("--device-id", help="print the token of this device id and how many logins carry it")
        parser.add_argument("--reason", help="why (ticket, request): audited; required but with pending and answer")
        settings.add_arguments(parser, RequestSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import reasons, recover

        asked = args.token is not None or args.ip is not None or args.device_id is not None
        check_action(args, asked)
        if args.action != "pending" and args.action != "answer":
            problem = reasons.problem(args.reason)
            if problem:
                raise SettingError(f"--reason: {problem}")
        timeout = settings.load(RequestSettings, args).timeout
        if args.action:
            return decide_or_list(args, timeout)
        if args.token is not None:
            return report_recovery(recover.recover(reason=args.reason, timeout=timeout, token=args.token))
        kind, value = ("ip", args.ip) if args.ip is not None else ("device_id", args.device_id)
        return report_recovery(recover.recover(reason=args.reason, timeout=timeout, value=value, kind=kind))


def check_action(args: argparse.Namespace, asked: bool) -> None:
    """Exactly one of a lookup or an action, and only the flags that apply to it (exit 2)."""
    if args.action is None:
        if not asked:
            raise SettingError(
                "recover: give one of --token, --ip or --device-id (or approve, reject, pending, answer)"
            )
        if args.request_id is not None:
            raise SettingError("recover: a request ID goes with approve, reject or answer")
        return
    if asked:
        raise SettingError(f"recover {args.action}: --token, --ip and --device-id do not apply")
    if args.action == "pending":
        if args.request_id is not None or args.reason is not None:
            raise SettingError("recover pending takes no request ID and no --reason")
    elif args.request_id is None:
        raise SettingError(f"recover {args.action} needs the request's ID (`loginvault recover pending`)")
    elif args.action == "answer" and args.reason is not None:
        raise SettingError("recover answer: --reason does not apply (the request has its reason)")


def decide_or_list(args: argparse.Namespace, timeout: float) -> int:
    from ingest.vault import erase, recover, requests

    if args.action == "pending":
        print_rows(
            ("request", "requested_at", "login_user", "kind", "value_kind", "token", "dry_run", "state", "reason"),
            requests.waiting(),
        )
        return 0
    if args.action == "answer":
        with requests.officer_session("read a recovery answer") as conn:
            answer = requests.wait(conn, args.request_id, timeout, cancel_on_timeout=False)
        if answer.kind == "erase":
            print(
                erase.from_answer(answer.request_id, answer.body).line(answer.body.get("outcome") == "dry_run"),
                file=sys.stderr,
            )
            return 0
        return report_recovery(recover.from_answer(answer.kind, answer.body))
    decision = requests.decide(args.request_id, args.action == "approve", args.reason)
    print(f"recover: request {args.request_id} {decision} (audited)", file=sys.stderr)
    return 0


class AuditCommand(Command):
    name = "audit"
    help = "as an auditor (loginvault_auditor): print the recovery and erasure audit"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", metavar="WHEN", help="only rows since WHEN: 7d, 12h, 30m, or a date/time (UTC)")
        parser.add_argument(
            "--format",
            dest="audit_format",
            choices=("text", "csv", "json"),
            default="text",
            help="text (tab-separated, control characters escaped; default), csv or json (one object per line)",
        )

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """The audit, oldest first."""
        from ingest.vault import audit

        since = audit.parse_since(args.since) if args.since else None
        sys.stdout.write(audit.render(audit.rows(since), args.audit_format))
        return 0


class RecoveryCommand(Command):
    name = "recovery"
    help = "the recovery service (its own login, the PII keys): serve officers' recovery and erasure requests"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["serve"])
        settings.add_arguments(parser, RecoveryServiceSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        import threading

        from ingest.signals import stop_on_signals
        from ingest.vault.service import RecoveryService
        from ingest.vault.service_metrics import ServiceMetrics

        chosen = settings.load(RecoveryServiceSettings, args)
        metrics = ServiceMetrics(chosen.poll_seconds)
        service = RecoveryService(chosen.answer_ttl, chosen.approvals, chosen.poll_seconds, metrics)
        stop = threading.Event()
        stop_on_signals(stop, "finishing the request in hand")
        if not chosen.metrics_port:
            service.run(stop)
            return 0
        from ingest.metrics_http import MetricsEndpoint

        with MetricsEndpoint(metrics.registry, metrics.health, chosen.metrics_port, chosen.metrics_host):
            service.run(stop)
        return 0
