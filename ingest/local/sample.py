"""Sample login events for the queue: realistic synthetic ones, or the events of a file.

Synthetic events look like the real feed: UUID user ids, android/ios, IPv4 with some IPv6,
`NNN-NN-NNNN` device ids, ~30% null locales, app versions such as `2.3.0`, `0.96`, `2.00`,
ip/device values shared across users (so duplicates exist), and one malformed message per
hundred. The same `seed` gives the same events.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest import LoginvaultError
from ingest.consumer.sqs import Queue
from ingest.settings import SqsSettings

MALFORMED = {"foo": "oops_wrong_msg_type", "bar": "123"}
LOCALES = ["RU", "US", "DE", "FR", "BR", "IN", "JP", "ES", "PH", "NG", "CN", "GB"]
APP_VERSIONS = ["2.3.0", "0.96", "2.00", "1.0.1", "3.4.12", "5.0", "0.2.6", "2.3", "4.1.0", "1"]


def _ipv4(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def _ipv6(rng: random.Random) -> str:
    return "2001:db8:" + ":".join(f"{rng.randint(0, 0xFFFF):x}" for _ in range(6))


def _device_id(rng: random.Random) -> str:
    return f"{rng.randint(0, 999):03d}-{rng.randint(0, 99):02d}-{rng.randint(0, 9999):04d}"


def synthetic_events(count: int, seed: int = 42) -> Iterator[dict[str, str | None]]:
    """`count` login events; event i with i % 100 == 42 is the malformed message."""
    rng = random.Random(seed)
    shared_ips: list[str] = []
    shared_devices: list[str] = []
    for i in range(count):
        if i % 100 == 42:
            yield dict(MALFORMED)
            continue
        # ~30% of ips and devices repeat one already seen, often under another user.
        if shared_ips and rng.random() < 0.3:
            ip = rng.choice(shared_ips)
        else:
            ip = _ipv6(rng) if rng.random() < 0.1 else _ipv4(rng)
            shared_ips.append(ip)
        if shared_devices and rng.random() < 0.3:
            device_id = rng.choice(shared_devices)
        else:
            device_id = _device_id(rng)
            shared_devices.append(device_id)
        yield {
            "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "app_version": rng.choice(APP_VERSIONS),
            "device_type": rng.choice(["android", "ios"]),
            "ip": ip,
            "locale": None if rng.random() < 0.3 else rng.choice(LOCALES),
            "device_id": device_id,
        }


def file_events(path: Path) -> Iterator[object]:
    """The elements of a JSON array or JSON Lines file, optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise LoginvaultError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LoginvaultError(f"cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise LoginvaultError(f"{path} is not a valid JSON array: {exc}") from None
        yield from items
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoginvaultError(f"{path}:{number} is not valid JSON: {exc.msg}") from None


def to_body(event: object) -> str:
    """A string is sent as-is (so malformed bodies can be sent); anything else as compact JSON."""
    if isinstance(event, str):
        return event
    return json.dumps(event, ensure_ascii=False, separators=(", ", ": "))


def send_events(settings: SqsSettings, events: Iterable[object]) -> int:
    return Queue(settings).send(to_body(e) for e in events)
