"""The flags and arguments of single commands and actions (ingest/cli/): what `stack up`, `seed`,
`dlq redrive`, `keys rotate`, `recover …`, `audit` and `erase` take, declared as every other
setting is, so that each is stated once with its parser and its help. None of them comes from
the environment but the recovery timeout (services.py's RequestSettings).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ingest.setting_values import choice, moment, path, positive, whole
from ingest.settings.declaring import setting


@dataclass(frozen=True)
class StackUpSettings:
    """`loginvault stack up`."""

    seed_if_new: int = setting(
        0, "send N sample events if the queue was just created", flag="--seed-if-new", parse=whole(0), metavar="N"
    )


@dataclass(frozen=True)
class DbtArgs:
    """dbt's command line, as `transform` and `stack dbt` pass it on."""

    dbt_args: tuple[str, ...] = setting(
        (), "dbt's command and flags, e.g. `build --warn-error`", flag="DBT_ARGS", nargs=argparse.REMAINDER
    )


@dataclass(frozen=True)
class SeedSettings:
    """`loginvault seed`: synthetic events, or a file's."""

    count: int = setting(100, "synthetic events to send", flag="--count", parse=positive, metavar="N", group="events")
    file: Path | None = setting(
        None,
        "send the events of a JSON array / JSON Lines file (.gz ok); string elements are sent as-is",
        flag="--file",
        parse=path,
        metavar="FILE",
        group="events",
    )
    random_seed: int = setting(
        42, "seed of the synthetic generator", flag="--random-seed", parse=whole(0), metavar="N", conflicts="file"
    )


@dataclass(frozen=True)
class DlqRedriveSettings:
    """`loginvault dlq redrive`."""

    max_messages: int | None = setting(
        None, "move at most N", flag="--max-messages", parse=positive, metavar="N", default_text="all"
    )


@dataclass(frozen=True)
class KeyKind:
    """`loginvault keys retire KIND`: which key."""

    kind: str = setting(None, "hmac or encryption", flag="KIND", parse=choice("hmac", "encryption"))


@dataclass(frozen=True)
class KeyRotation(KeyKind):
    """`loginvault keys rotate KIND`."""

    batch: int | None = setting(
        None,
        "vault rows per committed batch",
        flag="--batch",
        parse=positive,
        metavar="N",
        default_text="50000 for hmac, 20000 for encryption",
    )


@dataclass(frozen=True)
class Lookup:
    """`loginvault recover lookup`: exactly one of a token or a value."""

    token: str | None = setting(
        None, "print the kind and cleartext of this token", flag="--token", metavar="T", group="what", required=True
    )
    ip: str | None = setting(
        None, "print the token of this IP and how many logins carry it", flag="--ip", metavar="V", group="what"
    )
    device_id: str | None = setting(
        None, "print the token of this device id and how many logins carry it", flag="--device-id", metavar="V",
        group="what",
    )  # fmt: skip


@dataclass(frozen=True)
class Reason:
    """Why an officer looks up, erases, approves or rejects: audited, so it is required."""

    reason: str = setting(None, "why (ticket, request): audited", flag="--reason", metavar="R", required=True)


@dataclass(frozen=True)
class RequestId:
    """`loginvault recover approve|reject|answer ID`: a request of `recover pending`."""

    request_id: int = setting(None, "the request's ID (`loginvault recover pending`)", flag="ID", parse=positive)


@dataclass(frozen=True)
class EraseSettings:
    """`loginvault erase`: whom (the reason is Reason, the timeout RequestSettings)."""

    user_id: str = setting(None, "the subject's user_id, exactly as sent", flag="--user-id", metavar="U", required=True)
    dry_run: bool = setting(False, "print the counts only (the lookup is audited)", flag="--dry-run")


@dataclass(frozen=True)
class AuditSettings:
    """`loginvault audit`."""

    since: datetime | None = setting(
        None, "only rows since WHEN: 7d, 12h, 30m, or a date/time (UTC)", flag="--since", parse=moment, metavar="WHEN"
    )
    audit_format: str = setting(
        "text",
        "text (tab-separated, control characters escaped), csv or json (one object per line)",
        flag="--format",
        parse=choice("text", "csv", "json"),
        metavar="FORMAT",
    )
