"""The settings of loginvault's workloads: what every command reads, the queue, the ingest, the
transform, the retention, the recovery requests and service, the bootstrap and the local stack.
Most of them also come from the environment (a deployment's ConfigMap); ingest/settings/commands.py
has the flags of single commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingest import config
from ingest.setting_values import choice, host, http_url, identifier, log_level, path, port, positive, seconds, whole
from ingest.settings.declaring import metrics_host_setting, metrics_port_setting, refuse_host_without_port, setting

# ---------------------------------------------------------------- the settings


@dataclass(frozen=True)
class CommonSettings:
    """What every command reads: how it logs, and the analysts' schema."""

    log_level: str = setting(
        "INFO",
        "log verbosity: DEBUG, INFO, WARNING or ERROR, in any case",
        env="LOGINVAULT_LOG_LEVEL",
        flag="--log-level",
        parse=log_level,
        metavar="LEVEL",
    )
    log_format: str = setting(
        "text",
        "text, or json: one JSON object per line for log shippers",
        env="LOGINVAULT_LOG_FORMAT",
        flag="--log-format",
        parse=choice("text", "json"),
        metavar="FORMAT",
    )
    # dbt_project.yml and profiles.yml read the same variable.
    mart_schema: str = setting(
        "public", "schema of user_logins and rejected_login_events", env="LOGINVAULT_MART_SCHEMA", parse=identifier
    )


@dataclass(frozen=True)
class SqsSettings:
    """The queue, and how to reach it."""

    queue_url: str = setting(None, "the queue to read or seed", env="SQS_QUEUE_URL", parse=http_url, required=True)
    endpoint_url: str | None = setting(
        None, "SQS endpoint (unset for AWS's own)", env="SQS_ENDPOINT_URL", parse=http_url
    )
    region: str = setting("us-east-1", "AWS region", env=("AWS_REGION", "AWS_DEFAULT_REGION"), parse=host)
    # botocore's retry mode; every SQS call makes up to 5 attempts.
    retry_mode: str = setting(
        "standard", "botocore's retry mode", env="AWS_RETRY_MODE", parse=choice("standard", "adaptive", "legacy")
    )


@dataclass(frozen=True)
class RunSettings:
    """`loginvault run`: how the ingest receives, batches and loads (the consumer's options)."""

    follow: bool = setting(False, "keep polling until SIGINT/SIGTERM", flag="--follow")
    max_messages: int | None = setting(
        None, "stop after receiving N messages", flag="--max-messages", parse=positive, metavar="N"
    )
    batch_size: int = setting(
        1000,
        "messages per load at most (micro-batch)",
        env="INGEST_BATCH_SIZE",
        flag="--batch-size",
        parse=positive,
        metavar="N",
    )
    # bench rss_large_bodies: 1 MiB bodies peak at 339 MiB (2 MiB), 441 (4 MiB), 722 (16 MiB).
    batch_bytes: int = setting(
        2 << 20, "bytes of bodies per load at most", env="INGEST_BATCH_BYTES", flag="--batch-bytes", parse=positive
    )
    # A batch goes at once when the queue has drained; while receives come back full, it fills
    # for this long at most (ingest/consumer/batching.py).
    batch_seconds: float = setting(
        1.0,
        "the longest a batch waits to fill while the queue has more",
        env="INGEST_BATCH_SECONDS",
        flag="--batch-seconds",
        parse=seconds(),
        metavar="S",
    )
    # None: 3, or 20 with follow (SQS's longest); see __post_init__.
    wait_seconds: int | None = setting(
        None,
        "long-poll seconds; without --follow the run ends after an empty poll",
        flag="--wait-time",
        parse=whole(0, 20),
        metavar="S",
        default_text="3, with --follow 20",
    )
    receivers: int = setting(
        1,
        "receiver threads long-polling in parallel, sharing one client",
        env=("INGEST_RECEIVERS", "INGEST_WORKERS"),
        flag="--receivers",
        hidden_flags=("--workers",),
        parse=positive,
        metavar="N",
    )
    loaders: int = setting(
        2,
        "batches loading at once, each by its own dlt pipeline",
        env="INGEST_LOADERS",
        flag="--loaders",
        parse=positive,
        metavar="N",
    )
    # SQS's own limit is 12 hours.
    visibility_timeout: int = setting(
        config.DEFAULT_VISIBILITY_TIMEOUT,
        "receive visibility timeout, well above a batch's load time",
        env="SQS_VISIBILITY_TIMEOUT",
        flag="--visibility-timeout",
        parse=whole(1, 43200),
        metavar="S",
    )
    retry_budget_seconds: float = setting(
        60.0,
        "seconds to keep retrying a failing load before exiting non-zero",
        env="INGEST_RETRY_BUDGET",
        flag="--retry-budget",
        parse=seconds(),
        metavar="S",
    )
    # auto: csv below raw_loader.PARQUET_MIN_ROWS messages, parquet (ADBC's binary COPY) from there.
    loader_file_format: str = setting(
        "auto",
        "how dlt hands a batch to PostgreSQL: auto, parquet or csv",
        env="INGEST_LOADER_FILE_FORMAT",
        parse=choice("auto", "parquet", "csv"),
    )
    metrics_port: int | None = metrics_port_setting("INGEST_METRICS_PORT")
    metrics_host: str = metrics_host_setting("INGEST_METRICS_HOST")
    progress_seconds: float = 2.0  # how often a progress line is logged while batches flow

    def __post_init__(self) -> None:
        if self.wait_seconds is None:
            object.__setattr__(self, "wait_seconds", 20 if self.follow else 3)
        refuse_host_without_port(self.metrics_port, self.metrics_host, "INGEST_METRICS_PORT", "INGEST_METRICS_HOST")

    @property
    def max_poll_age(self) -> float:
        """/healthz fails when no poll has succeeded for this long."""
        return max(60.0, 3.0 * (self.wait_seconds or 0))


