"""Unit tests of the names (config), the key checks (keys) and DSN handling (db)."""

from __future__ import annotations

import pytest

from ingest import LoginvaultError, config, db, settings
from ingest.settings import RunSettings, SettingError
from ingest.vault import keys


def test_check_key_missing_key_fails(monkeypatch):
    monkeypatch.delenv(config.HMAC_KEY_ENV, raising=False)
    with pytest.raises(LoginvaultError, match=f"{config.HMAC_KEY_ENV} is not set"):
        keys.check_key(config.HMAC_KEY_ENV)


def test_check_key_empty_key_counts_as_missing(monkeypatch):
    monkeypatch.setenv(config.HMAC_KEY_ENV, "   ")
    with pytest.raises(LoginvaultError, match="is not set"):
        keys.check_key(config.HMAC_KEY_ENV)


def test_check_key_short_key_fails(monkeypatch):
    monkeypatch.setenv(config.ENCRYPTION_KEY_ENV, "x" * (config.MIN_KEY_BYTES - 1))
    with pytest.raises(LoginvaultError, match="too short"):
        keys.check_key(config.ENCRYPTION_KEY_ENV)


def test_check_key_accepts_a_long_key(monkeypatch):
    key = "ab" * 32
    monkeypatch.setenv(config.HMAC_KEY_ENV, key)
    assert keys.check_key(config.HMAC_KEY_ENV) == key


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
    redacted = db.redact_dsn(dsn)
    assert "s3cr3t-pw" not in redacted
    assert "***" in redacted
    # The rest stays recognisable.
    assert "db" in redacted or "127.0.0.1" in redacted


def test_redact_dsn_leaves_password_free_dsns_alone():
    assert db.redact_dsn("postgresql://u@db:5432/x") == "postgresql://u@db:5432/x"


class _OneQuery:
    """A connection whose every query returns `row` (or none)."""

    def __init__(self, row):
        self.row = row
        self.executed = []

    def execute(self, query, params=None):
        self.executed.append((query, params))
        return self

    def fetchone(self):
        return self.row


def test_one_row_is_the_row_of_the_query():
    conn = _OneQuery((7, "x"))
    assert db.one_row(conn, "SELECT count(*), max(k) FROM t WHERE v = %s", ("secret",)) == (7, "x")
    assert conn.executed == [("SELECT count(*), max(k) FROM t WHERE v = %s", ("secret",))]


def test_one_row_refuses_a_query_that_returned_none_without_its_parameters():
    with pytest.raises(LoginvaultError, match="returned none") as raised:
        db.one_row(_OneQuery(None), "SELECT pii.take_answer(%s)", ("secret",))
    assert "secret" not in str(raised.value)


def test_role_dsn_is_the_workloads_own_login_never_the_admin(monkeypatch):
    monkeypatch.setenv("PG_DSN", "postgresql://admin:pw@db/x")
    monkeypatch.delenv("LOGINVAULT_LOADER_DSN", raising=False)
    with pytest.raises(
        LoginvaultError, match="LOGINVAULT_LOADER_DSN is not set: the ingest connects with a login of its own"
    ):
        db.role_dsn(config.LOADER_ROLE)
    monkeypatch.setenv("LOGINVAULT_LOADER_DSN", "postgresql://loader:pw@db/x")
    assert db.role_dsn(config.LOADER_ROLE) == "postgresql://loader:pw@db/x"


def test_every_workload_has_its_own_dsn_variable_and_login():
    envs = {w.dsn_env for w in config.WORKLOADS.values()}
    assert envs == {
        "LOGINVAULT_LOADER_DSN",
        "LOGINVAULT_TRANSFORMER_DSN",
        "LOGINVAULT_ANALYST_DSN",
        "LOGINVAULT_PII_ADMIN_DSN",
        "LOGINVAULT_AUDITOR_DSN",
        "LOGINVAULT_RECOVERY_SERVICE_DSN",
    }
    logins = [w.local_login for w in config.WORKLOADS.values()]
    assert len(set(logins)) == len(logins) and not set(logins) & set(config.WORKLOADS)


def test_a_whole_number_setting_rejects_garbage():
    with pytest.raises(SettingError, match="INGEST_BATCH_SIZE: expected a whole number"):
        settings.load(RunSettings, environ={"INGEST_BATCH_SIZE": "lots"})
    assert settings.load(RunSettings, environ={"INGEST_BATCH_SIZE": " 7 "}).batch_size == 7
