"""The local stack of one checkout: its secrets file, the environment it points every command at
(`loginvault stack env`), and bringing it up, down, and asking whether it is up.

Nothing local is started for what the user configured: a set PG_DSN or SQS_QUEUE_URL wins.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ingest import config, settings
from ingest.local import sample
from ingest.local.keys_file import KeysFile
from ingest.local.moto_server import MotoServer
from ingest.local.network import HOST
from ingest.local.pg_cluster import PgCluster, ensure_database, postgres_can_reach
from ingest.local.recovery_process import RecoveryProcess
from ingest.schema import bootstrap
from ingest.settings import LocalStackSettings, SqsSettings
from ingest.vault import keys

# The checkout's `dbt` (bin/dbt: `loginvault stack dbt`, the keys for dbt only), then the venv's.
SHELL_BIN = config.REPO_ROOT / "bin"


def shell_values(environ: Mapping[str, str]) -> dict[str, str]:
    """PATH with bin/ and the venv's bin/ first, and dbt's project and profiles directories, so that
    `dbt run`, `loginvault …` and `make …` work from anywhere in the checkout (user settings kept)."""
    first = [str(SHELL_BIN), str(Path(sys.executable).parent)]
    rest = [entry for entry in environ.get("PATH", os.defpath).split(os.pathsep) if entry and entry not in first]
    values = {"PATH": os.pathsep.join([*first, *rest])}
    for name in ("DBT_PROJECT_DIR", "DBT_PROFILES_DIR"):
        values[name] = settings.env(name, environ=environ) or str(config.DBT_PROJECT_DIR)
    return values


class LocalStack:
    """The local PostgreSQL cluster and moto server under `local_dir`, and their secrets (`keys`).

    `environ` is where the user's own settings are looked up (default: the process's)."""

    def __init__(
        self,
        local: LocalStackSettings,
        sqs: SqsSettings,
        mart_schema: str = "public",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.local = local
        self.sqs = sqs
        self.mart_schema = mart_schema
        self.environ = os.environ if environ is None else environ
        self.keys = KeysFile(local.keys_file)

    # ------------------------------------------------------------ the two servers

    def cluster(self) -> PgCluster:
        password = self.keys.read()["LOGINVAULT_LOCAL_PG_PASSWORD"]  # creates local_dir when missing
        local_dir = self.local.local_dir
        root = local_dir / "pg"
        if not postgres_can_reach(local_dir):
            # local_dir is, or is in, a directory the postgres OS user cannot enter (e.g. a 0700
            # mktemp): keep the cluster in a per-checkout directory under /tmp instead.
            digest = hashlib.sha256(str(local_dir).encode()).hexdigest()[:10]
            root = Path("/tmp") / f"loginvault-pg-{digest}"
        return PgCluster(root=root, port=self.local.pg_port, password=password)

    def moto(self) -> MotoServer:
        return MotoServer(self.local.local_dir, self.local.sqs_port)

    def recovery(self) -> RecoveryProcess:
        """The recovery service, run with the stack's environment (the keys from the keys file)."""
        return RecoveryProcess(self.local.local_dir)

    # ------------------------------------------------------------ the environment it exports

    def local_values(self) -> dict[str, str]:
        """What `env` prints when the user configured nothing."""
        secret = self.keys.read()
        moto = self.moto()
        cluster = self.cluster()
        return {
            "PG_DSN": cluster.dsn(),
            # Each workload's own login (bootstrap creates them; none is a superuser).
            **{
                w.dsn_env: cluster.dsn(user=w.local_login, password=secret[w.password_env])
                for w in config.WORKLOADS.values()
            },
            "SQS_ENDPOINT_URL": moto.endpoint_url,
            # moto's URL form; it answers for any account id.
            "SQS_QUEUE_URL": f"{moto.endpoint_url}/123456789012/{config.QUEUE_NAME}",
            "AWS_REGION": self.sqs.region,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            # Not the keys: the commands that use them read them from this file themselves.
            keys.KEYS_FILE_ENV: str(self.keys.path),
        }

    def user_configured(self, name: str) -> bool:
        """True when `name` is set to something else than this stack's own value for it."""
        value = settings.env(name, environ=self.environ)
        return value is not None and value != self.local_values().get(name)

    def env(self) -> dict[str, str]:
        """The environment that points every command at the local stack, user settings kept."""
        from ingest import db

        local = self.local_values()
        values = dict(local)
        if self.user_configured("SQS_QUEUE_URL"):
            # Their queue, their endpoint and credentials (from AWS's usual chain): no moto values.
            for name in ("SQS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                del values[name]
        if self.user_configured("PG_DSN"):
            # Their database: the workloads' logins are theirs to give (LOGINVAULT_<ROLE>_DSN).
            for w in config.WORKLOADS.values():
                del values[w.dsn_env]
        for name in list(local):
            mine = settings.env(name, environ=self.environ)
            if mine is not None:
                values[name] = mine
        # dbt's login for dbt (and psql), which read libpq's variables. No key: officers',
        # analysts' and auditors' shells hold none (`loginvault transform` puts them in dbt's session).
        dbt_dsn = values.get(config.WORKLOADS[config.TRANSFORMER_ROLE].dsn_env)
        if dbt_dsn:
            values.update(db.libpq_env(dbt_dsn))
        values.update(shell_values(self.environ))
        return values

    # ------------------------------------------------------------ up, down, status

    def up(self, seed_if_new: int = 0) -> dict[str, str]:
        """Bring up what is not user-configured; seed `seed_if_new` events into a just-created queue."""
        from ingest.consumer import sqs

        values = self.env()
        # This process talks to the stack it starts: give it the stack's credentials if unset.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if name in values:
                os.environ.setdefault(name, values[name])
        status = {}
        if not self.user_configured("PG_DSN"):
            cluster = self.cluster()
            started = cluster.ensure_up()
            created = ensure_database(cluster.dsn("postgres"), config.DATABASE_NAME)
            status["postgres"] = f"{'started' if started else 'running'} on {HOST}:{cluster.port} ({cluster.root})"
            if created:
                status["postgres"] += ", database created"
        bootstrap.bootstrap(
            values["PG_DSN"],
            self.mart_schema,
            logins={role: values[w.dsn_env] for role, w in config.WORKLOADS.items() if w.dsn_env in values},
        )
        if not self.user_configured("SQS_QUEUE_URL"):
            moto = self.moto()
            started = moto.ensure_up()
            url, created = sqs.ensure_queues(moto.endpoint_url, values["AWS_REGION"])
            status["sqs"] = (
                f"moto {'started' if started else 'running'} at {moto.endpoint_url},"
                f" queue {config.QUEUE_NAME} {'created' if created else 'exists'}"
            )
            if created and seed_if_new:
                queue = SqsSettings(url, moto.endpoint_url, values["AWS_REGION"], self.sqs.retry_mode)
                sent = sample.send_events(queue, sample.synthetic_events(seed_if_new))
                status["seed"] = f"{sent} sample events sent to the new queue"
        if config.WORKLOADS[config.RECOVERY_SERVICE_ROLE].dsn_env in values:
            status["recovery"] = self.recovery().ensure_up({**os.environ, **values})
        for part, text in status.items():
            print(f"stack: {part}: {text}", file=sys.stderr)
        return values

    def down(self) -> None:
        self.recovery().stop()
        self.moto().stop()
        cluster = self.cluster()
        if cluster.initialized():
            cluster.stop()
        print("stack: stopped", file=sys.stderr)

    def status(self) -> dict[str, bool]:
        """part → whether it is up."""
        return {
            "postgres": self.cluster().running(),
            "sqs": self.moto().running(),
            "recovery": self.recovery().running(),
        }


def dbt_env(stack: LocalStack) -> dict[str, str]:
    """What `dbt` on the shell's PATH runs with (`stack dbt`): the shell's environment plus the
    transformer's PII keys as session settings, for that dbt process only."""
    values = stack.env()
    secret = stack.keys.read()
    mine = {name: settings.env(name, environ=stack.environ) or secret[name] for name in config.KEY_ENVS}
    values["PGOPTIONS"] = keys.key_options(mine)
    return values
