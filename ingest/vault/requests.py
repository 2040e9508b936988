"""A privacy officer's side of recovery and erasure: file a request, wait for the recovery
service's answer, read it once. The officer's login holds no key and runs no lookup: its
session only commits requests (pii.request_value, pii.request_token, pii.request_erasure) and
reads its own answers (pii.take_answer); the service (service.py) does the rest and audits it.

Waiting: LISTEN for the service's notifications, with a short poll as the fallback. No answer
within the timeout: the request is cancelled (`pii.cancel_request`; if the service took it
meanwhile, its answer is read instead) and the command says the service did not answer. With
four eyes, a request waiting for another officer's approval is left waiting (`loginvault
recover answer ID` reads it once approved and answered).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest import LoginvaultError, config, db
from ingest.settings import SettingError

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

ANSWERS_CHANNEL = "loginvault_recovery_answers"
POLL_SECONDS = 0.5  # the fallback when a notification is missed
WAITING_STATES = ("pending", "awaiting_approval", "approved")
SERVICE = "the recovery service (`loginvault recovery serve`)"


class AwaitingApproval(LoginvaultError):
    """The request waits for another officer's approval (not an error: exit 3)."""

    exit_code = 3


@dataclass(frozen=True)
class Answer:
    request_id: int
    kind: str  # recover_value | recover_token | erase
    body: dict[str, Any]

    @property
    def outcome(self) -> str:
        return str(self.body.get("outcome"))


@contextlib.contextmanager
def officer_session(doing: str) -> Iterator[Connection[TupleRow]]:
    """The officer's own login (no key in it), with the database's refusals as one sentence."""
    import psycopg

    with db.connect(config.PII_ADMIN_ROLE, autocommit=True) as conn:
        try:
            yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(
                f"not authorized to {doing} ({db.first_line(exc)}): only members of {config.PII_ADMIN_ROLE} may"
            ) from None
        except psycopg.errors.UndefinedFunction:
            raise LoginvaultError("the recovery request functions do not exist: run the bootstrap") from None
        except psycopg.Error as exc:
            raise LoginvaultError(db.first_line(exc)) from None


def file(conn: Connection[TupleRow], function: str, *args: object) -> int:
    """Files a request through `pii.<function>`; its id. A request the database refuses (a bad
    reason, token, kind or value: recorded as refused) is a SettingError (exit 2)."""
    placeholders = ", ".join(["%s"] * len(args))
    request_id, state, refusal = db.one_row(
        conn, f"SELECT request_id, request_state, refusal FROM pii.{function}({placeholders})", args
    )
    if state == "refused":
        raise SettingError(f"{refusal} (request {request_id} was recorded as refused)")
    return int(request_id)


def wait(conn: Connection[TupleRow], request_id: int, timeout: float, cancel_on_timeout: bool = True) -> Answer:
    """The answer to one of this login's requests, read once; raises when none comes in time."""
    conn.execute(f"LISTEN {ANSWERS_CHANNEL}")
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT request_state, outcome, answered, request_kind FROM pii.request_status(%s)", (request_id,)
        ).fetchone()
        if row is None:
            raise LoginvaultError(f"request {request_id} is not one of this login's requests")
        state, outcome, answered, kind = row
        if answered:
            body = db.one_row(conn, "SELECT pii.take_answer(%s)", (request_id,))[0]
            if body is not None:
                return Answer(request_id, kind, body)
        if state not in WAITING_STATES:
            raise LoginvaultError(_ended(request_id, state, outcome))
        if time.monotonic() >= deadline:
            return _timed_out(conn, request_id, state, timeout, cancel_on_timeout)
        for _ in conn.notifies(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic())), stop_after=1):
            pass


def _ended(request_id: int, state: str, outcome: str | None) -> str:
    return {
        "rejected": f"request {request_id} was rejected by another officer (`loginvault audit` shows why)",
        "cancelled": f"request {request_id} was cancelled",
        "expired": f"request {request_id} expired before it was answered, or its answer before it was read",
        "read": f"the answer to request {request_id} was read already (an answer is readable once)",
    }.get(state, f"request {request_id} ended as {state} ({outcome}) and its answer is gone (read or expired)")


def _timed_out(conn: Connection[TupleRow], request_id: int, state: str, timeout: float, cancel: bool) -> Answer:
    if state == "awaiting_approval" or not cancel:
        raise AwaitingApproval(
            f"request {request_id} waits for another officer's approval (`loginvault recover approve"
            f" {request_id}`); `loginvault recover answer {request_id}` reads the answer once it is given"
            if state == "awaiting_approval"
            else f"request {request_id} is not answered yet: {SERVICE} did not answer within {timeout:g} s"
        )
    after = db.one_row(conn, "SELECT pii.cancel_request(%s)", (request_id,))[0]
    if after == "cancelled":
        raise LoginvaultError(
            f"no answer from {SERVICE} within {timeout:g} s: is it running? (`loginvault stack status`;"
            f" docs/operations.md, When the recovery service is down). Request {request_id} was cancelled."
        )
    # The service took it meanwhile: its answer is there now, or the request ended otherwise.
    return wait(conn, request_id, POLL_SECONDS * 4, cancel_on_timeout=False)


def decide(request_id: int, approve: bool, reason: str) -> str:
    """Four eyes: approve or reject another officer's waiting request (audited)."""
    with officer_session("decide on recovery requests") as conn:
        result: str = db.one_row(conn, "SELECT pii.decide_request(%s, %s, %s)", (request_id, approve, reason))[0]
    if result in ("approved", "rejected"):
        return result
    raise LoginvaultError(
        {
            "not_found": f"there is no request {request_id}",
            "own_request": f"request {request_id} is your own: another officer must decide on it",
            "not_waiting": f"request {request_id} is not waiting for a decision (`loginvault recover pending`)",
        }.get(result, result)
    )


def waiting() -> list[tuple[Any, ...]]:
    """Requests that wait for the service or for an approval, oldest first."""
    with officer_session("list recovery requests") as conn:
        return conn.execute(
            "SELECT request_id, requested_at, login_user, kind, coalesce(value_kind, ''), coalesce(token, ''),"
            " dry_run, request_state, reason FROM pii.waiting_requests()"
        ).fetchall()
