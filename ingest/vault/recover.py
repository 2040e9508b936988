"""Audited PII recovery as a privacy officer's own login (a member of loginvault_pii_admin):
token → value and value → token, as requests to the recovery service (ingest/vault/).

The officer's command holds no key: it files the request (who, when, from where and why are
taken from its session by the database), waits for the service, and reads the answer once. The
service counts the login's daily budget, does the lookup and commits the audit row with the
answer. The cleartext goes to the caller's stdout only: never to a log, an error or the audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.vault import requests

OUTCOMES = (
    "found", "found_pre_rotation", "not_found", "decrypt_failed", "tampered", "wrong_key", "over_budget", "invalid",
    "refused",
)  # fmt: skip


@dataclass(frozen=True)
class Recovery:
    direction: str  # token_to_value | value_to_token
    outcome: str  # one of OUTCOMES
    kind: str | None = None
    token: str | None = None
    values: list[tuple[str, str]] = field(default_factory=list)  # token_to_value: (kind, cleartext)
    logins: int = 0  # value_to_token: user_logins rows carrying the token
    current_token: str | None = None  # found_pre_rotation: the token that replaced it
    detail: dict[str, Any] = field(default_factory=dict)  # refusals: the budget's limit and reset, an error

    @property
    def found(self) -> bool:
        return self.outcome.startswith("found")


def recover(
    *, reason: str, timeout: float, token: str | None = None, value: str | None = None, kind: str | None = None
) -> Recovery:
    """token → [(kind, value)], or (value, kind) → (token, number of logins carrying it)."""
    with requests.officer_session("recover PII") as conn:
        if value is not None:
            request_id = requests.file(conn, "request_token", kind, value, reason)
        else:
            request_id = requests.file(conn, "request_value", token, reason)
        answer = requests.wait(conn, request_id, timeout)
    return from_answer(answer.kind, answer.body, token=token, kind=kind)


def from_answer(request_kind: str, body: dict[str, Any], token: str | None = None, kind: str | None = None) -> Recovery:
    """What the service answered to a recover_value or recover_token request."""
    outcome = str(body.get("outcome"))
    if request_kind == "recover_value":
        found = [(v["kind"], v["value"]) for v in body.get("values", [])]
        current = next((v.get("current_token") for v in body.get("values", [])), None)
        return Recovery("token_to_value", outcome, body.get("kind"), token, found, current_token=current, detail=body)
    return Recovery(
        "value_to_token", outcome, kind, body.get("token"), logins=int(body.get("logins") or 0), detail=body
    )
