"""What every test gets: the markers, a per-run temporary directory, and an environment with
nothing of the developer's shell in it (tests/hermetic.py).

tests/unit/ needs no service and runs in seconds; tests/integration/ (its own conftest.py)
starts a throwaway PostgreSQL cluster and moto server when a test asks for them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from hermetic import FOREIGN_ENV_PREFIXES, REGION


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the throwaway PostgreSQL cluster and/or moto server")
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds (subprocesses, retries, a cluster of its own)"
    )
    if config.option.basetemp is None:
        # tmp_path dirs go to a per-run dir removed at exit, instead of pytest's default of keeping
        # the last runs in /tmp/pytest-of-<user>. Pass --basetemp to keep them for a post-mortem.
        basetemp = tempfile.mkdtemp(prefix="loginvault-pytest-", dir="/tmp")
        config.option.basetemp = basetemp
        config.add_cleanup(lambda: shutil.rmtree(basetemp, ignore_errors=True))


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PG_DSN, SQS_*, keys or stack settings of the developer's shell; moto's fake AWS credentials."""
    for name in list(os.environ):
        if name.startswith(FOREIGN_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", REGION)
