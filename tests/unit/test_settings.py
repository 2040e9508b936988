"""Unit: settings are read once, from a flag, else the environment, else the default, each value by
the same parser whatever its source; a bad one is one sentence naming the flag or the variable."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from ingest import LoginvaultError, config, settings
from ingest.cli import build_parser, command_parser
from ingest.settings import (
    CommonSettings,
    LocalStackSettings,
    RecoveryServiceSettings,
    RunSettings,
    SettingError,
    SqsSettings,
    TransformSettings,
)


def run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def load_run(*argv: str, **environ: str) -> RunSettings:
    return settings.load(RunSettings, run_args(*argv), environ)


def refused_flag(capsys, *argv: str) -> str:
    """The error line argparse printed for a command line it refused (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(list(argv))
    assert exit_.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    return line


def test_defaults_when_nothing_is_set():
    run = load_run()
    assert (run.batch_size, run.batch_seconds, run.receivers, run.loaders) == (1000, 1.0, 1, 2)
    assert (run.visibility_timeout, run.retry_budget_seconds) == (config.DEFAULT_VISIBILITY_TIMEOUT, 60.0)
    assert (run.metrics_port, run.metrics_host, run.loader_file_format) == (None, "0.0.0.0", "auto")
    assert run.wait_seconds == 3 and load_run("--follow").wait_seconds == 20
    common = settings.load(CommonSettings, build_parser().parse_args(["summary"]), {})
    assert (common.log_level, common.log_format, common.mart_schema) == ("INFO", "text", "public")


def test_a_flag_beats_the_environment_which_beats_the_default():
    assert load_run(INGEST_BATCH_SIZE="50").batch_size == 50
    assert load_run("--batch-size", "7", INGEST_BATCH_SIZE="50").batch_size == 7
    assert load_run(INGEST_BATCH_SIZE="   ").batch_size == 1000  # blank is unset


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("INGEST_BATCH_SIZE", "-3", "INGEST_BATCH_SIZE: expected a whole number of at least 1, got -3"),
        ("INGEST_BATCH_SIZE", "abc", "INGEST_BATCH_SIZE: expected a whole number, got 'abc'"),
        ("INGEST_WORKERS", "0", "INGEST_WORKERS: expected a whole number of at least 1, got 0"),
        ("INGEST_RECEIVERS", "0", "INGEST_RECEIVERS: expected a whole number of at least 1, got 0"),
        ("INGEST_BATCH_SECONDS", "-1", "INGEST_BATCH_SECONDS: expected a number of seconds at least 0, got -1"),
        ("INGEST_BATCH_SECONDS", "inf", "INGEST_BATCH_SECONDS: expected a number of seconds at least 0, got inf"),
        ("INGEST_RETRY_BUDGET", "soon", "INGEST_RETRY_BUDGET: expected a number of seconds, got 'soon'"),
        ("INGEST_LOADER_FILE_FORMAT", "jsonl", "INGEST_LOADER_FILE_FORMAT: expected one of auto, parquet, csv"),
        ("INGEST_METRICS_PORT", "99999", "INGEST_METRICS_PORT: expected a whole number from 0 to 65535, got 99999"),
        ("SQS_VISIBILITY_TIMEOUT", "0", "SQS_VISIBILITY_TIMEOUT: expected a whole number from 1 to 43200, got 0"),
    ],
)
def test_a_bad_variable_of_run_is_one_sentence_naming_it(variable, value, expected):
    with pytest.raises(SettingError) as refused:
        load_run(**{variable: value})
    assert str(refused.value).startswith(expected)
    assert refused.value.exit_code == 2


@pytest.mark.parametrize(
    ("cls", "variable", "value", "expected"),
    [
        (CommonSettings, "LOGINVAULT_LOG_LEVEL", "VERBOSE", "expected one of DEBUG, INFO, WARNING, ERROR"),
        (CommonSettings, "LOGINVAULT_LOG_FORMAT", "xml", "expected one of text, json"),
        (CommonSettings, "LOGINVAULT_MART_SCHEMA", "public; drop", "expected a lower-case SQL name"),
        (SqsSettings, "AWS_RETRY_MODE", "bogus", "expected one of standard, adaptive, legacy"),
        (SqsSettings, "SQS_ENDPOINT_URL", "localhost:4566", "expected an http:// or https:// URL"),
        (LocalStackSettings, "LOGINVAULT_PG_PORT", "0", "expected a whole number from 1 to 65535"),
        (TransformSettings, "TRANSFORM_METRICS_PORT", "http", "expected a whole number"),
    ],
)
def test_a_bad_variable_is_one_sentence_naming_it(cls, variable, value, expected):
    environ = {"SQS_QUEUE_URL": "http://127.0.0.1:4566/1/q", variable: value}
    with pytest.raises(SettingError, match=f"^{variable}: {expected}"):
        settings.load(cls, None, environ)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--batch-seconds", "-1"], "argument --batch-seconds: expected a number of seconds at least 0, got -1"),
        (["run", "--retry-budget", "-1"], "argument --retry-budget: expected a number of seconds at least 0, got -1"),
        (["run", "--metrics-port", "99999"], "argument --metrics-port: expected a whole number from 0 to 65535"),
        (["transform", "--metrics-port", "99999", "build"], "argument --metrics-port: expected a whole number from 0"),
        (["run", "--batch-size", "-3"], "argument --batch-size: expected a whole number of at least 1, got -3"),
        (["run", "--workers", "0"], "argument --workers: expected a whole number of at least 1, got 0"),
        (["--log-level", "VERBOSE", "run"], "argument --log-level: expected one of DEBUG, INFO, WARNING, ERROR"),
        (["--log-format", "xml", "run"], "argument --log-format: expected one of text, json, got 'xml'"),
    ],
)
def test_a_bad_flag_is_refused_by_the_same_parser_naming_the_flag(capsys, argv, expected):
    assert expected in refused_flag(capsys, *argv)


