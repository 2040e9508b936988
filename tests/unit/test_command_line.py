"""Unit: `loginvault` as a user meets it without any service: its name, its version, one entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from ingest.cli import build_parser, main

LOGINVAULT = Path(sys.executable).parent / "loginvault"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without loginvault's settings, plus `extra`."""
    prefixes = ("PG", "SQS_", "AWS_", "LOGINVAULT_", "INGEST_", "TRANSFORM_", "DBT_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(prefixes)}, **extra}


def test_the_command_is_loginvault_and_says_its_version(capsys):
    assert build_parser().prog == "loginvault"
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"loginvault {version('loginvault')}"


@pytest.mark.parametrize("entry", ["loginvault", "python -m ingest"])
def test_the_console_script_and_python_m_ingest_are_one_entry_point(entry):
    argv = [str(LOGINVAULT)] if entry == "loginvault" else [sys.executable, "-m", "ingest"]
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: loginvault ")
    refused = subprocess.run([*argv, "run", "--batch-size", "0"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith("loginvault run: error: argument --batch-size:")
