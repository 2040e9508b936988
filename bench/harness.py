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
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from ingest import config
from ingest.local import sample
from ingest.local.moto_server import MotoServer
from ingest.local.network import free_port
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap

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


def record(results: list[Result], profile: str = "full") -> None:
    """Print the table and append the entries to bench/results.json (a JSON list), each with
    the profile it ran at (full, quick, smoke: only full measures)."""
    print("\n| benchmark   |    ratio | target                             | met | figures")
    print("|-------------|----------|------------------------------------|-----|--------")
    for r in results:
        print(r.row() + " " + json.dumps(r.figures))
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    history += [{"commit": commit(), "at": stamp, "profile": profile, **asdict(r)} for r in results]
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


# moto's SQS reads its clock through datetime arithmetic (unix_time), and calls it for every
# message of the queue several times per message sent or received: at a few hundred messages
# deep that clock is most of moto's time. time.time() gives the same values, ~10x faster.
FAST_CLOCK = """\"\"\"bench: moto's SQS clock as time.time() (bench/harness.py, FAST_CLOCK).\"\"\"
import time

import moto.core.utils
import moto.sqs.models

_unix_time = moto.core.utils.unix_time


def unix_time(dt=None):
    return time.time() if dt is None else _unix_time(dt)


moto.sqs.models.unix_time = unix_time
moto.sqs.models.unix_time_millis = lambda dt=None: unix_time(dt) * 1000.0
"""


@contextmanager
def moto(fast_clock: bool = False):
    """A moto server; with fast_clock, its SQS clock is time.time() (FAST_CLOCK, loaded as the
    server's sitecustomize): for benchmarks where moto's speed is not what is measured."""
    root = Path(tempfile.mkdtemp(prefix="loginvault-bench-moto-", dir="/tmp"))
    server = MotoServer(root=root, port=free_port())
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    pythonpath = os.environ.get("PYTHONPATH")
    try:
        if fast_clock:  # the server inherits this environment; nothing started later does
            (root / "site").mkdir()
            (root / "site" / "sitecustomize.py").write_text(FAST_CLOCK)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "site"), pythonpath]))
        try:
            server.start()
        finally:
            if fast_clock:
                os.environ.pop("PYTHONPATH")
                if pythonpath is not None:
                    os.environ["PYTHONPATH"] = pythonpath
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def environ(values: dict[str, str]):
    """This process's environment with `values` set, restored afterwards (dbt and the lifecycle
    commands read their logins and keys from it)."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def role_dsn(admin_dsn: str, role: str) -> str:
    """The DSN of a workload's own login on the bench's cluster."""
    return throwaway_logins(admin_dsn)[role]


def execute(dsn: str, sql: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def copy_load(conn, events, count: int, load_id: str, received, sent=None, queue: str = "login-queue") -> None:
    """One completed dlt load of `count` raw rows from `events`, as the loader does it (COPY
    through the parent table, then the load's raw._dlt_loads row), committed. `sent`: a
    function of nothing giving each row's SentTimestamp (default: `received`)."""
    with conn.cursor().copy("COPY raw.login_events FROM STDIN") as copy:
        for _, event in zip(range(count), events, strict=False):
            row_sent = sent() if sent else received
            copy.write_row(
                (str(uuid.uuid4()), sample.to_body(event), row_sent, received, 1, queue, load_id, uuid.uuid4().hex[:14])
            )
    conn.execute(
        "INSERT INTO raw._dlt_loads (load_id, schema_name, status, inserted_at) VALUES (%s, 'bench', 0, now())",
        (load_id,),
    )
    conn.commit()
