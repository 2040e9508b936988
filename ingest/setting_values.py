"""How a setting's text is read: whole numbers, seconds, ports, choices, SQL names, URLs, paths,
moments.

A parser takes the text of a flag or of an environment variable and returns the value, or raises
a ValueError whose message says what was expected and what came ("expected …, got …"): the
caller names the flag or the variable (ingest/settings/).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Reads one value from its text; a ValueError's message says what was expected ("expected …, got …").
Parser = Callable[[str], Any]


def whole(minimum: int = 0, maximum: int | None = None) -> Parser:
    """A whole number from `minimum` to `maximum` (inclusive; no upper bound when None)."""

    def parse(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            raise ValueError(f"expected a whole number {bounds}, got {number}")
        return number

    return parse


positive = whole(1)


def seconds(minimum: float = 0.0, *, inclusive: bool = True) -> Parser:
    """A finite number of seconds, at least (or, not inclusive, above) `minimum`."""

    def parse(text: str) -> float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {text!r}") from None
        if not math.isfinite(number) or number < minimum or (not inclusive and number == minimum):
            bound = f"{'at least' if inclusive else 'above'} {minimum:g}"
            raise ValueError(f"expected a number of seconds {bound}, got {text.strip()}")
        return number

    return parse


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    return int(whole(1, 65535)(text))


def port_or_off(text: str) -> int | None:
    """A TCP port to serve on, or 0 for none (off)."""
    number = whole(0, 65535)(text)
    return number or None


def choice(*values: str) -> Parser:
    """One of `values`, in any case; the value as written here."""

    def parse(text: str) -> str:
        for value in values:
            if text.strip().lower() == value.lower():
                return value
        raise ValueError(f"expected one of {', '.join(values)}, got {text!r}")

    return parse


log_level = choice("DEBUG", "INFO", "WARNING", "ERROR")


def identifier(text: str) -> str:
    """A PostgreSQL identifier that needs no quoting: the SQL interpolates it as is."""
    name = text.strip()
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"expected a lower-case SQL name (letters, digits, _), got {text!r}")
    return name


def http_url(text: str) -> str:
    url = text.strip()
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return url


def host(text: str) -> str:
    name = text.strip()
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"expected a host name or address, got {text!r}")
    return name


def path(text: str) -> Path:
    return Path(text.strip()).expanduser()


_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def moment(text: str) -> datetime:
    """A moment: `7d`, `12h`, `30m`, `90s` ago, or an ISO date/time (UTC when it has no zone)."""
    ago = _AGO.match(text.strip())
    if ago:
        return datetime.now(UTC) - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected e.g. 7d, 12h, 2026-01-31 or 2026-01-31T09:00, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def argument_type(parse: Parser) -> Callable[[str], Any]:
    """The parser as argparse's `type`: its message becomes argparse's one error line (exit 2)."""

    def argument(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return argument
