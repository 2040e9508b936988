"""Unit: `loginvault` as a user meets it without any service: its name, its version, the one-line
errors of the transform service's metrics port, and `make help`."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hermetic import base_env
from ingest import config
from ingest.cli import build_parser, main
from ingest.local.network import HOST, free_port

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


def transform_service(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`loginvault transform --every 60 …` against no database (it must fail before it needs one)."""
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    dsn = f"postgresql://loginvault_dbt:pw@{HOST}:{free_port()}/loginvault"
    env = clean_env(LOGINVAULT_TRANSFORMER_DSN=dsn, **keys, **env)
    command = [str(LOGINVAULT), "transform", "--every", "60", *args, "build"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def test_a_database_that_does_not_answer_is_one_sentence_with_a_hint():
    """`make stack-down; make transform`: the cause and what to do, not dbt's "Database Error"."""
    keys = {name: secrets.token_hex(32) for name in config.KEY_ENVS}
    dsn = f"postgresql://loginvault_dbt:s3cret-pw@{HOST}:{free_port()}/loginvault"
    env = clean_env(LOGINVAULT_TRANSFORMER_DSN=dsn, **keys)
    out = subprocess.run([str(LOGINVAULT), "transform", "build"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: cannot connect to PostgreSQL at postgresql://loginvault_dbt:***@"), line
    assert "Connection refused" in line and "`make stack-up` starts the local one" in line
    assert "s3cret-pw" not in out.stderr


def test_the_transform_services_metrics_port_in_use_is_one_sentence():
    port = free_port()
    with socket.socket() as taken:
        taken.bind((HOST, port))
        taken.listen()
        out = transform_service("--metrics-port", str(port), "--metrics-host", HOST)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: cannot serve metrics on {HOST}:{port}: Address already in use (choose another --metrics-port or"
        " --metrics-host)"
    ]


def test_the_transform_services_metrics_port_out_of_range_is_refused():
    out = transform_service("--metrics-port", "99999")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --metrics-port: expected a whole number from 0 to 65535, got 99999" in out.stderr
    by_env = transform_service(TRANSFORM_METRICS_PORT="99999")
    assert by_env.returncode == 2 and "Traceback" not in by_env.stderr
    assert by_env.stderr.strip() == "error: TRANSFORM_METRICS_PORT: expected a whole number from 0 to 65535, got 99999"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_is_plain_text():
    out = subprocess.run(["make", "-s", "help"], cwd=config.REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:1] == ["test-unit"] for line in lines)
    # No make syntax left unexpanded: a shell's $( … ) stays, make's $$ and $(VARIABLE) do not.
    assert "$$" not in out.stdout and not re.search(r"\$\([A-Z_]+\)", out.stdout), out.stdout
    assert 'eval "$(make -s env)"' in out.stdout
    assert "http://127.0.0.1:8580/" in out.stdout


# Where the command is named for users and deployments: all say `loginvault`.
NAMING = (
    "Makefile",
    "Dockerfile",
    "docker-compose.yml",
    ".github/workflows/ci.yml",
    "deploy",
    "docs",
    "README.md",
)


def test_every_document_and_deployment_names_the_command_loginvault():
    paths = []
    for name in NAMING:
        path = config.REPO_ROOT / name
        paths += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    said = [f"{p.relative_to(config.REPO_ROOT)}:{n}" for p in paths for n, line in enumerate(
        p.read_text(errors="replace").splitlines(), 1) if "python -m ingest" in line or '"-m", "ingest"' in line]  # fmt: skip
    # One sentence, in the README, says that `python -m ingest` is the same entry point.
    assert len(said) <= 1 and all(place.startswith("README.md:") for place in said), said


def run_loginvault(capsys, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of `loginvault ARGS`, in this process: what the console script runs
    (`raise SystemExit(main())`), without a new interpreter per case."""
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--max-messages", "0"),
        ("run", "--batch-size", "-3"),
        ("run", "--wait-time", "21"),
        ("run", "--retry-budget", "soon"),
        ("seed", "--count", "5", "--file", "x.json"),
        ("frobnicate",),
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_exit_2(capsys, args):
    code, stderr = run_loginvault(capsys, *args)
    assert code == 2
    assert "Traceback" not in stderr
    assert "error: " in stderr.splitlines()[-1]


def test_metrics_port_without_every_is_refused(capsys, monkeypatch):
    for name, value in base_env().items():
        monkeypatch.setenv(name, value)
    code, stderr = run_loginvault(capsys, "transform", "--metrics-port", "9103", "build")
    assert code == 2
    assert stderr.splitlines()[-1] == "loginvault transform: error: argument --metrics-port: needs argument --every"
