"""Unit: the shell that `eval "$(make -s env)"` sets up: PATH with the checkout's bin/ and the venv's
first (once, however often it is evaluated), dbt's directories, and the keys for `dbt` alone."""

from __future__ import annotations

import sys
from pathlib import Path

from ingest import config, settings
from ingest.local.stack import SHELL_BIN, LocalStack, dbt_env, shell_values
from ingest.settings import LocalStackSettings, SqsSettings
from ingest.vault import keys


def test_path_puts_bin_and_the_venv_first_once():
    venv_bin = str(Path(sys.executable).parent)
    once = shell_values({"PATH": "/usr/bin:/bin"})
    assert once["PATH"].split(":") == [str(SHELL_BIN), venv_bin, "/usr/bin", "/bin"]
    twice = shell_values({"PATH": once["PATH"]})
    assert twice["PATH"] == once["PATH"]
    assert once["DBT_PROJECT_DIR"] == once["DBT_PROFILES_DIR"] == str(config.DBT_PROJECT_DIR)


def test_the_users_dbt_directories_win():
    values = shell_values({"PATH": "/bin", "DBT_PROFILES_DIR": "/home/me/.dbt"})
    assert values["DBT_PROFILES_DIR"] == "/home/me/.dbt"
    assert values["DBT_PROJECT_DIR"] == str(config.DBT_PROJECT_DIR)


def test_dbt_gets_the_keys_of_the_file_unless_set(tmp_path, monkeypatch):
    for name in config.KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    stack = LocalStack(LocalStackSettings(local_dir=tmp_path / "local"), settings.load(SqsSettings, require=False))
    secret = stack.keys.read()
    assert dbt_env(stack)["PGOPTIONS"] == keys.key_options({n: secret[n] for n in config.KEY_ENVS})
    mine = "m" * 64
    monkeypatch.setenv(config.HMAC_KEY_ENV, mine)
    expected = {config.HMAC_KEY_ENV: mine, config.ENCRYPTION_KEY_ENV: secret[config.ENCRYPTION_KEY_ENV]}
    assert dbt_env(stack)["PGOPTIONS"] == keys.key_options(expected)
