"""The names of loginvault: queues, schemas, roles, workloads and key variables. Constants only:
nothing here reads the environment (ingest/settings/ reads it, once, at a command's start)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

QUEUE_NAME = "login-queue"
DLQ_MAX_RECEIVE_COUNT = 5
# The queue's own visibility timeout, and the default of `run --visibility-timeout`.
DEFAULT_VISIBILITY_TIMEOUT = 300

DATABASE_NAME = "loginvault"
RAW_SCHEMA = "raw"
RAW_TABLE = "login_events"
PII_SCHEMA = "pii"
# dlt's pipeline name: raw._dlt_loads.schema_name and raw._dlt_version.schema_name carry it.
PIPELINE_NAME = "loginvault_ingest"

LOADER_ROLE = "loginvault_loader"
TRANSFORMER_ROLE = "loginvault_transformer"
ANALYST_ROLE = "loginvault_analyst"
PII_ADMIN_ROLE = "loginvault_pii_admin"
AUDITOR_ROLE = "loginvault_auditor"
# The recovery service: besides the transformer, the only workload that holds the PII keys.
RECOVERY_SERVICE_ROLE = "loginvault_recovery_service"
# NOLOGIN owners (ingest/schema/repeatable/): of raw and its tables, of the recovery functions, and of the
# key registry's writers (the key administrator).
RAW_OWNER_ROLE = "loginvault_owner"
RECOVERY_ROLE = "loginvault_recovery"
KEY_ADMIN_ROLE = "loginvault_key_admin"


@dataclass(frozen=True)
class Workload:
    """A workload and the role its own login is a member of (and of nothing else)."""

    role: str
    local_login: str  # the login the local stack and the tests create for it
    who: str  # for messages
    # Each login's connection limit: no one login can take every connection slot (a loader
    # holding them all would stop the transform and the officers).
    connection_limit: int = -1

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
        Workload(LOADER_ROLE, "loginvault_ingest", "the ingest", connection_limit=50),
        Workload(TRANSFORMER_ROLE, "loginvault_dbt", "the transform (dbt)", connection_limit=30),
        Workload(ANALYST_ROLE, "loginvault_analyst_1", "an analyst", connection_limit=30),
        Workload(PII_ADMIN_ROLE, "loginvault_privacy_officer_1", "a privacy officer", connection_limit=25),
        Workload(AUDITOR_ROLE, "loginvault_auditor_1", "an auditor", connection_limit=10),
        Workload(RECOVERY_SERVICE_ROLE, "loginvault_recovery_svc", "the recovery service", connection_limit=20),
    )
}

HMAC_KEY_ENV = "LOGINVAULT_HMAC_KEY"
ENCRYPTION_KEY_ENV = "LOGINVAULT_ENCRYPTION_KEY"
KEY_ENVS = (HMAC_KEY_ENV, ENCRYPTION_KEY_ENV)
# Session settings through which the keys reach PostgreSQL (read with current_setting()).
KEY_SETTINGS = {HMAC_KEY_ENV: "loginvault.hmac_key", ENCRYPTION_KEY_ENV: "loginvault.encryption_key"}
MIN_KEY_BYTES = 32


def dlq_name(queue_name: str) -> str:
    """The dead-letter queue's name for a queue: `login-queue` → `login-queue-dlq`."""
    return f"{queue_name}-dlq"
