"""Integration: `python -m ingest stack up / env / down` brings up and stops a local stack of its own.

The stack lives in a tmp dir under /tmp on free ports (LOGINVAULT_LOCAL_DIR, LOGINVAULT_PG_PORT,
LOGINVAULT_SQS_PORT), never in the checkout's .local/ on 54320/4566.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest

from conftest import REGION, REPO_ROOT, base_env, drop_test_database, make_tmp_dir, query, run_ingest
from ingest import config
from ingest.local.moto_server import MotoServer
from ingest.local.network import HOST, free_port
from ingest.local.pg_cluster import ensure_database
from ingest.local.stack import LocalStack
from ingest.schema import migrate
from ingest.settings import LocalStackSettings, SqsSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLES = set(config.WORKLOADS)
ENV_NAMES = (
    "PG_DSN",
    *(w.dsn_env for w in config.WORKLOADS.values()),
    "SQS_ENDPOINT_URL",
    "SQS_QUEUE_URL",
    "AWS_REGION",
    *config.KEY_ENVS,  # must be unset: no key in the shell `stack env` prepares
    "PGOPTIONS",
    "LOGINVAULT_KEYS_FILE",
)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@pytest.fixture
def local_stack_env(request):
    """The env of `stack` commands with a local dir and ports of this test's own; stops all it started.

    Parametrize indirectly with the local dir's mode (default 0755).
    """
    local_dir = make_tmp_dir("loginvault-test-stack-")
    local_dir.chmod(getattr(request, "param", 0o755))
    pg_port, sqs_port = free_port(), free_port()
    env = base_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *config.KEY_ENVS):
        env.pop(name)  # `stack up` must manage without: it provides moto's and generates the keys
    env.update(LOGINVAULT_LOCAL_DIR=str(local_dir), LOGINVAULT_PG_PORT=str(pg_port), LOGINVAULT_SQS_PORT=str(sqs_port))
    try:
        yield env, local_dir, pg_port, sqs_port
    finally:
        try:
            run_ingest("stack", "down", env=env, timeout=60)
        finally:
            # Whatever `down` left running (e.g. it failed): stop it directly, wherever stack put it.
            MotoServer(local_dir, sqs_port).stop()
            local = LocalStackSettings(local_dir=local_dir, pg_port=pg_port, sqs_port=sqs_port)
            cluster = LocalStack(local, SqsSettings(None)).cluster()
            if cluster.initialized():
                cluster.stop("immediate")
            shutil.rmtree(cluster.root, ignore_errors=True)
            shutil.rmtree(local_dir, ignore_errors=True)


def eval_env(env: dict[str, str]) -> dict[str, str]:
    """What `eval "$(python -m ingest stack env)"` leaves in a shell."""
    script = 'eval "$("$PYTHON" -m ingest stack env)" && for n in "$@"; do printf "%s\\0" "${!n}"; done'
    out = subprocess.run(
        ["bash", "-c", script, "bash", *ENV_NAMES],
        cwd=REPO_ROOT,
        env={**env, "PYTHON": sys.executable},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(zip(ENV_NAMES, out.stdout.split("\0")[: len(ENV_NAMES)], strict=True))


def test_stack_up_env_down(local_stack_env):
    env, local_dir, pg_port, sqs_port = local_stack_env

    code, _, stderr = run_ingest("stack", "up", env=env)
    assert code == 0, stderr
    assert f"postgres: started on 127.0.0.1:{pg_port}" in stderr
    assert "database created" in stderr
    assert f"queue {config.QUEUE_NAME} created" in stderr
    assert "stack: recovery: started" in stderr
    assert port_open(pg_port) and port_open(sqs_port)
    keys_file = local_dir / "keys.env"
    assert keys_file.stat().st_mode & 0o777 == 0o600

    code, _, stderr = run_ingest("stack", "up", env=env)
    assert code == 0, stderr
    assert "postgres: running" in stderr and "database created" not in stderr
    assert "moto running" in stderr and f"queue {config.QUEUE_NAME} exists" in stderr

    values = eval_env(env)
    assert values["SQS_ENDPOINT_URL"] == f"http://127.0.0.1:{sqs_port}"
    # No key in the shell it prepares: the commands that hold keys read them from the file.
    assert [values[name] for name in (*config.KEY_ENVS, "PGOPTIONS")] == ["", "", ""]
    assert values["LOGINVAULT_KEYS_FILE"] == str(keys_file)
    secret = {k: v for k, _, v in (line.partition("=") for line in keys_file.read_text().splitlines())}
    assert all(len(secret[name]) == 64 for name in config.KEY_ENVS)
    assert not any(secret[name] in value for name in config.KEY_ENVS for value in values.values())

    # PG_DSN works and reaches a bootstrapped database.
    assert f":{pg_port}/{config.DATABASE_NAME}" in values["PG_DSN"]
    assert query(values["PG_DSN"], "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'") == [("pgcrypto",)]
    roles = {r[0] for r in query(values["PG_DSN"], "SELECT rolname FROM pg_roles WHERE rolname LIKE 'loginvault\\_%'")}
    assert ROLES <= roles
    assert query(values["PG_DSN"], "SELECT to_regclass('raw.login_events') IS NOT NULL") == [(True,)]
    # Each workload's DSN is a login of its own: no superuser, a member of its role only; its
    # password is in the keys file, not in the admin's.
    for role, workload in config.WORKLOADS.items():
        dsn = values[workload.dsn_env]
        assert f"{workload.local_login}:" in dsn and values["PG_DSN"].split("@")[0] not in dsn
        ((login, superuser, groups),) = query(
            dsn,
            "SELECT session_user, rolsuper, ARRAY(SELECT g.rolname::text FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = session_user",
        )
        assert (login, superuser, groups) == (workload.local_login, False, [role])
        assert psycopg.conninfo.conninfo_to_dict(dsn)["password"] in keys_file.read_text()

    # SQS_QUEUE_URL works: the queue redrives to its DLQ after 5 receives.
    client = boto3.client(
        "sqs",
        endpoint_url=values["SQS_ENDPOINT_URL"],
        region_name=values["AWS_REGION"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    attrs = client.get_queue_attributes(QueueUrl=values["SQS_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == config.DLQ_MAX_RECEIVE_COUNT
    assert redrive["deadLetterTargetArn"].endswith(f":{config.dlq_name(config.QUEUE_NAME)}")
    assert int(attrs["ApproximateNumberOfMessages"]) == 0

    # The queue exists already: --seed-if-new sends nothing.
    code, _, stderr = run_ingest("stack", "up", "--seed-if-new", "5", env=env)
    assert code == 0, stderr
    assert "sample events sent" not in stderr
    attrs = client.get_queue_attributes(QueueUrl=values["SQS_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) == 0

    code, stdout, _ = run_ingest("stack", "status", env=env)
    assert code == 0 and stdout.splitlines() == ["postgres: up", "sqs: up", "recovery: up"]
    # The recovery service runs with its own login and the keys from the keys file, no one else's.
    service_env = Path(f"/proc/{(local_dir / 'recovery.pid').read_text().strip()}/environ").read_bytes().split(b"\0")
    assert f"LOGINVAULT_KEYS_FILE={keys_file}".encode() in service_env
    assert not any(line.startswith((b"LOGINVAULT_HMAC_KEY=", b"PGOPTIONS=")) for line in service_env)

    code, _, stderr = run_ingest("stack", "down", env=env)
    assert code == 0, stderr
    assert not port_open(pg_port)
    assert not port_open(sqs_port)
    code, stdout, _ = run_ingest("stack", "status", env=env)
    assert code == 3 and stdout.splitlines() == ["postgres: down", "sqs: down", "recovery: down"]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(values["PG_DSN"], connect_timeout=3).close()


@pytest.mark.parametrize("local_stack_env", [0o700], indirect=True, ids=["local-dir-0700"])
def test_stack_up_seeds_a_new_queue_and_ingest_drains_it(local_stack_env):
    """Also: a LOGINVAULT_LOCAL_DIR the postgres OS user cannot enter (a fresh mktemp -d) still works."""
    env, local_dir, _, _ = local_stack_env
    code, _, stderr = run_ingest("stack", "up", "--seed-if-new", "5", env=env)
    assert code == 0, stderr
    assert "5 sample events sent to the new queue" in stderr
    if os.geteuid() == 0:
        assert "(/tmp/loginvault-pg-" in stderr  # the cluster moved out of the unreachable dir
        assert not (local_dir / "pg").exists()

    values = eval_env(env)
    run_env = {**env, **values, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    code, _, stderr = run_ingest("run", "--wait-time", "1", env=run_env)
    assert code == 0, stderr
    assert "received 5, landed 5, deleted 5" in stderr
    assert query(values["PG_DSN"], "SELECT count(*) FROM raw.login_events") == [(5,)]


def test_stack_up_starts_nothing_for_user_settings(pg_cluster, sqs_queue, local_stack_env):
    """A user-set PG_DSN and SQS_QUEUE_URL win: nothing local starts, their (empty) database is
    bootstrapped: migrated to the head version."""
    env, local_dir, pg_port, sqs_port = local_stack_env
    name = f"t_{uuid.uuid4().hex}"
    ensure_database(pg_cluster.dsn("postgres"), name)
    pg_dsn = pg_cluster.dsn(name)
    env = {
        **env,
        "PG_DSN": pg_dsn,
        "SQS_QUEUE_URL": sqs_queue.url,
        "SQS_ENDPOINT_URL": sqs_queue.endpoint_url,
        "AWS_REGION": REGION,
    }
    try:
        code, _, stderr = run_ingest("stack", "up", "--seed-if-new", "5", env=env)
        assert code == 0, stderr
        assert "postgres" not in stderr and "moto" not in stderr
        assert not port_open(pg_port) and not port_open(sqs_port)
        assert not (local_dir / "pg").exists()
        assert query(pg_dsn, "SELECT to_regclass('raw.login_events') IS NOT NULL") == [(True,)]
        assert query(pg_dsn, "SELECT version_num FROM loginvault.alembic_version") == [(migrate.head_revision(),)]
        assert sqs_queue.depth() == (0, 0)
        values = eval_env(env)
        assert values["PG_DSN"] == pg_dsn and values["SQS_QUEUE_URL"] == sqs_queue.url
    finally:
        drop_test_database(pg_cluster, name)
