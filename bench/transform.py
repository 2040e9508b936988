"""Transform: `dbt build` of the whole project (models and tests) over N raw rows (~30%
repeated ip/device values, 1% rejects), vs a hand-written single SQL script doing the same
masking, vault encryption and inserts (the limit); then M new raw rows on top, incrementally.

dbt runs as the transform service runs it (`ingest transform --every S`: one process, the
project parsed once): the full build is the service's first cycle (import and parse included),
the incremental build its next one. A one-shot `loginvault transform build` (a new
interpreter, dbt's imports and manifest loading: ~2.5 s more) is measured too, for the figures."""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench import harness
from bench.harness import Result, execute, timed
from ingest import config
from ingest.local import sample
from ingest.transform import runner
from ingest.vault.keys import key_options

SCRIPT = Path(__file__).with_name("handwritten_transform.sql")


def load_raw(dsn: str, n: int, seed: int, loads: int = 10) -> None:
    """N raw rows in `loads` completed dlt loads, as the loader (COPY, not timed)."""
    now = datetime.now(UTC)
    events = sample.synthetic_events(n, seed=seed)
    per_load = -(-n // loads)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"SET ROLE {config.LOADER_ROLE}")
        for load in range(loads):
            load_id = f"{now.timestamp() + load:.6f}"
            harness.copy_load(
                conn, events, per_load, load_id, now, sent=lambda: now - timedelta(seconds=secrets.randbelow(86400))
            )
    execute(dsn, "ANALYZE raw.login_events")


BUILD = ("build", "--warn-error", "--quiet")


def cli_build() -> float:
    """A one-shot `loginvault transform build` (as `python -m ingest`) in a new process, this one's
    environment, with the service's incremental test scope (the one-off default tests every row)."""
    with timed() as seconds:
        out = subprocess.run(
            [sys.executable, "-m", "ingest", "transform", "--test-scope", "incremental", "build", "--warn-error"],
            capture_output=True,
            text=True,
            cwd=config.REPO_ROOT,
        )
    if out.returncode != 0:
        raise RuntimeError(f"dbt build failed:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")
    return seconds()


def handwritten(dsn: str, keys: dict[str, str]) -> float:
    execute(dsn, f"CREATE SCHEMA IF NOT EXISTS bench_hw AUTHORIZATION {config.TRANSFORMER_ROLE}")
    with psycopg.connect(dsn, autocommit=True, options=key_options(keys)) as conn, timed() as seconds:
        conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
        conn.execute(SCRIPT.read_text())
    return seconds()


def run(dsn: str, n: int, increment: int) -> list[Result]:
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    work = Path(tempfile.mkdtemp(prefix="loginvault-bench-dbt-"))
    dbt_login = harness.role_dsn(dsn, config.TRANSFORMER_ROLE)
    env = {
        **keys,
        "PG_DSN": dsn,
        "LOGINVAULT_TRANSFORMER_DSN": dbt_login,
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return _run(dsn, n, increment, keys)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _service_build(service: runner.Transformer, args) -> float:
    with timed() as seconds:
        code = service.invoke(args)
    if code != 0:
        raise RuntimeError(f"dbt build failed (exit {code}): see dbt's output above")
    return seconds()


def _run(dsn: str, n: int, increment: int, keys: dict[str, str]) -> list[Result]:
    load_raw(dsn, n, seed=17)
    with timed() as full:  # the service's first cycle: imports, parse, full build with unit tests
        service = runner.Transformer("incremental")  # as the service runs it
        service.warm(BUILD)
        _service_build(service, BUILD)
    full_s = full()
    hand_s = handwritten(dsn, keys)
    counts = execute(
        dsn,
        "SELECT (SELECT count(*) FROM user_logins), (SELECT count(*) FROM bench_hw.user_logins),"
        " (SELECT count(*) FROM pii.vault), (SELECT count(*) FROM bench_hw.vault)",
    )[0]
    assert counts[0] == counts[1] and counts[2] == counts[3], counts  # the same work
    # Untimed: the scratch schema goes and the database settles before the incremental cycles.
    # The bulk builds above leave autovacuum ~6M fresh rows to visit and a checkpoint to write
    # (minutes of I/O on this machine, more after the land bench); a service cycle on a
    # settled database does not meet that, and the full build's figure does not include it.
    execute(dsn, "DROP SCHEMA bench_hw CASCADE")
    execute(dsn, "VACUUM (ANALYZE)")
    execute(dsn, "CHECKPOINT")
    # The service's next cycles, each after `increment` new rows: the median of three (one
    # cycle can meet autovacuum or a checkpoint after the bulk loads above).
    cycles = []
    for seed in (18, 19, 20):
        load_raw(dsn, increment, seed=seed, loads=1)
        cycles.append(_service_build(service, runner.without_unit_tests(BUILD)))
    incremental_s = statistics.median(cycles)
    load_raw(dsn, increment, seed=21, loads=1)
    one_shot_s = cli_build()
    figures = {
        "raw_rows": n,
        "dbt_build_s": round(full_s, 2),
        "handwritten_s": round(hand_s, 2),
        "mart_rows": counts[0],
        "vault_rows": counts[2],
    }
    incr = {
        "raw_rows": n,
        "new_rows": increment,
        "incremental_build_s": round(incremental_s, 2),
        "cycles_s": [round(c, 2) for c in cycles],
        "full_build_s": round(full_s, 2),
        "one_shot_cli_incremental_s": round(one_shot_s, 2),
        "one_shot_ratio": round(one_shot_s / full_s, 3),
    }
    return [
        Result("transform", full_s / hand_s, "<= 1.3 x hand-written SQL", full_s / hand_s <= 1.3, figures),
        Result("incremental", incremental_s / full_s, "<= 0.05 x full build", incremental_s / full_s <= 0.05, incr),
    ]
