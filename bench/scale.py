"""Scale: how the service's work grows with history. The same measurements on N and on 4N
messages of history (each in a fresh database of the bench's cluster), the ratio 4N/N of each:

- the incremental build of M new messages, as the transform service runs it (the median of
  three cycles after the history's one full build, as the `incremental` bench);
- `retention apply --days 30` in its steady state: the same 30 days of raw (and staging)
  partitions dropped at both sizes, each message of them checked against marts of N or 4N
  rows. Raw holds the last DAYS days throughout, as daily retention keeps it: an untimed
  `retention apply --days DAYS` right after the full build drops the older days at 4N, so the
  incremental cycles, too, meet the raw a deployment has;
- three analyst queries on user_logins as the analyst's login, the p50 of RUNS runs each with
  varied parameters: one user's logins, the users sharing a masked IP, daily counts by app
  version over 30 days (a window within the last DAYS days).

History grows as a deployment's does: the same messages a day (N / DAYS), over DAYS days at N
and 4 x DAYS at 4N (one completed dlt load a day; sent_at, so the marts' create_date, on the
same day). So the 30 days that retention drops and that the daily counts read hold the same
rows at both sizes, beside 4x the history; one user's logins are 4x as many at 4N (the same
users, four times as long).
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import tempfile
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from bench import harness, transform
from bench.harness import Result, execute, timed
from ingest import config
from ingest.lifecycle import retention
from ingest.local import sample
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap
from ingest.transform import runner

DAYS, WINDOW_DAYS, CYCLES, RUNS = 60, 30, 3, 21
QUERIES = {
    # one user's logins
    "user": "SELECT device_type, masked_ip, masked_device_id, locale, app_version, create_date"
    " FROM user_logins WHERE user_id = %s ORDER BY create_date",
    # the users sharing a masked IP with a given token
    "shared_ip": "SELECT DISTINCT user_id FROM user_logins WHERE masked_ip = %s",
    # daily counts by app version over 30 days
    "daily": "SELECT create_date, app_version, count(*) FROM user_logins"
    " WHERE create_date >= %s AND create_date < %s::date + %s GROUP BY create_date, app_version ORDER BY 1, 2",
}
TARGETS = {"incremental": 1.2, "retention": 1.5, "user": 1.5, "shared_ip": 1.5, "daily": 1.5}
NAMES = {
    "incremental": "scale_incr",
    "retention": "scale_ret",
    "user": "scale_user",
    "shared_ip": "scale_ip",
    "daily": "scale_daily",
}


def run(pg: PgCluster, n: int, increment: int) -> list[Result]:
    small, large = (_size(pg, size, increment, days) for size, days in ((n, DAYS), (4 * n, 4 * DAYS)))
    results = []
    for what, target in TARGETS.items():
        ratio = large[what] / small[what] if small[what] > 0 else float("nan")
        figures = {"sizes": [n, 4 * n], "seconds": [round(small[what], 6), round(large[what], 6)]}
        figures.update({k: [small["figures"][k], large["figures"][k]] for k in small["figures"] if k.startswith(what)})
        results.append(Result(NAMES[what], ratio, f"<= {target} x at 4x the history", ratio <= target, figures))
    results.append(
        Result("scale_setup", large["build"] / small["build"], "information: full build 4N / N", True, large["setup"])
    )
    return results


def _size(pg: PgCluster, n: int, increment: int, days: int) -> dict:
    """The measurements on a fresh database of n messages of history over `days` days (dropped
    afterwards)."""
    name = f"bench_scale_{uuid.uuid4().hex[:8]}"
    ensure_database(pg.dsn("postgres"), name)
    dsn = pg.dsn(name)
    try:
        bootstrap.bootstrap(dsn, logins=throwaway_logins(dsn))
        return _measure(dsn, n, increment, days)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _history(dsn: str, n: int, days: int) -> date:
    """N raw rows, one completed dlt load a day for `days` days up to yesterday (COPY through
    the parent table, as the loader); each row sent up to 10 h before it was received, the same
    day. Returns the first day."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days)
    execute(dsn, f"SELECT raw.ensure_partitions('{first}', '{today}')")
    events = sample.synthetic_events(n, seed=31)
    per_day = -(-n // days)
    with psycopg.connect(harness.role_dsn(dsn, config.LOADER_ROLE)) as conn:
        for day in range(days):
            received = datetime.combine(first + timedelta(days=day), datetime.min.time(), UTC) + timedelta(hours=23)
            harness.copy_load(
                conn,
                events,
                per_day,
                f"{received.timestamp():.6f}",
                received,
                sent=lambda r=received: r - timedelta(seconds=secrets.randbelow(36_000)),
            )
    execute(dsn, "ANALYZE raw.login_events")
    return first


def _measure(dsn: str, n: int, increment: int, days: int) -> dict:
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    work = Path(tempfile.mkdtemp(prefix="loginvault-bench-scale-"))
    env = {
        **keys,
        "PG_DSN": dsn,
        "LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(dsn, config.TRANSFORMER_ROLE),
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    with harness.environ(env):
        with timed() as copy_s:
            _history(dsn, n, days)
        with timed() as build_s:  # the service's first cycle: imports, parse, the full build
            service = runner.Transformer("incremental")
            service.warm(transform.BUILD)
            transform.service_build(service, transform.BUILD)
        # Steady state: raw holds the last DAYS days, as the daily retention runs before would
        # have left it (at 4N it drops the older 3 x DAYS days; at N nothing).
        catch_up = _catch_up(dsn, days)
        with timed() as settle_s:  # untimed in the figures: as the incremental bench
            execute(dsn, "VACUUM (ANALYZE)")
            execute(dsn, "CHECKPOINT")
        cycles, nodes = [], []
        for seed in range(CYCLES):
            transform.load_raw(dsn, increment, seed=100 + seed, loads=1)
            cycles.append(transform.service_build(service, runner.without_unit_tests(transform.BUILD)))
            nodes.append(_node_seconds(work / "target" / "run_results.json"))
        out = {
            "incremental": statistics.median(cycles),
            "build": build_s(),
            "figures": {"incremental_cycles_s": [round(c, 2) for c in cycles], "incremental_slowest": _slowest(nodes)},
            "setup": {
                "raw_rows": n,
                "copy_s": round(copy_s(), 1),
                "full_build_s": round(build_s(), 1),
                "vacuum_checkpoint_s": round(settle_s(), 1),
            },
        }
        _queries(dsn, out)
        out["figures"].update(catch_up)
        _retention(dsn, out)
    print(f"bench: scale at {n} rows: {out['setup']}", flush=True)
    return out


def _node_seconds(path: Path) -> dict[str, float]:
    """Each node of a build (model or test, by name) → its seconds, from dbt's run_results.json."""
    results = json.loads(path.read_text())["results"]
    return {
        r["unique_id"].split(".")[2]: r["execution_time"] for r in results
    }  # model.project.name, test.project.name.hash


def _slowest(cycles: list[dict[str, float]], count: int = 6) -> dict[str, float]:
    """The `count` nodes with the largest median seconds over the cycles: where a cycle's time goes."""
    medians = {name: statistics.median(c.get(name, 0.0) for c in cycles) for name in cycles[0]}
    return {name[:60]: round(medians[name], 2) for name in sorted(medians, key=medians.get, reverse=True)[:count]}


def _queries(dsn: str, out: dict) -> None:
    """RUNS runs of each analyst query as the analyst's login, each with its own parameter; the
    daily counts over 30 days starting within the last DAYS days (the same rows at both sizes)."""
    rng = random.Random(37)
    sampled = execute(
        dsn,
        "SELECT user_id, masked_ip FROM user_logins WHERE masked_ip IS NOT NULL ORDER BY md5(message_id) LIMIT %s",
        (RUNS,),
    )
    today = datetime.now(UTC).date()
    starts = [today - timedelta(days=DAYS - rng.randrange(DAYS - WINDOW_DAYS + 1)) for _ in range(RUNS)]
    params = {
        "user": [(u,) for u, _ in sampled],
        "shared_ip": [(ip,) for _, ip in sampled],
        "daily": [(d, d, WINDOW_DAYS) for d in starts],
    }
    with psycopg.connect(harness.role_dsn(dsn, config.ANALYST_ROLE), autocommit=True) as conn:
        for what, sql in QUERIES.items():
            seconds, rows = [], 0
            for p in params[what]:
                with timed() as t:
                    got = conn.execute(sql, p).fetchall()
                seconds.append(t())
                rows += sum(r[2] for r in got) if what == "daily" else len(got)  # logins counted
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params[what][0]).fetchone()[0][0]["Plan"]
            out[what] = statistics.median(seconds)
            out["figures"][f"{what}_p50_s"] = round(out[what], 6)
            out["figures"][f"{what}_runs"] = len(seconds)
            out["figures"][f"{what}_p90_s"] = round(sorted(seconds)[int(len(seconds) * 0.9)], 6)
            out["figures"][f"{what}_rows_per_run"] = round(rows / max(len(seconds), 1), 1)
            out["figures"][f"{what}_plan"] = _scans(plan)


def _scans(plan: dict) -> str:
    """The plan's scan nodes (with their index), e.g. 'Index Only Scan user_logins_create_date_idx'."""
    found = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Scan" in node["Node Type"]:
            found.append(" ".join(filter(None, (node["Node Type"], node.get("Index Name")))))
        stack += node.get("Plans", [])
    return ", ".join(found)


def _catch_up(dsn: str, days: int) -> dict:
    """`retention apply --days DAYS` after the full build: what is older than the last DAYS days
    goes (nothing at N, 3 x DAYS days at 4N); its time and rows, as information."""
    with harness.environ({"LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(dsn, config.TRANSFORMER_ROLE)}):
        with timed() as seconds:
            report = retention.apply(days=DAYS)
    removed = report.removed("raw")
    assert len(removed) == days - DAYS and not report.kept(), [(d.day, d.kept_because) for d in report.kept()]
    return {"retention_catch_up_s": round(seconds(), 2), "retention_catch_up_rows": sum(d.rows for d in removed)}


def _retention(dsn: str, out: dict) -> None:
    """`retention apply --days 30` in its steady state (raw holds the last DAYS days): first its
    dry run (the checks alone: which days may go, every message of each against the marts),
    then the run itself; it drops the same 30 days at both sizes."""
    with harness.environ({"LOGINVAULT_TRANSFORMER_DSN": harness.role_dsn(dsn, config.TRANSFORMER_ROLE)}):
        with timed() as dry_s:
            retention.apply(days=WINDOW_DAYS, dry_run=True)
        with timed() as apply_s:
            report = retention.apply(days=WINDOW_DAYS)
    removed = report.removed("raw")
    assert len(removed) == DAYS - WINDOW_DAYS and not report.kept(), [(d.day, d.kept_because) for d in report.kept()]
    out["retention"] = apply_s()
    out["figures"].update(
        retention_removed_rows=sum(d.rows for d in removed),
        retention_removed_partitions=len(removed) + len(report.removed("staging")),
        retention_dry_run_s=round(dry_s(), 3),
        retention_rows_per_s=round(sum(d.rows for d in removed) / apply_s()),
    )
