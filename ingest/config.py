"""Names and settings of loginvault: one place for every queue, schema, role, key and env var."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ingest import LoginvaultError

REPO_ROOT = Path(__file__).resolve().parent.parent

QUEUE_NAME = "login-queue"
DLQ_MAX_RECEIVE_COUNT = 5

DATABASE_NAME = "loginvault"
RAW_SCHEMA = "raw"
RAW_TABLE = "login_events"
PII_SCHEMA = "pii"
PIPELINE_NAME = "loginvault_ingest"

# The analysts' schema (dbt_project/dbt_project.yml reads the same variable).
MART_SCHEMA = os.environ.get("LOGINVAULT_MART_SCHEMA", "").strip() or "public"

LOADER_ROLE = "loginvault_loader"
TRANSFORMER_ROLE = "loginvault_transformer"
ANALYST_ROLE = "loginvault_analyst"
PII_ADMIN_ROLE = "loginvault_pii_admin"
AUDITOR_ROLE = "loginvault_auditor"
# NOLOGIN owners (sql/bootstrap/): of raw and its tables, and of the recovery functions.
RAW_OWNER_ROLE = "loginvault_owner"
RECOVERY_ROLE = "loginvault_recovery"


@dataclass(frozen=True)
class Workload:
    """A workload and the role its own login is a member of (and of nothing else)."""

    role: str
    local_login: str  # the login the local stack and the tests create for it
    who: str  # for messages

    @property
    def dsn_env(self) -> str:
        return f"{self.role.upper()}_DSN"

    @property
    def password_env(self) -> str:
        """The local stack's password of `local_login` (.local/keys.env)."""
        return f"{self.role.upper()}_PASSWORD"


WORKLOADS = {
    w.role: w
    for w in (
        Workload(LOADER_ROLE, "loginvault_ingest", "the ingest"),
        Workload(TRANSFORMER_ROLE, "loginvault_dbt", "the transform (dbt)"),
        Workload(ANALYST_ROLE, "loginvault_analyst_1", "an analyst"),
        Workload(PII_ADMIN_ROLE, "loginvault_privacy_officer_1", "a privacy officer"),
        Workload(AUDITOR_ROLE, "loginvault_auditor_1", "an auditor"),
    )
}

HMAC_KEY_ENV = "LOGINVAULT_HMAC_KEY"
ENCRYPTION_KEY_ENV = "LOGINVAULT_ENCRYPTION_KEY"
KEY_ENVS = (HMAC_KEY_ENV, ENCRYPTION_KEY_ENV)
# Session settings through which the keys reach PostgreSQL (read with current_setting()).
KEY_SETTINGS = {HMAC_KEY_ENV: "loginvault.hmac_key", ENCRYPTION_KEY_ENV: "loginvault.encryption_key"}
MIN_KEY_BYTES = 32

DEFAULT_REGION = "us-east-1"
DEFAULT_VISIBILITY_TIMEOUT = 300


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable, with empty strings treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    raw = env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LoginvaultError(f"{name} must be a whole number, got {raw!r}") from None


def require(name: str, hint: str = 'run `eval "$(make -s env)"` or set it yourself') -> str:
    value = env(name)
    if value is None:
        raise LoginvaultError(f"{name} is not set: {hint}")
    return value


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        user, sep, _ = parts.netloc.rpartition("@")
        if sep and ":" in user:
            parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{parts.netloc.rpartition('@')[2]}")
        return urlunsplit(parts)
    # key=value: password='quoted value' or password=plain
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def first_line(exc: BaseException) -> str:
    """An error's first line: PostgreSQL's DETAIL lines can quote a row, i.e. cleartext PII."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cannot_connect(dsn: str, exc: BaseException) -> LoginvaultError:
    """The one sentence for a database that cannot be reached or refuses the login."""
    return LoginvaultError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {first_line(exc)}")


def role_dsn(role: str) -> str:
    """The DSN of a workload's own login: LOGINVAULT_<ROLE>_DSN. PG_DSN (the admin) is the
    bootstrap's only: no workload connects as the admin or acts as another role."""
    workload = WORKLOADS[role]
    dsn = require(
        workload.dsn_env,
        f"{workload.who} connects with a login of its own, a member of {role} only"
        ' (`eval "$(make -s env)"` sets the local stack\'s)',
    )
    if "://" not in dsn:
        raise LoginvaultError(
            f"{workload.dsn_env} must be a URL such as postgresql://user:password@host:5432/loginvault"
        )
    return dsn


def check_key(name: str) -> str:
    """The value of a PII key env var; a missing or weak key fails loudly."""
    value = require(name, 'run `eval "$(make -s env)"` or set a random key of at least 32 bytes')
    if len(value.encode()) < MIN_KEY_BYTES:
        raise LoginvaultError(
            f"{name} is too short: use at least {MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
        )
    return value


@dataclass(frozen=True)
class SqsSettings:
    queue_url: str
    endpoint_url: str | None
    region: str

    @classmethod
    def from_env(cls) -> SqsSettings:
        return cls(
            queue_url=require("SQS_QUEUE_URL"),
            endpoint_url=env("SQS_ENDPOINT_URL"),
            region=env("AWS_REGION", env("AWS_DEFAULT_REGION", DEFAULT_REGION)),
        )


def dlq_name(queue_name: str) -> str:
    """The dead-letter queue's name for a queue: `login-queue` → `login-queue-dlq`."""
    return f"{queue_name}-dlq"


DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


def libpq_env(dsn: str) -> dict[str, str]:
    """PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for a DSN: what dbt's profile and psql read."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise LoginvaultError(
            f"cannot parse the DSN {redact_dsn(dsn)}: expected postgresql://user:password@host:port/db"
        ) from None
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE"}
    return {env_name: str(params[key]) for key, env_name in names.items() if params.get(key) not in (None, "")}


def setting_option(setting: str, value: str) -> str:
    """One startup option `-c setting=value`, escaped for libpq's options (spaces, backslashes)."""
    escaped = value.replace("\\", "\\\\").replace(" ", "\\ ")
    return f"-c {setting}={escaped}"


def key_options(keys: dict[str, str] | None = None) -> str:
    """PGOPTIONS that put the PII keys in the session as loginvault.* settings.

    `keys` maps LOGINVAULT_*_KEY names to values (default: the environment, checked). Startup
    options are neither SQL nor logged, so the keys never reach compiled SQL, dbt's logs or
    the server's statement log.
    """
    values = keys if keys is not None else {name: check_key(name) for name in KEY_SETTINGS}
    return " ".join(setting_option(setting, values[name]) for name, setting in KEY_SETTINGS.items())


def dbt_env() -> dict[str, str]:
    """The environment dbt runs in: the transformer's connection, the keys, no telemetry."""
    dsn = role_dsn(TRANSFORMER_ROLE)
    return {
        **libpq_env(dsn),
        "PGOPTIONS": key_options(),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
