"""What an analyst sees (`loginvault summary`, as an analyst's login): mart size, rejections by
reason, IPs and devices shared by several users, and a few sample rows, their tokens whole (as
`recover lookup --token` takes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest import LoginvaultError, config, count, db

SAMPLE_COLUMNS = "user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date"


@dataclass(frozen=True)
class Summary:
    logins: int
    reasons: list[tuple[str, int]]
    shared_ips: int
    shared_devices: int
    sample: list[tuple[Any, ...]]

    def lines(self) -> list[str]:
        out = [
            f"user_logins: {count(self.logins, 'row')} (as {config.ANALYST_ROLE})",
            f"rejected_login_events: {count(sum(n for _, n in self.reasons), 'row')}",
            *(f"  {reason}: {n}" for reason, n in self.reasons),
            f"IPs shared by more than one user: {self.shared_ips}",
            f"devices shared by more than one user: {self.shared_devices}",
            f"sample rows ({SAMPLE_COLUMNS}):",
        ]
        return out + ["  " + " | ".join("NULL" if v is None else str(v) for v in row) for row in self.sample]


def _shared(mart: str, column: str) -> str:
    return (
        f"SELECT count(*) FROM (SELECT {column} FROM {mart}.user_logins"  # noqa: S608 (a checked identifier)
        f" WHERE {column} IS NOT NULL GROUP BY 1 HAVING count(DISTINCT user_id) > 1) AS s"
    )


def summary(mart: str) -> Summary:
    """What an analyst's login sees in the marts of schema `mart`."""
    import psycopg

    with db.connect(config.ANALYST_ROLE, autocommit=True) as conn:
        try:
            logins = db.one_row(conn, f"SELECT count(*) FROM {mart}.user_logins")[0]  # noqa: S608
            reasons = conn.execute(
                f"SELECT reason, count(*) FROM {mart}.rejected_login_events GROUP BY 1 ORDER BY 2 DESC, 1"  # noqa: S608
            ).fetchall()
            shared_ips = db.one_row(conn, _shared(mart, "masked_ip"))[0]
            shared_devices = db.one_row(conn, _shared(mart, "masked_device_id"))[0]
            sample = conn.execute(
                f"SELECT user_id, device_type, masked_ip, masked_device_id,"  # noqa: S608
                f" locale, app_version, create_date FROM {mart}.user_logins ORDER BY message_id LIMIT 5"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            raise LoginvaultError("the marts do not exist yet: run `make transform` first") from None
    return Summary(logins, reasons, shared_ips, shared_devices, sample)
