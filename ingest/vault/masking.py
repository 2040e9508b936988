"""PII tokens in Python, identical to the dbt macros' pgcrypto ones (a test proves it).

token = hex(HMAC-SHA256(kind + ":" + canonical value, LOGINVAULT_HMAC_KEY)), canonical value
being PostgreSQL's host(ip::inet) text for an IP and the space-trimmed string for a device id
(loginvault.pii_token; a key version registered over older tokens hashes the value alone until
its rotation: kind_separated=False). Tests and benchmarks compare it with the database's.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

KINDS = ("ip", "device_id")
# The same gate as loginvault.try_inet (ingest/schema/repeatable/): hex digits, colons and dots only, and no
# IPv4 octet with a leading zero.
_IP_CHARS = re.compile(r"^[0-9A-Fa-f:.]+$")
_LEADING_ZERO_OCTET = re.compile(r"(^|[:.])0[0-9]+(\.|$)")


def canonical_ip(value: str) -> str | None:
    """host(value::inet) as PostgreSQL prints it, or None when PostgreSQL would reject it."""
    if not _IP_CHARS.match(value) or ("." in value and _LEADING_ZERO_OCTET.search(value)):
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 4:
        return str(address)
    return _postgres_ipv6_text(address)


def _postgres_ipv6_text(address: ipaddress.IPv6Address) -> str:
    """PostgreSQL (BIND's inet_ntop) prints ::a.b.c.d and ::ffff:a.b.c.d with a dotted tail."""
    words = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_len, start = -1, 0, None
    for i, word in enumerate([*words, 1]):
        if word == 0 and start is None:
            start = i
        elif word != 0 and start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    if best_start == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
        tail = str(ipaddress.IPv4Address(address.packed[12:]))
        return ("::ffff:" if best_len == 5 else "::") + tail
    return address.compressed


def canonical_device_id(value: str) -> str | None:
    """The device id without leading/trailing spaces (SQL btrim), None when empty."""
    trimmed = value.strip(" ")
    return trimmed or None


def canonical(value: str, kind: str) -> str | None:
    if kind == "ip":
        return canonical_ip(value)
    if kind == "device_id":
        return canonical_device_id(value)
    raise ValueError(f"unknown PII kind {kind!r}: expected one of {', '.join(KINDS)}")


def token(value: str, kind: str, key: str, kind_separated: bool = True) -> str | None:
    """The 64-hex-char token of `value`, or None when it is not a valid value of `kind`."""
    canon = canonical(value, kind)
    if canon is None:
        return None
    data = f"{kind}:{canon}" if kind_separated else canon
    return hmac.new(key.encode("utf-8"), data.encode("utf-8"), hashlib.sha256).hexdigest()
