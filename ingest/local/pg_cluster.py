"""A PostgreSQL cluster in a directory of its own, run from the system's binaries: the local
stack's (durable), and the throwaway ones of the tests and benchmarks (no fsync)."""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ingest import LoginvaultError, config
from ingest.local.network import HOST, port_open

# The cluster's superuser, the bootstrap's admin (PG_DSN): no workload logs in as it.
ADMIN_USER = "loginvault_admin"


def pg_bindir() -> Path:
    """Directory of initdb/pg_ctl: the newest /usr/lib/postgresql/N/bin, else pg_config's."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    for name in ("pg_config", "initdb"):
        found = shutil.which(name)
        if found and name == "pg_config":
            out = subprocess.run([found, "--bindir"], capture_output=True, text=True)
            if out.returncode == 0:
                return Path(out.stdout.strip())
        elif found:
            return Path(found).parent
    raise LoginvaultError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql (e.g. `apt-get install postgresql postgresql-contrib`)"
    )


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres OS user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@functools.lru_cache(maxsize=8)
def postgres_can_reach(path: Path) -> bool:
    """Whether the postgres OS user can enter `path` (asked once per path: it forks runuser)."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], capture_output=True)
    return probe.returncode == 0


@dataclass(frozen=True)
class PgCluster:
    """A PostgreSQL cluster in `root` (data/, run/ socket dir, postgres.log) on HOST:port."""

    root: Path
    port: int
    password: str
    # False for throwaway test clusters: no fsync, so a crash may lose data but tests run faster.
    durable: bool = True

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = config.DATABASE_NAME, user: str = ADMIN_USER, password: str | None = None) -> str:
        return f"postgresql://{user}:{password or self.password}@{HOST}:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = _as_postgres([str(pg_bindir() / args[0]), *args[1:]])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise LoginvaultError(
                f"{args[0]} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]} (log: {self.log})"
            )
        return out

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.root / "run", "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(pwfile, 0o600)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        return self.initialized() and self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> None:
        if port_open(HOST, self.port):
            raise LoginvaultError(
                f"port {self.port} on {HOST} is taken by another program: set LOGINVAULT_PG_PORT to a free port"
            )
        opts = f"-p {self.port} -k {shlex.quote(str(self.root / 'run'))} -c listen_addresses={HOST}"
        # A statement log never carries a bind parameter: a looked-up value or an erased user id
        # (the production parameter group sets the same, deploy/terraform/rds.tf).
        opts += " -c log_parameter_max_length=0 -c log_parameter_max_length_on_error=0"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def ensure_up(self) -> bool:
        """Initialize and start if needed; True when it was started by this call."""
        if not self.initialized():
            self.init()
        if self.running():
            return False
        self.start()
        return True


def ensure_database(admin_dsn_postgres_db: str, database: str) -> bool:
    import psycopg

    with psycopg.connect(admin_dsn_postgres_db, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{database}"')
        return True


def throwaway_logins(admin_dsn: str) -> dict[str, str]:
    """role → the DSN of its workload's login in the admin DSN's database, for a throwaway
    cluster (tests, benchmarks): the passwords derive from the cluster's random admin password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(admin_dsn)
    logins = {}
    for role, workload in config.WORKLOADS.items():
        password = hashlib.sha256(f"{params['password']}:{workload.local_login}".encode()).hexdigest()[:32]
        logins[role] = (
            f"postgresql://{workload.local_login}:{password}@{params['host']}:{params['port']}/{params['dbname']}"
        )
    return logins
