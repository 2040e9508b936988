"""Recovery through the service: `requests` sequential token → value requests as a privacy
officer's login (file the request, wait for the recovery service's answer, read it once), vs
the same lookups as a direct call of the lookup function (pii.lookup_value, as the admin with
the keys in the session: what a lookup costs without a request, an audit row or a service) in
the same run. p50 and p99 request → answer for both, and the ratio of the p50s.

In a database of its own on the bench's cluster: `messages` raw messages, built once."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench import harness, transform
from bench.harness import Result, execute, timed
from ingest import config
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap
from ingest.transform import runner as ingest_transform
from ingest.vault import requests
from ingest.vault.keys import key_options

TARGET_P99_MS = 250.0


def run(pg: PgCluster, messages: int, lookups: int) -> list[Result]:
    name = f"bench_recovery_{uuid.uuid4().hex[:8]}"
    ensure_database(pg.dsn("postgres"), name)
    dsn = pg.dsn(name)
    logins = throwaway_logins(dsn)
    bootstrap.bootstrap(dsn, logins=logins)
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    work = Path(tempfile.mkdtemp(prefix="loginvault-bench-recovery-"))
    env = {
        **keys,
        **{config.WORKLOADS[role].dsn_env: login for role, login in logins.items()},
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
    }
    try:
        with harness.environ(env):
            transform.load_raw(dsn, messages, seed=31)
            service = ingest_transform.Transformer()
            service.warm(transform.BUILD)
            if service.invoke(transform.BUILD) != 0:
                raise RuntimeError("dbt build failed: see dbt's output above")
            execute(dsn, "INSERT INTO pii.recovery_budget (login, daily_lookups) VALUES (%s, %s)",
                    (config.WORKLOADS[config.PII_ADMIN_ROLE].local_login, lookups * 2))  # fmt: skip
            tokens = [t for (t,) in execute(dsn, "SELECT token FROM pii.vault ORDER BY random() LIMIT %s", (lookups,))]
            tokens = (tokens * (lookups // max(1, len(tokens)) + 1))[:lookups]
            direct = _direct(dsn, tokens, keys)
            through = _through_service(logins[config.PII_ADMIN_ROLE], tokens, env, work)
    finally:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    service_p50, service_p99 = _percentiles(through)
    direct_p50, direct_p99 = _percentiles(direct)
    figures = {
        "messages": messages,
        "requests": lookups,
        "service_p50_ms": round(service_p50, 2),
        "service_p99_ms": round(service_p99, 2),
        "direct_p50_ms": round(direct_p50, 3),
        "direct_p99_ms": round(direct_p99, 3),
    }
    ratio = service_p50 / direct_p50
    target = f"p99 <= {TARGET_P99_MS:g} ms through the service"
    return [
        Result("recovery", ratio, target, service_p99 <= TARGET_P99_MS, figures, note="ratio: p50 service / direct")
    ]


def _direct(dsn: str, tokens: list[str], keys: dict[str, str]) -> list[float]:
    times = []
    with psycopg.connect(dsn, autocommit=True, options=key_options(keys)) as conn:
        for token in tokens:
            with timed() as seconds:
                rows = conn.execute("SELECT kind, value, outcome FROM pii.lookup_value(%s)", (token,)).fetchall()
            assert rows and rows[0][2] == "found", rows
            times.append(seconds() * 1000)
    return times


def _through_service(officer_dsn: str, tokens: list[str], env: dict[str, str], work: Path) -> list[float]:
    log = open(work / "recovery.log", "wb")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest", "recovery", "serve"],
        cwd=config.REPO_ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while b"recovery: serving requests" not in (work / "recovery.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the recovery service did not start: {work / 'recovery.log'}")
            time.sleep(0.1)
        times = []
        with psycopg.connect(officer_dsn, autocommit=True) as conn:
            for token in tokens:
                with timed() as seconds:
                    request_id = requests.file(conn, "request_value", token, "bench")
                    answer = requests.wait(conn, request_id, timeout=30)
                assert answer.outcome == "found", answer.body.get("outcome")
                times.append(seconds() * 1000)
        return times
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