def test_log_levels_in_any_case():
    for given in ("debug", "Debug", "DEBUG"):
        args = build_parser().parse_args(["--log-level", given, "summary"])
        assert settings.load(CommonSettings, args, {}).log_level == "DEBUG"
    assert settings.load(CommonSettings, None, {"LOGINVAULT_LOG_LEVEL": "warning"}).log_level == "WARNING"


def test_receivers_is_the_name_workers_the_older_one():
    assert load_run("--receivers", "3").receivers == 3
    assert load_run("--workers", "4").receivers == 4
    assert load_run(INGEST_WORKERS="2").receivers == 2
    assert load_run(INGEST_RECEIVERS="5", INGEST_WORKERS="2").receivers == 5
    help_text = command_parser("run").format_help()
    assert "--receivers N" in help_text and "--workers" not in help_text
    assert "(default 1, env INGEST_RECEIVERS)" in help_text


def test_metrics_port_zero_is_off():
    assert load_run("--metrics-port", "0").metrics_port is None
    assert load_run(INGEST_METRICS_PORT="9102").metrics_port == 9102


def test_a_metrics_host_without_a_port_is_refused_not_ignored():
    """From a flag or a variable, for the ingest and the recovery service; with a port from
    either source it is taken."""
    for given in ({"argv": ("--metrics-host", "127.0.0.1")}, {"INGEST_METRICS_HOST": "127.0.0.1"}):
        argv = given.pop("argv", ())
        with pytest.raises(SettingError, match="--metrics-host / INGEST_METRICS_HOST 127.0.0.1 is set, but no"):
            load_run(*argv, **given)
    assert load_run("--metrics-host", "127.0.0.1", INGEST_METRICS_PORT="9102").metrics_host == "127.0.0.1"
    assert load_run(INGEST_METRICS_HOST="127.0.0.1", INGEST_METRICS_PORT="9102").metrics_port == 9102
    serve = build_parser().parse_args(["recovery", "serve", "--metrics-host", "127.0.0.1"])
    with pytest.raises(SettingError, match="RECOVERY_METRICS_HOST 127.0.0.1 is set, but no --metrics-port"):
        settings.load(RecoveryServiceSettings, serve, {})
    assert settings.load(RecoveryServiceSettings, serve, {"RECOVERY_METRICS_PORT": "9103"}).metrics_port == 9103


def test_help_says_each_default_and_variable_written_once():
    help_text = command_parser("run").format_help()
    for name, (default, source) in settings.sources(RunSettings).items():
        if source.flag and source.env and not isinstance(default, bool):
            shown = source.default_text or (f"{default:g}" if isinstance(default, float) else str(default))
            assert f"default {shown}, env {source.env[0]}" in " ".join(help_text.split()), name


def test_a_required_setting_left_unset_is_exit_1_naming_it():
    with pytest.raises(LoginvaultError, match="^SQS_QUEUE_URL is not set") as missing:
        settings.load(SqsSettings, None, {})
    assert missing.value.exit_code == 1 and not isinstance(missing.value, SettingError)
    assert settings.load(SqsSettings, None, {}, require=False).region == "us-east-1"
    assert settings.load(SqsSettings, None, {"AWS_DEFAULT_REGION": "eu-west-1"}, require=False).region == "eu-west-1"


def test_every_variable_a_setting_reads_is_in_the_readme():
    readme = (config.REPO_ROOT / "README.md").read_text()
    missing = [name for name in settings.variables() if f"`{name}`" not in readme]
    assert not missing, f"README.md's table of environment variables lacks {missing}"


def module_level_reads(path: Path) -> list[str]:
    """Module-level code (class bodies included: they run at import) that reads the environment."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return  # runs when called, not at import
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            found.append(f"{path.name}:{node.lineno}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "env",
            "require",
            "load",
        ):
            found.append(f"{path.name}:{node.lineno}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_nothing_reads_the_environment_at_import_time():
    modules = sorted((config.REPO_ROOT / "ingest").rglob("*.py"))
    assert len(modules) > 30
    reads = [read for path in modules if path.name != "__main__.py" for read in module_level_reads(path)]
    assert not reads, f"read at import: {reads}"
