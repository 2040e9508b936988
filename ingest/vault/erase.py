"""Subject erasure (`loginvault erase --user-id U --reason R`) as a privacy officer's own login (a
member of loginvault_pii_admin), as a request to the recovery service (ingest/vault/).

The service erases through pii.erase_subject (a SECURITY DEFINER of the NOLOGIN
loginvault_eraser), holding the transform lock so that no build re-stages the subject's rows
meanwhile: the subject's rows leave raw, staging, the marts and the rejections, the vault values
no other login carries are shredded, the subject joins the list the transform keeps out, and the
erasure is audited with a keyed hash of the user id (never the id), all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest import LoginvaultError
from ingest.vault import requests

COUNTS = ("raw_rows", "staged_rows", "logins", "rejections", "vault_values")


@dataclass(frozen=True)
class Erasure:
    raw_rows: int
    staged_rows: int
    logins: int
    rejections: int
    vault_values: int

    def line(self, dry_run: bool) -> str:
        verb = "would erase" if dry_run else "erased"
        return (
            f"erase: {verb} {self.raw_rows} raw {_plural(self.raw_rows, 'delivery', 'deliveries')},"
            f" {self.staged_rows} staged {_plural(self.staged_rows, 'row')}, {self.logins}"
            f" {_plural(self.logins, 'login')}, {self.rejections} {_plural(self.rejections, 'rejection')} and"
            f" {self.vault_values} vault {_plural(self.vault_values, 'value')} no other login carries (audited)"
        )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return one if n == 1 else (many or one + "s")


def erase(user_id: str, reason: str, timeout: float, dry_run: bool = False) -> Erasure:
    if not user_id:
        raise LoginvaultError("a user id is required (--user-id)")
    with requests.officer_session("erase") as conn:
        request_id = requests.file(conn, "request_erasure", user_id, reason, dry_run)
        answer = requests.wait(conn, request_id, timeout)
    return from_answer(answer.request_id, answer.body)


def from_answer(request_id: int, body: dict[str, Any]) -> Erasure:
    if body.get("outcome") not in ("erased", "dry_run"):
        raise LoginvaultError(f"erasure request {request_id} failed: {body.get('error', body.get('outcome'))}")
    return Erasure(*(int(body[name]) for name in COUNTS))
