"""Unit tests of the local stack's environment: generated secrets, and user settings winning over local ones."""

from __future__ import annotations

import re
import stat

import pytest

from ingest import config, settings
from ingest.local.network import HOST
from ingest.local.stack import LocalStack
from ingest.settings import LocalStackSettings, SqsSettings
from ingest.vault import keys

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def local_dir(tmp_path):
    return tmp_path / "local"


@pytest.fixture
def stack(local_dir):
    """A local stack in a tmp dir; the user's own settings are the process's environment."""
    return LocalStack(LocalStackSettings(local_dir=local_dir), settings.load(SqsSettings, require=False))


def test_keys_file_created_0600_and_reused(stack, local_dir):
    assert not (local_dir / "keys.env").exists()
    first = stack.env()
    keys_file = local_dir / "keys.env"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    # The keys stay in the file: the environment names the file, and holds no key.
    assert first[keys.KEYS_FILE_ENV] == str(keys_file)
    secret = stack.keys.read()
    for name in config.KEY_ENVS:
        assert HEX64.fullmatch(secret[name]), name
        assert name not in first and not any(secret[name] in value for value in first.values())
    assert "PGOPTIONS" not in first
    assert secret[config.HMAC_KEY_ENV] != secret[config.ENCRYPTION_KEY_ENV]
    password = stack.keys.read()["LOGINVAULT_LOCAL_PG_PASSWORD"]
    assert f":{password}@" in first["PG_DSN"]

    second = stack.env()
    assert second == first
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_missing_secret_is_added_others_kept(stack, local_dir):
    first = stack.keys.read()
    keys_file = local_dir / "keys.env"
    kept = [line for line in keys_file.read_text().splitlines() if not line.startswith(config.ENCRYPTION_KEY_ENV)]
    keys_file.write_text("\n".join(kept) + "\n")
    second = stack.keys.read()
    assert second[config.HMAC_KEY_ENV] == first[config.HMAC_KEY_ENV]
    assert HEX64.fullmatch(second[config.ENCRYPTION_KEY_ENV])
    assert stack.keys.read() == second


def test_local_defaults_point_at_the_local_stack(stack, local_dir):
    values = stack.env()
    assert values["SQS_ENDPOINT_URL"] == f"http://{HOST}:{stack.local.sqs_port}"
    assert values["SQS_QUEUE_URL"].endswith(f"/{config.QUEUE_NAME}")
    assert values["SQS_QUEUE_URL"].startswith(values["SQS_ENDPOINT_URL"])
    assert f"@{HOST}:{stack.local.pg_port}/{config.DATABASE_NAME}" in values["PG_DSN"]
    assert not stack.user_configured("PG_DSN")


def test_user_pg_dsn_wins(stack, local_dir, monkeypatch):
    mine = "postgresql://me:pw@db.example.com:5432/analytics"
    monkeypatch.setenv("PG_DSN", mine)
    values = stack.env()
    assert values["PG_DSN"] == mine
    assert stack.user_configured("PG_DSN")
    # The queue side stays local.
    assert values["SQS_ENDPOINT_URL"] == f"http://{HOST}:{stack.local.sqs_port}"


def test_user_queue_wins_and_drops_moto_endpoint_and_credentials(stack, local_dir, monkeypatch):
    mine = "https://sqs.eu-west-1.amazonaws.com/123456789012/prod-logins"
    monkeypatch.setenv("SQS_QUEUE_URL", mine)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    values = stack.env()
    assert values["SQS_QUEUE_URL"] == mine
    for name in ("SQS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name not in values, name
    assert stack.user_configured("SQS_QUEUE_URL")


def test_user_endpoint_wins_and_a_user_key_is_neither_exported_nor_written(stack, local_dir, monkeypatch):
    monkeypatch.setenv("SQS_QUEUE_URL", "http://localhost:4999/000000000000/q")
    monkeypatch.setenv("SQS_ENDPOINT_URL", "http://localhost:4999")
    monkeypatch.setenv(config.HMAC_KEY_ENV, "k" * 40)
    values = stack.env()
    assert values["SQS_ENDPOINT_URL"] == "http://localhost:4999"
    assert config.HMAC_KEY_ENV not in values
    # The generated key is still what the file holds: a user setting never rewrites it.
    assert stack.keys.read()[config.HMAC_KEY_ENV] != "k" * 40
    # A command that uses keys takes the environment's first, the file's otherwise.
    assert keys.key_value(config.HMAC_KEY_ENV) == "k" * 40
    monkeypatch.delenv(config.HMAC_KEY_ENV)
    monkeypatch.setenv(keys.KEYS_FILE_ENV, values[keys.KEYS_FILE_ENV])
    assert keys.key_value(config.HMAC_KEY_ENV) == stack.keys.read()[config.HMAC_KEY_ENV]


def test_setting_the_local_value_itself_is_not_user_configuration(stack, local_dir, monkeypatch):
    monkeypatch.setenv("PG_DSN", stack.env()["PG_DSN"])
    assert not stack.user_configured("PG_DSN")
