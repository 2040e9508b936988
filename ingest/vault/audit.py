"""The audit as an auditor reads it (`loginvault audit`, a member of loginvault_auditor): every
lookup and erasure the recovery service made, every approval or rejection, and every request
that never reached one (refused when filed, cancelled, expired, still waiting), from the view
pii.audit_events, oldest first.

No field can forge a line: in the default text format every control character (and the
backslash) is escaped as `\\t`, `\\n`, `\\xNN`, `\\uNNNN`; `--format csv` quotes as RFC 4180 does (and
defuses what a spreadsheet would run as a formula), `--format json` prints one JSON object per line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ingest import LoginvaultError, config, db

COLUMNS = ("at", "event", "request", "login_user", "client_addr", "kind", "value_kind", "subject", "outcome", "reason")
FORMATS = ("text", "csv", "json")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Characters a terminal could take for a line or a column break, or that reorder a line.
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def rows(since: datetime | None) -> Iterator[tuple[Any, ...]]:
    """Audit events, oldest first."""
    import psycopg

    with db.connect(config.AUDITOR_ROLE, autocommit=True) as conn:
        try:
            cursor = conn.execute(
                "SELECT at, event, request_id, login_user, client_addr, kind, value_kind, subject, outcome, reason"
                " FROM pii.audit_events WHERE at >= %s ORDER BY at, event, request_id",
                (since or datetime(1970, 1, 1, tzinfo=UTC),),
            )
            yield from cursor
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(
                f"not authorized to read the audit ({db.first_line(exc)}): only members of {config.AUDITOR_ROLE} may"
            ) from None


def escape(cell: object) -> str:
    """A cell of the text format: NULL empty, every unsafe character visible and inert."""
    if cell is None:
        return ""
    text = cell.isoformat() if isinstance(cell, datetime) else str(cell)
    return _UNSAFE.sub(lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def _cell(value: object) -> object:
    """A CSV cell: a text that a spreadsheet would run as a formula (= + - @, or a tab or a
    carriage return first) starts with a quote, as OWASP's CSV injection advice has it."""
    value = "" if value is None else _plain(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _plain(value: object) -> object:
    if value is None or isinstance(value, (int, str)):
        return value
    return value.isoformat() if isinstance(value, datetime) else str(value)


def render(events: Iterable[tuple[Any, ...]], fmt: str) -> str:
    """The whole output in one of FORMATS (a header first, but in json)."""
    if fmt == "json":
        return "".join(json.dumps(dict(zip(COLUMNS, map(_plain, event), strict=True))) + "\n" for event in events)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([_cell(v) for v in event] for event in events)
        return buffer.getvalue()
    lines = ["\t".join(COLUMNS), *("\t".join(escape(cell) for cell in event) for event in events)]
    return "\n".join(lines) + "\n"
