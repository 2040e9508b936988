"""The cleartext retention window: `loginvault retention apply` and `loginvault raw partition`.

Cleartext lives in raw.login_events (bodies) and staging.stg_sqs__login_events (payloads),
both partitioned by the UTC day of received_at. `retention apply` drops the days wholly older
than the window (`--days`, LOGINVAULT_RAW_RETENTION_DAYS: ingest/settings/), but never a day whose messages have
not reached the marts: raw's days through raw.apply_retention (a SECURITY DEFINER function of
raw's owner, which decides for itself), staging's as their owner, dbt's login. Everything
needed afterwards (deduplication, the marts, the vault, key rotation) works without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from ingest import LoginvaultError, config, count, db

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

STAGED = "staging.stg_sqs__login_events"


@dataclass(frozen=True)
class Day:
    table: str  # raw or staging
    day: date | None  # None: old rows of the default partition
    partition: str
    rows: int
    removed: bool
    kept_because: str | None = None


@dataclass
class Report:
    cutoff: datetime
    dry_run: bool
    days: list[Day] = field(default_factory=list)
    oldest_left: datetime | None = None  # the oldest cleartext still in raw or staging

    def removed(self, table: str) -> list[Day]:
        return [d for d in self.days if d.table == table and d.removed]

    def kept(self) -> list[Day]:
        return [d for d in self.days if not d.removed]

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = []
        for table in ("raw", "staging"):
            removed = self.removed(table)
            out.append(
                f"retention: {verb} {count(len([d for d in removed if d.day]), f'{table} day partition')}"
                f" ({count(sum(d.rows for d in removed), 'row')}) received before {self.cutoff:%Y-%m-%dT%H:%M:%SZ}"
            )
        for d in self.kept():
            out.append(f"retention: kept {d.table} {d.day} ({count(d.rows, 'row')}): {d.kept_because}")
        if self.oldest_left is None:
            out.append("retention: no cleartext left in raw or staging")
        else:
            age = datetime.now(UTC) - self.oldest_left
            out.append(
                f"retention: oldest cleartext left received {self.oldest_left:%Y-%m-%dT%H:%M:%SZ} or later"
                f" (oldest_cleartext_age_seconds={age.total_seconds():.0f})"
            )
        return out


def apply(days: int, dry_run: bool = False) -> Report:
    """Drop the cleartext days wholly older than the window of `days` that have reached the marts."""
    import psycopg

    if days < 1:
        raise LoginvaultError(f"the retention window must be at least 1 day, got {days}")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    report = Report(cutoff, dry_run)
    try:
        _apply(report)
    except psycopg.Error as exc:
        raise LoginvaultError(
            f"retention stopped (nothing of the failing step changed): {db.first_line(exc)}"
        ) from None
    return report


def _apply(report: Report) -> None:
    from ingest.vault import keys

    cutoff, dry_run = report.cutoff, report.dry_run
    # Apart from transforms (the lock): a build never reads a day being dropped.
    with keys.exclusive("apply-retention", wait_seconds=300), db.connect(config.TRANSFORMER_ROLE) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        with conn.transaction():
            for day, partition, rows, removed, why in conn.execute(
                "SELECT day, partition, rows, removed, kept_because FROM raw.apply_retention(%s, %s)", (cutoff, dry_run)
            ):
                report.days.append(Day("raw", day, partition, rows, removed, why))
            report.days += _staging(conn, cutoff, dry_run)
        report.oldest_left = _oldest(conn)


def _staging(conn: Connection[TupleRow], cutoff: datetime, dry_run: bool) -> list[Day]:
    """Staging's days wholly before the cutoff whose rows the marts have taken (their
    _transformed_at is at most the marts' watermark)."""
    if db.one_row(conn, "SELECT to_regclass(%s) IS NULL", (STAGED,))[0]:
        return []
    (watermark,) = db.one_row(conn, "SELECT raw.marts_watermark()")
    days = []
    for partition, day in conn.execute(
        "SELECT partition::text, day FROM loginvault.day_partitions(%s::regclass)"
        " WHERE (day + 1)::timestamp AT TIME ZONE 'UTC' <= %s",
        (STAGED, cutoff),
    ).fetchall():
        (newest,) = db.one_row(conn, f"SELECT max(_transformed_at) FROM {partition}")  # noqa: S608 (an index probe)
        (rows,) = db.one_row(conn, "SELECT loginvault.row_count(%s::regclass)", (partition,))
        if newest is not None and (watermark is None or newest > watermark):
            days.append(
                Day("staging", day, partition, rows, False, "the marts have not taken all of it yet: run a transform")
            )
            continue
        if not dry_run:
            conn.execute(f"DROP TABLE {partition}")
        days.append(Day("staging", day, partition, rows, True))
    return days + _staging_default(conn, cutoff, dry_run, watermark)


