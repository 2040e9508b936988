"""Integration fixtures: a throwaway PostgreSQL cluster and moto SQS server per session, a database and a
queue per test, and the helpers that run `loginvault` commands against them.

Everything runs on free ports in directories under /tmp and is removed at the end of the session,
so the suite never touches the local stack (.local/, ports 54320/4566) a developer may have up.
The cluster lives under /tmp because pytest's own tmp dirs are 0700 root, which the `postgres`
OS user (initdb and pg_ctl run as it when we are root) cannot enter.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from running import IngestProcess, Result, run_ingest, wait_until  # noqa: F401 (the tests import them from here)
from scraping import metric, scrape  # noqa: F401

# Imported from here by the integration tests, with the fixtures.
from hermetic import REGION, base_env  # noqa: F401
from ingest import config, sqs
from ingest.local.moto_server import MotoServer
from ingest.local.network import free_port
from ingest.local.pg_cluster import PgCluster, ensure_database, throwaway_logins
from ingest.schema import bootstrap
from ingest.settings import SqsSettings
from ingest.sqs import Queue

REPO_ROOT = config.REPO_ROOT
TEMPLATE_DB = "loginvault_template"


# ---------------------------------------------------------------- directories and processes


_TMP_DIRS: list[Path] = []


def make_tmp_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that the postgres OS user can enter (mkdtemp makes it 0700).

    Removed at the end of the session at the latest (see pytest_unconfigure).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    _TMP_DIRS.append(path)
    return path


def pytest_unconfigure(config: pytest.Config) -> None:
    for service in _SERVICES:
        if service.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.popen.pid, signal.SIGKILL)
    for path in _TMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def new_cluster(prefix: str = "loginvault-test-pg-") -> PgCluster:
    """An initialized, started cluster on a free port with a random admin password."""
    cluster = PgCluster(root=make_tmp_dir(prefix), port=free_port(), password=secrets.token_hex(16), durable=False)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        remove_cluster(cluster)
        raise
    return cluster


def remove_cluster(cluster: PgCluster) -> None:
    try:
        if cluster.initialized():
            cluster.stop("immediate")
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)


# ---------------------------------------------------------------- logins


def role_dsns(admin_dsn: str) -> dict[str, str]:
    """LOGINVAULT_<ROLE>_DSN → the DSN of that workload's own login in the admin DSN's database."""
    return {config.WORKLOADS[role].dsn_env: dsn for role, dsn in throwaway_logins(admin_dsn).items()}


def role_dsn(admin_dsn: str, role: str) -> str:
    """The DSN of `role`'s workload login in the admin DSN's database."""
    return throwaway_logins(admin_dsn)[role]


def bootstrap_with_logins(admin_dsn: str) -> None:
    """The bootstrap, creating each workload's login (cluster-wide: once per cluster is enough)."""
    bootstrap.bootstrap(admin_dsn, logins=throwaway_logins(admin_dsn))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = new_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own, which it may stop, with a bootstrapped loginvault database."""
    cluster = new_cluster("loginvault-test-pg-own-")
    try:
        ensure_database(cluster.dsn("postgres"), config.DATABASE_NAME)
        bootstrap_with_logins(cluster.dsn())
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture(scope="session")
def template_db(pg_cluster: PgCluster) -> str:
    """A database bootstrapped once; every test database is a copy of it."""
    ensure_database(pg_cluster.dsn("postgres"), TEMPLATE_DB)
    bootstrap_with_logins(pg_cluster.dsn(TEMPLATE_DB))
    return TEMPLATE_DB


def create_test_database(cluster: PgCluster, template: str) -> str:
    """A copy of the bootstrapped template (fast), bootstrapped again for what a copy lacks.

    CREATE DATABASE … TEMPLATE copies schemas, tables and grants on them, but not the database's
    own ACL (bootstrap revokes CONNECT/TEMP from PUBLIC); the idempotent re-run takes milliseconds.
    """
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    bootstrap.bootstrap(cluster.dsn(name))
    return name


def database_name(dsn: str) -> str:
    """The database a DSN of the test cluster names (its URL's last part)."""
    return dsn.rsplit("/", 1)[1]


def drop_test_database(cluster: PgCluster, name: str) -> None:
    """Drop a test database, by name or by a DSN naming it (nothing when the cluster is down)."""
    if not cluster.running():
        return
    name = database_name(name) if "/" in name else name
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster, template_db: str) -> Iterator[str]:
    """The admin DSN of a fresh, bootstrapped database of this test's own."""
    name = create_test_database(pg_cluster, template_db)
    try:
        yield pg_cluster.dsn(name)
    finally:
        drop_test_database(pg_cluster, name)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer(root=make_tmp_dir("loginvault-test-moto-"), port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


# ---------------------------------------------------------------- environment


def ingest_env(
    pg_dsn: str | None = None, queue_url: str | None = None, endpoint_url: str | None = None
) -> dict[str, str]:
    """The environment of a `python -m ingest …` subprocess aimed at the given database and queue:
    the admin DSN for the bootstrap and each workload's own login (LOGINVAULT_<ROLE>_DSN)."""
    env = base_env()
    if pg_dsn is not None:
        env["PG_DSN"] = pg_dsn  # the bootstrap's only
        env.update(role_dsns(pg_dsn))
    if queue_url is not None:
        env["SQS_QUEUE_URL"] = queue_url
    if endpoint_url is not None:
        env["SQS_ENDPOINT_URL"] = endpoint_url
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """spawn(*args, env=…) → a running IngestProcess; whatever is still running at the end is SIGKILLed."""
    started: list[IngestProcess] = []

    def start(*args: str, env: dict[str, str]) -> IngestProcess:
        proc = IngestProcess(args, env, tmp_path / f"ingest-{len(started)}")
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(timeout=10)


# ---------------------------------------------------------------- queues


@dataclass
class TestQueue:
    name: str
    url: str
    endpoint_url: str
    sqs: Queue

    __test__ = False  # not a test class, despite its name

    @property
    def settings(self) -> SqsSettings:
        return self.sqs.settings

    def depth(self) -> tuple[int, int]:
        return self.sqs.depth()

    def wait_until_visible(self, count: int, timeout: float = 20) -> tuple[int, int]:
        """Wait for in-flight messages to come back (their visibility timeout ran out)."""
        deadline = time.monotonic() + timeout
        while True:
            visible, in_flight = self.depth()
            if visible >= count or time.monotonic() > deadline:
                return visible, in_flight
            time.sleep(0.2)


@pytest.fixture
def sqs_queue(moto_server: MotoServer, hermetic_env: None) -> Iterator[TestQueue]:
    """A queue (plus its DLQ) of this test's own on the session's moto server, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    url, created = sqs.ensure_queues(moto_server.endpoint_url, REGION, name=name)
    assert created
    queue = Queue(SqsSettings(url, moto_server.endpoint_url, REGION))
    try:
        yield TestQueue(name, url, moto_server.endpoint_url, queue)
    finally:
        client = queue.client
        for queue_name in (name, config.dlq_name(name)):
            try:
                client.delete_queue(QueueUrl=client.get_queue_url(QueueName=queue_name)["QueueUrl"])
            except Exception:  # the server may be gone already; nothing to keep clean then
                pass


@pytest.fixture
def env_for(sqs_queue: TestQueue):
    """env_for(pg_dsn) → the env of an ingest subprocess using this test's queue and that database."""

    def make(pg_dsn: str | None = None, **overrides: str) -> dict[str, str]:
        env = ingest_env(pg_dsn, sqs_queue.url, sqs_queue.endpoint_url)
        env.update(overrides)
        return env

    return make


# ---------------------------------------------------------------- database helpers


def query(dsn: str, sql: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def execute(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


# ---------------------------------------------------------------- whole jobs (seed → run → transform)


# The commands an officer runs: they hold no key (and get none here), the recovery service answers.
OFFICER_COMMANDS = ("recover", "erase")
# What a key-holding workload has that an officer's environment must not.
KEY_VARIABLES = (
    *config.KEY_ENVS,
    *(f"{name}_PREVIOUS" for name in config.KEY_ENVS),
    "PGOPTIONS",
    "LOGINVAULT_KEYS_FILE",
)
_SERVICES: list[IngestProcess] = []  # every recovery service the tests started (killed at the end)


def officer_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without any key: what a privacy officer's shell holds."""
    return {name: value for name, value in env.items() if name not in KEY_VARIABLES}


def start_recovery_service(env: dict[str, str], logs: Path, *args: str) -> IngestProcess:
    """`loginvault recovery serve` with `env` (its login and the keys), once it serves."""
    service = IngestProcess(("recovery", "serve", *args), env, logs)
    _SERVICES.append(service)
    service.wait_for("recovery: serving requests")
    return service


@dataclass
class Job:
    """A database and queue that went through seed → ingest → transform, and what it printed.

    `recover` and `erase` run with an officer's environment (no key) and a recovery service of
    the job's own, started with the job's keys on first use (again when the keys changed)."""

    dsn: str
    env: dict[str, str]
    dbt_dir: Path
    outputs: list[Result] = field(default_factory=list)
    service: IngestProcess | None = None
    service_keys: tuple[str | None, ...] = ()
    service_args: tuple[str, ...] = ()  # what the running service was started with

    def run(self, *args: str, ok: bool = True, env: dict[str, str] | None = None) -> Result:
        env = env or self.env
        if args and args[0] in OFFICER_COMMANDS:
            # The keys of `env` (when it has any: else the job's) go to the service, not to the officer.
            self.ensure_service(*self.service_args, env=env if set(KEY_VARIABLES) & set(env) else None)
            env = officer_env(env)
        result = run_ingest(*args, env=env, timeout=300)
        self.outputs.append(result)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def ensure_service(self, *args: str, env: dict[str, str] | None = None) -> IngestProcess:
        """The job's recovery service, running with the keys of `env` (default: the job's)."""
        env = env or self.env
        held = tuple(env.get(name) for name in KEY_VARIABLES) + args
        if self.service is not None and (self.service.popen.poll() is not None or held != self.service_keys):
            self.stop_service()
        if self.service is None:
            logs = self.dbt_dir / f"recovery-{len(_SERVICES)}"
            self.service = start_recovery_service(env, logs, *args)
            self.service_keys, self.service_args = held, args
        return self.service

    def stop_service(self) -> None:
        if self.service is not None:
            if self.service.popen.poll() is None:
                self.service.signal(signal.SIGTERM)
                self.service.finish(timeout=30)
            self.service = None

    def transform(self, *dbt_args: str, ok: bool = True) -> Result:
        return self.run("transform", *(dbt_args or ("build", "--warn-error")), ok=ok)

    @property
    def hmac_key(self) -> str:
        return self.env[config.HMAC_KEY_ENV]


def new_job(pg_cluster, template_db, moto_server, name: str) -> Job:
    dsn = pg_cluster.dsn(create_test_database(pg_cluster, template_db))
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: before the per-test hermetic_env
        mp.setenv("AWS_ACCESS_KEY_ID", "test")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "test")
        url, _ = sqs.ensure_queues(moto_server.endpoint_url, REGION, name=f"{name}-{uuid.uuid4().hex[:8]}")
    return _job(dsn, ingest_env(dsn, url, moto_server.endpoint_url), name)


def clone_job(pg_cluster: PgCluster, job: Job, name: str) -> Job:
    """A copy of `job`'s database (CREATE DATABASE … TEMPLATE: a second, not a rebuild), with the
    same queue and keys and a dbt target of its own."""
    dsn = pg_cluster.dsn(create_test_database(pg_cluster, database_name(job.dsn)))
    env = {**job.env, "PG_DSN": dsn, **role_dsns(dsn)}
    return _job(dsn, env, name)


def dbt_dirs(name: str) -> tuple[Path, dict[str, str]]:
    """A directory of a test's own for dbt's target/ and logs/, and the environment that puts
    them there (out of dbt_project/, where they can be searched), without colour codes."""
    dbt_dir = make_tmp_dir(f"loginvault-test-dbt-{name}-")
    env = {"DBT_TARGET_PATH": str(dbt_dir / "target"), "DBT_LOG_PATH": str(dbt_dir / "logs"), "DBT_USE_COLORS": "false"}
    return dbt_dir, env


def _job(dsn: str, env: dict[str, str], name: str) -> Job:
    dbt_dir, dbt = dbt_dirs(name)
    return Job(dsn, {**env, **dbt}, dbt_dir)


@pytest.fixture
def job(pg_cluster, template_db, moto_server) -> Iterator[Job]:
    """A database and queue of this test's own, to run whole jobs on."""
    job = new_job(pg_cluster, template_db, moto_server, "fn")
    yield job
    drop_test_database(pg_cluster, job.dsn)


def seeded(job: Job, count: int = 20, seed: int | None = None) -> Job:
    """`job` after `seed --count N` (synthetic events; `seed`: their random seed), the ingest
    and a build."""
    job.run("seed", "--count", str(count), *(("--random-seed", str(seed)) if seed is not None else ()))
    job.run("run", "--wait-time", "1")
    job.transform()
    return job


def ip_token(job: Job) -> tuple[str, str]:
    """(masked_ip, the ip as sent) of the first login (by message id) that carries an ip."""
    ((token, ip),) = query(
        job.dsn,
        "SELECT u.masked_ip, r.body::jsonb ->> 'ip' FROM user_logins u JOIN raw.login_events r USING (message_id)"
        " WHERE u.masked_ip IS NOT NULL ORDER BY u.message_id LIMIT 1",
    )
    return token, ip


# ---------------------------------------------------------------- a built database to copy per test
# A module sets ORIGIN_MESSAGES (default 20), ORIGIN_SEED (default: seed's own) and
# ORIGIN_PENDING (messages ingested after the build, not transformed; default 0).


@pytest.fixture(scope="module")
def origin(request, pg_cluster, template_db, moto_server) -> Iterator[Job]:
    """A database of the module's: ORIGIN_MESSAGES synthetic messages ingested and transformed,
    then ORIGIN_PENDING more ingested but not yet transformed. Tests copy it (`fresh`)."""
    module = request.module
    job = new_job(pg_cluster, template_db, moto_server, f"origin-{module.__name__.rsplit('_', 1)[-1]}")
    seeded(job, getattr(module, "ORIGIN_MESSAGES", 20), getattr(module, "ORIGIN_SEED", None))
    if pending := getattr(module, "ORIGIN_PENDING", 0):
        job.run("seed", "--count", str(pending))
        job.run("run", "--wait-time", "1")
    yield job
    drop_test_database(pg_cluster, job.dsn)


@pytest.fixture
def fresh(pg_cluster, origin) -> Iterator[Job]:
    """A copy of `origin` of this test's own, to tamper with."""
    job = clone_job(pg_cluster, origin, "fresh")
    yield job
    drop_test_database(pg_cluster, job.dsn)
