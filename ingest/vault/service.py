"""The recovery service, `loginvault recovery serve`: the only workload besides the transformer
that holds the PII keys. It logs in as its own login (a member of loginvault_recovery_service),
with the keys as session settings, and serves officers' requests one transaction each:
pii.serve_next_request takes the oldest waiting request with FOR UPDATE SKIP LOCKED (replicas
never take the same one), counts the asker's daily budget under a lock, does the lookup or the
erasure, and writes the audit row and the answer; the commit makes both visible at once. A
service killed mid-request leaves it pending (the transaction never committed): the next one
serves it, once.

It wakes on LISTEN loginvault_recovery_requests (the request functions notify on commit) and
polls every `poll_seconds` as the fallback. An erasure that finds the transform lock held is
left for later (`busy`) while other requests go ahead. SIGTERM/SIGINT: the request in hand
finishes, then the service exits 0.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest import LoginvaultError, config, db
from ingest.faults import pause_at
from ingest.vault import keys
from ingest.vault.service_metrics import ServiceMetrics

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

REQUESTS_CHANNEL = "loginvault_recovery_requests"
BUSY_RETRY_SECONDS = 5.0  # an erasure that met the transform lock is tried again after this
EXPIRE_EVERY_SECONDS = 10.0  # upkeep: expired answers and requests
MAX_WAIT_SECONDS = 86_400  # a request not served within a day (e.g. never approved) expires
LOCK_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Served:
    request_id: int
    kind: str
    outcome: str
    waited_seconds: float


class RecoveryService:
    """Serves requests until `stop` is set."""

    def __init__(
        self, answer_ttl: int, approvals: int, poll_seconds: float, metrics: ServiceMetrics | None = None
    ) -> None:
        self.answer_ttl = answer_ttl
        self.approvals = approvals
        self.poll_seconds = poll_seconds
        self.metrics = metrics or ServiceMetrics()
        self.deferred: dict[int, float] = {}  # request id → when to try it again (busy erasures)
        self.last_expiry = 0.0

    def connect(self) -> Connection[TupleRow]:
        """The service's login with the keys (checked against the registry before anything)."""
        conn = db.connect(
            config.RECOVERY_SERVICE_ROLE,
            autocommit=True,
            options=" ".join(
                (
                    keys.session_options(previous=True),
                    keys.setting_option("default_transaction_isolation", "read committed"),
                    # A lock held elsewhere (a rotation's swap, a long erasure) delays a request, never the service.
                    keys.setting_option("lock_timeout", f"{LOCK_TIMEOUT_SECONDS}s"),
                    keys.setting_option("application_name", "loginvault-recovery"),
                )
            ),
        )
        try:
            keys.check_environment(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def serve_one(self, conn: Connection[TupleRow]) -> Served | None:
        """One request in one transaction; None when nothing waits."""
        now = time.monotonic()
        self.deferred = {rid: until for rid, until in self.deferred.items() if until > now}
        with self.metrics.busy(), conn.transaction():
            row = conn.execute(
                "SELECT request_id, request_kind, outcome, waited_seconds FROM pii.serve_next_request(%s, %s, %s)",
                (list(self.deferred), self.answer_ttl, self.approvals),
            ).fetchone()
            if row is not None:
                pause_at("serving")  # taken, looked up and audited, not committed (the kill test)
        if row is None:
            return None
        served = Served(*row)
        if served.outcome == "busy":
            self.deferred[served.request_id] = now + BUSY_RETRY_SECONDS
            log.info("recovery: erasure request %s waits for the transform lock", served.request_id)
        else:
            self.metrics.served(served.kind, served.outcome, served.waited_seconds)
            log.info(
                "recovery: request %s (%s) %s after %.2f s",
                served.request_id,
                served.kind,
                served.outcome,
                served.waited_seconds,
            )
        return served

    def upkeep(self, conn: Connection[TupleRow]) -> None:
        if time.monotonic() - self.last_expiry >= EXPIRE_EVERY_SECONDS:
            expired = db.one_row(conn, "SELECT pii.expire_requests(%s)", (MAX_WAIT_SECONDS,))[0]
            if expired:
                log.info("recovery: %s request(s) expired unserved", expired)
            self.last_expiry = time.monotonic()
        waiting, oldest, timed_out = db.one_row(
            conn, "SELECT waiting, oldest_seconds, timed_out FROM pii.recovery_queue()"
        )
        self.metrics.queue(int(waiting), float(oldest), int(timed_out))
        self.metrics.polled()

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: serve everything that waits, then sleep until notified or the poll is due."""
        import psycopg

        conn = self.connect()
        try:
            conn.execute(f"LISTEN {REQUESTS_CHANNEL}")
            log.info("recovery: serving requests (answers kept %s s, approvals %s)", self.answer_ttl, self.approvals)
            while not stop.is_set():
                try:
                    self.upkeep(conn)
                    while not stop.is_set() and self.serve_one(conn):  # a busy erasure is skipped next time
                        pass
                except psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        raise
                    # A deadlock, a lock timeout, a refusal: nothing was committed, the request stays
                    # as it was (unanswered, unaudited) and is tried again at the next poll.
                    self.metrics.failed()
                    log.error("recovery: a request could not be served: %s", db.first_line(exc))
                for _ in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                    pass
        except psycopg.Error as exc:  # only a broken connection gets here
            raise LoginvaultError(f"the recovery service lost its database connection: {db.first_line(exc)}") from None
        finally:
            conn.close()
