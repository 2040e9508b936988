"""The recovery audit as an auditor reads it (`loginvault audit`, a member of loginvault_auditor)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from ingest import LoginvaultError, config, db

COLUMNS = ("recovered_at", "login_user", "client_addr", "direction", "kind", "token", "outcome", "reason")
_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`7d`, `12h`, `30m`, `90s` (ago), or an ISO date/time (UTC when it has no zone)."""
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LoginvaultError(f"--since {text!r}: expected e.g. 7d, 12h, 2026-01-31 or 2026-01-31T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def rows(since: datetime | None) -> Iterator[tuple]:
    """Audit rows, oldest first; the outcome of rows older than outcomes is derived from `found`."""
    import psycopg

    with db.connect(config.AUDITOR_ROLE, autocommit=True) as conn:
        try:
            cursor = conn.execute(
                "SELECT recovered_at, login_user, client_addr, direction, kind, token,"
                " coalesce(outcome, CASE WHEN found THEN 'found' ELSE 'not_found' END), reason"
                " FROM pii.recovery_audit WHERE recovered_at >= %s ORDER BY id",
                (since or datetime(1970, 1, 1, tzinfo=timezone.utc),),
            )
            yield from cursor
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(
                f"not authorized to read the audit ({db.first_line(exc)}): only members of {config.AUDITOR_ROLE} may"
            ) from None
