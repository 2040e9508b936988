"""Unit tests of config: key checks, DSN handling."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import psycopg.conninfo
import pytest

from ingest import LoginvaultError, config


def test_check_key_missing_key_fails(monkeypatch):
    monkeypatch.delenv(config.HMAC_KEY_ENV, raising=False)
    with pytest.raises(LoginvaultError, match=f"{config.HMAC_KEY_ENV} is not set"):
        config.check_key(config.HMAC_KEY_ENV)


def test_check_key_empty_key_counts_as_missing(monkeypatch):
    monkeypatch.setenv(config.HMAC_KEY_ENV, "   ")
    with pytest.raises(LoginvaultError, match="is not set"):
        config.check_key(config.HMAC_KEY_ENV)


def test_check_key_short_key_fails(monkeypatch):
    monkeypatch.setenv(config.ENCRYPTION_KEY_ENV, "x" * (config.MIN_KEY_BYTES - 1))
    with pytest.raises(LoginvaultError, match="too short"):
        config.check_key(config.ENCRYPTION_KEY_ENV)


def test_check_key_accepts_a_long_key(monkeypatch):
    key = "ab" * 32
    monkeypatch.setenv(config.HMAC_KEY_ENV, key)
    assert config.check_key(config.HMAC_KEY_ENV) == key


def test_dsn_with_role_adds_the_role_option():
    dsn = config.dsn_with_role("postgresql://u:pw@db:5432/loginvault", config.LOADER_ROLE)
    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    assert parsed["options"] == f"-crole={config.LOADER_ROLE}"
    assert (parsed["user"], parsed["password"], parsed["host"], parsed["port"], parsed["dbname"]) == (
        "u",
        "pw",
        "db",
        "5432",
        "loginvault",
    )


def test_dsn_with_role_keeps_query_params_and_options():
    dsn = config.dsn_with_role(
        "postgresql://u:pw@db/loginvault?sslmode=require&options=-c%20statement_timeout%3D5000&application_name=x",
        "r",
    )
    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    assert parsed["sslmode"] == "require"
    assert parsed["application_name"] == "x"
    assert parsed["options"] == "-c statement_timeout=5000 -crole=r"
    assert parse_qs(urlsplit(dsn).query)["options"] == ["-c statement_timeout=5000 -crole=r"]


@pytest.mark.parametrize("dsn", ["host=db user=u password=pw dbname=loginvault", "", "db:5432/loginvault"])
def test_dsn_with_role_rejects_non_urls(dsn):
    with pytest.raises(LoginvaultError, match="must be a URL"):
        config.dsn_with_role(dsn, "r")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://loginvault_admin:s3cr3t-pw@127.0.0.1:5432/loginvault",
        "postgresql://loginvault_admin:s3cr3t-pw@127.0.0.1:5432/loginvault?options=-c%20role%3Dx",
        "postgres://u:s3cr3t-pw@db/x",
        "host=db user=u password=s3cr3t-pw dbname=x",
    ],
)
def test_redact_dsn_hides_the_password(dsn):
    redacted = config.redact_dsn(dsn)
    assert "s3cr3t-pw" not in redacted
    assert "***" in redacted
    # The rest stays recognisable.
    assert "db" in redacted or "127.0.0.1" in redacted


def test_redact_dsn_leaves_password_free_dsns_alone():
    assert config.redact_dsn("postgresql://u@db:5432/x") == "postgresql://u@db:5432/x"


def test_role_dsn_prefers_a_role_specific_dsn(monkeypatch):
    monkeypatch.setenv("PG_DSN", "postgresql://admin:pw@db/x")
    assert "role=loginvault_loader" in psycopg.conninfo.conninfo_to_dict(config.role_dsn(config.LOADER_ROLE))["options"]
    monkeypatch.setenv("LOGINVAULT_LOADER_DSN", "postgresql://loader:pw@db/x")
    assert config.role_dsn(config.LOADER_ROLE) == "postgresql://loader:pw@db/x"


def test_env_int_rejects_garbage(monkeypatch):
    monkeypatch.setenv("INGEST_BATCH_SIZE", "lots")
    with pytest.raises(LoginvaultError, match="INGEST_BATCH_SIZE must be a whole number"):
        config.env_int("INGEST_BATCH_SIZE", 1)
    monkeypatch.setenv("INGEST_BATCH_SIZE", " 7 ")
    assert config.env_int("INGEST_BATCH_SIZE", 1) == 7
