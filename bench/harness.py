"""What every benchmark needs: a durable throwaway PostgreSQL cluster, a moto server, timing,
and the results table / bench/results.json."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from ingest import bootstrap, config
from ingest.local.moto_server import MotoServer
from ingest.local.network import free_port
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins

RESULTS = Path(__file__).parent / "results.json"


@dataclass
class Result:
    benchmark: str
    ratio: float
    target: str
    met: bool
    figures: dict = field(default_factory=dict)
    note: str = ""

    def row(self) -> str:
        return f"| {self.benchmark:<11} | {self.ratio:>8.3f} | {self.target:<34} | {'yes' if self.met else 'NO':<3} | {self.note}"


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=config.REPO_ROOT)
    return out.stdout.strip() or "unknown"


def record(results: list[Result]) -> None:
    """Print the table and append the entries to bench/results.json (a JSON list)."""
    print("\n| benchmark   |    ratio | target                             | met | figures")
    print("|-------------|----------|------------------------------------|-----|--------")
    for r in results:
        print(r.row() + " " + json.dumps(r.figures))
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    history += [{"commit": commit(), "at": stamp, **asdict(r)} for r in results]
    RESULTS.write_text(json.dumps(history, indent=1) + "\n")
    print(f"\nappended {len(results)} entries to {RESULTS}")


@contextmanager
def timed():
    """with timed() as t: …; t() → seconds elapsed (then or since)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


@contextmanager
def cluster():
    """A durable cluster (fsync on, as a real server) with a bootstrapped database; yields its admin DSN."""
    root = Path(tempfile.mkdtemp(prefix="loginvault-bench-pg-", dir="/tmp"))
    root.chmod(0o755)
    pg = PgCluster(root=root, port=free_port(), password=secrets.token_hex(16), durable=True)
    try:
        pg.init()
        pg.start()
        ensure_database(pg.dsn("postgres"), config.DATABASE_NAME)
        bootstrap.bootstrap(pg.dsn(), logins=throwaway_logins(pg.dsn()))
        yield pg
    finally:
        if pg.initialized():
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def moto():
    root = Path(tempfile.mkdtemp(prefix="loginvault-bench-moto-", dir="/tmp"))
    server = MotoServer(root=root, port=free_port())
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def role_dsn(admin_dsn: str, role: str) -> str:
    """The DSN of a workload's own login on the bench's cluster."""
    return throwaway_logins(admin_dsn)[role]


def execute(dsn: str, sql: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None
