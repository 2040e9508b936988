"""`loginvault recover lookup|pending|approve|reject|answer` (a privacy officer: token → value,
value → token; four eyes), `loginvault audit` (an auditor) and `loginvault recovery serve` (the
recovery service). The requests, the service and the audit are ingest/vault/, ingest/vault/recover.py
and ingest/vault/audit.py; this module says what came of them."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ingest import LoginvaultError, settings
from ingest.cli.command import Command, print_rows
from ingest.settings import (
    AuditSettings,
    CommonSettings,
    Lookup,
    Reason,
    RecoveryServiceSettings,
    RequestId,
    RequestSettings,
    SettingError,
)

if TYPE_CHECKING:
    from ingest.vault.recover import Recovery

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


def report_recovery(result: Recovery) -> int:
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


def checked_reason(args: argparse.Namespace) -> str:
    """The officer's --reason, refused (exit 2) before it is sent when it could not be audited."""
    from ingest.vault import reasons

    reason = settings.load(Reason, args).reason
    problem = reasons.problem(reason)
    if problem:
        raise SettingError(f"--reason: {problem}")
    return reason


class RecoverLookup(Command):
    name = "lookup"
    help = "token → value (--token) or value → token (--ip, --device-id), through the recovery service (audited)"
    flags = (Lookup, Reason, RequestSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import recover

        reason = checked_reason(args)
        timeout = settings.load(RequestSettings, args).timeout
        asked = settings.load(Lookup, args)
        if asked.token is not None:
            return report_recovery(recover.recover(reason=reason, timeout=timeout, token=asked.token))
        kind, value = ("ip", asked.ip) if asked.ip is not None else ("device_id", asked.device_id)
        return report_recovery(recover.recover(reason=reason, timeout=timeout, value=value, kind=kind))


class RecoverPending(Command):
    name = "pending"
    help = "four eyes: the requests that wait for an approval"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import requests

        print_rows(
            ("request", "requested_at", "login_user", "kind", "value_kind", "token", "dry_run", "state", "reason"),
            requests.waiting(),
        )
        return 0


class RecoverDecide(Command):
    """`recover approve ID` and `recover reject ID`: another officer's request (audited)."""

    flags = (RequestId, Reason)

    def __init__(self, approve: bool) -> None:
        self.approve = approve
        self.name = "approve" if approve else "reject"
        self.help = f"four eyes: {self.name} another officer's request (audited)"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import requests

        reason = checked_reason(args)
        request_id = settings.load(RequestId, args).request_id
        decision = requests.decide(request_id, self.approve, reason)
        print(f"recover: request {request_id} {decision} (audited)", file=sys.stderr)
        return 0


class RecoverAnswer(Command):
    name = "answer"
    help = "four eyes: read the answer to one of your requests once approved (exit 3 while it waits)"
    flags = (RequestId, RequestSettings)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.vault import erase, recover, requests

        timeout = settings.load(RequestSettings, args).timeout
        with requests.officer_session("read a recovery answer") as conn:
            answer = requests.wait(conn, settings.load(RequestId, args).request_id, timeout, cancel_on_timeout=False)
        if answer.kind == "erase":
            print(
                erase.from_answer(answer.request_id, answer.body).line(answer.body.get("outcome") == "dry_run"),
                file=sys.stderr,
            )
            return 0
        return report_recovery(recover.from_answer(answer.kind, answer.body))


class RecoverCommand(Command):
    name = "recover"
    help = "as a privacy officer (loginvault_pii_admin, no key): lookup through the recovery service (audited); four eyes: pending, approve, reject, answer"
    actions = (RecoverLookup(), RecoverPending(), RecoverDecide(True), RecoverDecide(False), RecoverAnswer())


class AuditCommand(Command):
    name = "audit"
    help = "as an auditor (loginvault_auditor): print the recovery and erasure audit"

    flags = (AuditSettings,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """The audit, oldest first."""
        from ingest.vault import audit

        chosen = settings.load(AuditSettings, args)
        sys.stdout.write(audit.render(audit.rows(chosen.since), chosen.audit_format))
        return 0


class RecoveryServe(Command):
    name = "serve"
    help = "the recovery service (its own login, the PII keys): serve officers' recovery and erasure requests"
    flags = (RecoveryServiceSettings,)

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


class RecoveryCommand(Command):
    name = "recovery"
    help = "the recovery service: serve"
    actions = (RecoveryServe(),)