@dataclass(frozen=True)
class TransformSettings:
    """`loginvault transform`: one dbt command, or the transform service (`--every S`)."""

    every: float | None = setting(
        None,
        "run as a service: the dbt command every S seconds (start to start) in one process, parsing the"
        " project once; unit tests in the first build only; SIGTERM/SIGINT finish the build in hand",
        flag="--every",
        parse=seconds(0.0, inclusive=False),
        metavar="S",
    )
    cycles: int | None = setting(
        None, "with --every: stop after N builds", flag="--cycles", parse=positive, metavar="N", needs="every"
    )
    # A one-off build tests every row; the service, building every few minutes, opts into
    # testing the rows staged since its last build whose every data test passed.
    test_scope: str | None = setting(
        None,
        "which rows the data tests check: all, or incremental (those staged since the last build whose"
        " every data test passed)",
        env="TRANSFORM_TEST_SCOPE",
        flag="--test-scope",
        parse=choice("all", "incremental"),
        metavar="SCOPE",
        default_text="all; with --every, incremental",
    )
    # The variable applies to the service only, so that one-off builds ignore a shared setting; the
    # flags are refused without --every (a one-off build serves no metrics).
    metrics_port: int | None = metrics_port_setting("TRANSFORM_METRICS_PORT", "with --every: ", needs="every")
    metrics_host: str = metrics_host_setting("TRANSFORM_METRICS_HOST", "with --every: ", needs="every")


@dataclass(frozen=True)
class RetentionSettings:
    """`loginvault retention apply`: the cleartext window, once or as a service."""

    days: int = setting(
        7,
        "the window in days: whole UTC days received before it go",
        env="LOGINVAULT_RAW_RETENTION_DAYS",
        flag="--days",
        parse=positive,
        metavar="N",
    )
    dry_run: bool = setting(False, "say what would go, remove nothing", flag="--dry-run")
    every: float | None = setting(
        None,
        "run as a service: apply every S seconds until SIGTERM/SIGINT (docker compose; Kubernetes uses a CronJob)",
        flag="--every",
        parse=seconds(0.0, inclusive=False),
        metavar="S",
    )


_SECONDS = {"flag": "--timeout", "parse": seconds(0.0, inclusive=False), "metavar": "S"}


@dataclass(frozen=True)
class RequestSettings:
    """`loginvault recover` and `loginvault erase`: how long the officer's command waits."""

    # Then the request is cancelled (with four eyes, one waiting for approval is left waiting).
    timeout: float = setting(
        30.0, "seconds to wait for the recovery service's answer", env="LOGINVAULT_RECOVERY_TIMEOUT", **_SECONDS
    )


@dataclass(frozen=True)
class RecoveryServiceSettings:
    """`loginvault recovery serve`: the recovery service (its login and the keys are credentials)."""

    answer_ttl: int = setting(
        300, "seconds an answer stays readable", env="LOGINVAULT_RECOVERY_ANSWER_TTL_SECONDS", parse=whole(1, 86_400)
    )
    # 1: every recovery and erasure request waits for another officer's approval.
    approvals: int = setting(0, "four eyes (0 or 1)", env="LOGINVAULT_RECOVERY_APPROVALS", parse=whole(0, 1))
    poll_seconds: float = setting(
        1.0, "look for requests this often when no notification wakes the service", env="LOGINVAULT_RECOVERY_POLL_SECONDS",
        **{**_SECONDS, "flag": "--poll-seconds"},
    )  # fmt: skip
    metrics_port: int | None = metrics_port_setting("RECOVERY_METRICS_PORT")
    metrics_host: str = metrics_host_setting("RECOVERY_METRICS_HOST")

    def __post_init__(self) -> None:
        refuse_host_without_port(self.metrics_port, self.metrics_host, "RECOVERY_METRICS_PORT", "RECOVERY_METRICS_HOST")


@dataclass(frozen=True)
class BootstrapSettings:
    """`loginvault bootstrap`: what the bootstrap sets beside the SQL (PG_DSN is a credential)."""

    # Unset keeps the current default row of pii.recovery_budget (200 on a new database).
    recovery_daily_budget: int | None = setting(
        None, "recovery lookups per login per UTC day", env="LOGINVAULT_RECOVERY_DAILY_BUDGET", parse=whole(0)
    )


@dataclass(frozen=True)
class LocalStackSettings:
    """Where and on which ports the local stack runs (`loginvault stack`, `make stack-up`)."""

    local_dir: Path = setting(
        config.REPO_ROOT / ".local", "the local stack's directory (cluster, logs, keys.env)", env="LOGINVAULT_LOCAL_DIR",
        parse=path,
    )  # fmt: skip
    pg_port: int = setting(54320, "the local PostgreSQL's port", env="LOGINVAULT_PG_PORT", parse=port)
    sqs_port: int = setting(4566, "the local moto server's port", env="LOGINVAULT_SQS_PORT", parse=port)

    @property
    def keys_file(self) -> Path:
        """The local secrets (mode 0600): the PII keys and the local logins' passwords."""
        return self.local_dir / "keys.env"
