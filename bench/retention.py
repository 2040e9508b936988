"""Retention: `retention apply --days 2` removing 90% of N raw rows (back-dated across 30 daily
partitions, one day each: the window keeps today's and the two days before, whose partitions
reach past the cutoff) vs a `DELETE … WHERE received_at < <those days' start>` of the same rows
followed by the `VACUUM` that frees their cleartext (until then it stays on disk), in an
identical database, in the same run. Flat in rows is the `scale` bench's (bench/scale.py).

Each database is a fresh bootstrap of its own on the bench's cluster. The rows are marked as
taken by the marts the cheap way (dbt builds the loads register; the marts' watermarks are set
to now) rather than by a full transform (and each message id put in a bare user_logins): the figure is about removing
raw, and the checks that a day reached the marts run all the same (their cost is in the timing;
mart_check_s is the check of every message against the marts alone)."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench import harness
from bench.harness import Result, execute, timed
from ingest import config
from ingest.lifecycle import retention
from ingest.local import sample
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap
from ingest.transform import runner as ingest_transform

DAYS, WINDOW_DAYS = 30, 2


def run(pg: PgCluster, n: int) -> list[Result]:
    dsns = []
    try:
        for role in ("retention", "delete"):
            name = f"bench_{role}_{uuid.uuid4().hex[:8]}"
            ensure_database(pg.dsn("postgres"), name)
            dsns.append(pg.dsn(name))
            bootstrap.bootstrap(dsns[-1], logins=throwaway_logins(dsns[-1]))
            _load(dsns[-1], n)
        return _measure(*dsns, n)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            for dsn in dsns:
                conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


def _load(dsn: str, n: int) -> None:
    """N raw rows, one completed dlt load per day, the oldest day DAYS days back (COPY through
    the parent table, as the loader); the loads registered as taken by the marts."""
    today = datetime.now(UTC).date()
    execute(dsn, f"SELECT raw.ensure_partitions('{today - timedelta(days=DAYS)}', '{today}')")
    events = sample.synthetic_events(n, seed=29)
    per_day = n // DAYS
    with psycopg.connect(harness.role_dsn(dsn, config.LOADER_ROLE)) as conn:
        for day in range(DAYS):
            received = datetime.combine(today - timedelta(days=day), datetime.min.time(), UTC) + timedelta(hours=12)
            load_id = f"{received.timestamp():.6f}"
            harness.copy_load(conn, events, per_day, load_id, received, queue="q")
    work = Path(tempfile.mkdtemp(prefix="loginvault-bench-retention-"))
    env = {
        "LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(dsn, config.TRANSFORMER_ROLE),
        "LOGINVAULT_HMAC_KEY": uuid.uuid4().hex * 2,
        "LOGINVAULT_ENCRYPTION_KEY": uuid.uuid4().hex * 2,
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    with harness.environ(env):
        if ingest_transform.Transformer().invoke(["run", "--select", "stg_sqs__loads", "--quiet"]) != 0:
            raise RuntimeError("dbt run of stg_sqs__loads failed")
    execute(
        dsn,
        "INSERT INTO staging.loginvault_watermarks (model, high) SELECT m, now()"
        " FROM unnest(ARRAY['user_logins', 'rejected_login_events', 'vault']) AS m",
    )
    # The marts (the bootstrap's, with their unique index on message_id) filled the cheap way:
    # each message id in user_logins (raw.apply_retention checks that every message of a day is
    # in a mart before it drops the day).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(
            "INSERT INTO public.user_logins (user_id, create_date, message_id)"
            " SELECT DISTINCT ON (message_id) 'bench', received_at::date, message_id FROM raw.login_events"
        )
        conn.execute("ANALYZE public.user_logins")
    execute(dsn, "VACUUM (ANALYZE) raw.login_events")
    execute(dsn, "CHECKPOINT")


def _measure(retention_dsn: str, delete_dsn: str, n: int) -> list[Result]:
    # The start of the oldest day that retention keeps: its partition reaches past the cutoff.
    kept_from = datetime.combine((datetime.now(UTC) - timedelta(days=WINDOW_DAYS)).date(), datetime.min.time(), UTC)
    with harness.environ({"LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(retention_dsn, config.TRANSFORMER_ROLE)}):
        with timed() as apply_s:
            report = retention.apply(days=WINDOW_DAYS)
    removed = sum(d.rows for d in report.removed("raw"))
    (left,) = execute(retention_dsn, "SELECT count(*) FROM raw.login_events")[0]
    with psycopg.connect(delete_dsn, autocommit=True) as conn:
        # The check that every message of a day is in a mart, alone, over the same days of the
        # identical database (raw.rows_outside_marts: an index probe per row, into each mart).
        with timed() as check_s:
            conn.execute(
                "SELECT count(*) FROM loginvault.day_partitions('raw.login_events') AS d,"
                " raw.rows_outside_marts(d.partition, d.day::timestamp AT TIME ZONE 'UTC',"
                " (d.day + 1)::timestamp AT TIME ZONE 'UTC') AS o WHERE d.day < %s",
                (kept_from.date(),),
            )
        with timed() as delete_s:
            deleted = conn.execute("DELETE FROM raw.login_events WHERE received_at < %s", (kept_from,)).rowcount
        # A DELETE leaves the cleartext on disk until VACUUM reclaims it; dropping a partition
        # does not: the figures give both.
        with timed() as vacuum_s:
            conn.execute("VACUUM raw.login_events")
    assert removed == deleted and left == (n // DAYS) * DAYS - removed, (removed, deleted, left)
    # The honest baseline: a DELETE leaves the cleartext on disk until VACUUM frees it.
    ratio = (delete_s() + vacuum_s()) / apply_s()
    figures = {
        "raw_rows": n,
        "removed_rows": removed,
        "removed_partitions": len([d for d in report.removed("raw") if d.day]),
        "retention_apply_s": round(apply_s(), 3),
        "mart_check_s": round(check_s(), 3),
        "delete_s": round(delete_s(), 2),
        "delete_then_vacuum_s": round(delete_s() + vacuum_s(), 2),
        "vs_delete": round(delete_s() / apply_s(), 2),
    }
    # Flat in rows: the `scale` bench's retention ratio (4x the rows in the same days).
    return [Result("retention", ratio, ">= 5 x faster than DELETE + VACUUM", ratio >= 5, figures)]