def _staging_default(
    conn: Connection[TupleRow], cutoff: datetime, dry_run: bool, watermark: datetime | None
) -> list[Day]:
    """Staging's default partition: the rows received before the cutoff or after now + 1 day
    (rejected: received_at_out_of_range) that the marts have taken."""
    default = f"{STAGED}_default"
    if watermark is None or db.one_row(conn, "SELECT to_regclass(%s) IS NULL", (default,))[0]:
        return []
    where = "(received_at < %s OR received_at >= now() + interval '1 day') AND _transformed_at <= %s"
    verb = "SELECT count(*) FROM" if dry_run else "WITH gone AS (DELETE FROM"
    tail = "" if dry_run else " RETURNING 1) SELECT count(*) FROM gone"
    (rows,) = db.one_row(conn, f"{verb} {default} WHERE {where}{tail}", (cutoff, watermark))  # noqa: S608
    return [Day("staging", None, default, rows, True)] if rows else []


def _oldest(conn: Connection[TupleRow]) -> datetime | None:
    """When the oldest cleartext still in raw or staging was received, to the day
    (loginvault.oldest_received: a one-page probe per day partition, oldest first)."""
    (raw,) = db.one_row(conn, "SELECT raw.oldest_cleartext()")
    staged = None
    if db.one_row(conn, "SELECT to_regclass(%s) IS NOT NULL", (STAGED,))[0]:
        (staged,) = db.one_row(conn, "SELECT loginvault.oldest_received(%s::regclass)", (STAGED,))
    present = [t for t in (raw, staged) if t is not None]
    return min(present) if present else None


# ---------------------------------------------------------------- raw partition


def partition_raw(admin_dsn: str) -> int:
    """Convert an unpartitioned raw.login_events (a database of an earlier version) into the
    day-partitioned table, keeping every row, index, trigger, owner, grant and comment. Refuses
    while a loader holds the table (stop the ingest first). Returns the rows moved."""
    import psycopg

    try:
        with psycopg.connect(admin_dsn, connect_timeout=10) as conn, conn.transaction():
            return _convert(conn)
    except psycopg.errors.LockNotAvailable:
        raise LoginvaultError(
            "raw.login_events is in use by a loader: stop the ingest (scale it to 0), then run this again"
        ) from None
    except psycopg.OperationalError as exc:
        raise db.cannot_connect(admin_dsn, exc) from None
    except psycopg.Error as exc:
        raise LoginvaultError(f"partitioning raw failed (nothing changed): {db.first_line(exc)}") from None


def _convert(conn: Connection[TupleRow]) -> int:
    loaders = db.one_row(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND pg_has_role(usesysid, %s, 'MEMBER') AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = usesysid)",
        (config.LOADER_ROLE,),
    )[0]
    if loaders:
        raise LoginvaultError(f"{loaders} loader sessions are connected: stop the ingest first, then run this again")
    conn.execute("LOCK TABLE raw.login_events IN ACCESS EXCLUSIVE MODE NOWAIT")
    if db.one_row(conn, "SELECT relkind FROM pg_class WHERE oid = 'raw.login_events'::regclass")[0] == "p":
        return -1
    acl = conn.execute(
        "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class AS c, aclexplode(c.relacl) AS a"
        " WHERE c.oid = 'raw.login_events'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0"
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = 'raw.login_events'::regclass"
    ).fetchall()
    triggers = conn.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'raw.login_events'::regclass AND NOT tgisinternal"
    ).fetchall()
    conn.execute("ALTER TABLE raw.login_events RENAME TO login_events_unpartitioned")
    for name, _ in indexes:
        conn.execute(f"ALTER INDEX {name} RENAME TO {name.split('.')[-1]}_unpartitioned")
    conn.execute(
        "CREATE TABLE raw.login_events (LIKE raw.login_events_unpartitioned INCLUDING DEFAULTS INCLUDING"
        " CONSTRAINTS INCLUDING COMMENTS) PARTITION BY RANGE (received_at)"
    )
    conn.execute("CREATE TABLE raw.login_events_default PARTITION OF raw.login_events DEFAULT")
    for _, definition in indexes:
        conn.execute(definition)  # read before the rename: it names the new table
    conn.execute(f"ALTER TABLE raw.login_events OWNER TO {config.RAW_OWNER_ROLE}")
    conn.execute(f"ALTER TABLE raw.login_events_default OWNER TO {config.RAW_OWNER_ROLE}")
    for grantee, privilege in acl:
        conn.execute(f'GRANT {privilege} ON raw.login_events TO "{grantee}"')
    conn.execute(
        "COMMENT ON TABLE raw.login_events IS"
        " 'Every SQS delivery of a login event, verbatim (loginvault ingest). Contains cleartext PII.'"
    )
    first, last, rows = db.one_row(
        conn,
        "SELECT min(received_at AT TIME ZONE 'UTC')::date, max(received_at AT TIME ZONE 'UTC')::date, count(*)"
        " FROM raw.login_events_unpartitioned",
    )
    today = datetime.now(UTC).date()
    conn.execute(
        "SELECT raw.ensure_partitions(%s, %s)",
        (min(first or today, today - timedelta(days=1)), today + timedelta(days=7)),
    )
    moved = conn.execute("INSERT INTO raw.login_events SELECT * FROM raw.login_events_unpartitioned").rowcount
    if moved != rows:
        raise LoginvaultError(f"moved {moved} of {rows} rows: nothing changed")
    # After the move: raw's load guard would refuse rows of loads already recorded.
    for (definition,) in triggers:
        conn.execute(definition)  # read before the rename: it names the new table
    conn.execute("DROP TABLE raw.login_events_unpartitioned")
    return moved
