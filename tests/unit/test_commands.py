"""Unit, the parser only: every command with actions has one sub-parser per action, each with only
its own flags; a flag that does not apply is argparse's error (exit 2, one `error:` line naming
the command), not ignored; a flag and its variable reach the same setting; every flag is
declared once, as a setting (ingest/settings/), and the README's command reference names it."""

from __future__ import annotations

import ast
import re

import pytest

from ingest import config, settings
from ingest.cli import build_parser, command_parser
from ingest.settings import (
    AuditSettings,
    DbtArgs,
    DlqRedriveSettings,
    KeyRotation,
    Lookup,
    RecoveryServiceSettings,
    RequestId,
    RequestSettings,
    RetentionSettings,
    SeedSettings,
    StackUpSettings,
    TransformSettings,
)

TOKEN = "ab" * 32
# Each group and its actions, as `loginvault GROUP --help` lists them.
GROUPS = {
    "stack": ("up", "down", "status", "env", "rotate-keys", "dbt"),
    "dlq": ("status", "redrive"),
    "recover": ("lookup", "pending", "approve", "reject", "answer"),
    "keys": ("status", "rotate", "retire"),
    "retention": ("apply",),
    "raw": ("partition",),
    "recovery": ("serve",),
}


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def refused(capsys, *argv: str) -> str:
    """The one `error:` line of a command line the parser refuses with exit 2."""
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("argv", "handler"),
    [
        (("stack", "up", "--seed-if-new", "5"), "up"),
        (("stack", "down"), "down"),
        (("stack", "status"), "status"),
        (("stack", "env"), "env"),
        (("stack", "rotate-keys"), "rotate-keys"),
        (("stack", "dbt", "run", "--select", "x"), "dbt"),
        (("dlq", "status"), "status"),
        (("dlq", "redrive", "--max-messages", "5"), "redrive"),
        (("recover", "lookup", "--token", TOKEN, "--reason", "r"), "lookup"),
        (("recover", "lookup", "--ip", "10.0.0.1", "--reason", "r", "--timeout", "3"), "lookup"),
        (("recover", "lookup", "--device-id", "d", "--reason", "r"), "lookup"),
        (("recover", "pending"), "pending"),
        (("recover", "approve", "7", "--reason", "ok"), "approve"),
        (("recover", "reject", "7", "--reason", "no"), "reject"),
        (("recover", "answer", "7", "--timeout", "2"), "answer"),
        (("keys", "status"), "status"),
        (("keys", "rotate", "hmac", "--batch", "7"), "rotate"),
        (("keys", "retire", "encryption"), "retire"),
        (("retention", "apply", "--days", "3", "--dry-run"), "apply"),
        (("raw", "partition"), "partition"),
        (("recovery", "serve", "--poll-seconds", "2"), "serve"),
        (("audit", "--since", "7d", "--format", "csv"), "audit"),
        (("erase", "--user-id", "u", "--reason", "r", "--dry-run"), "erase"),
        (("seed", "--count", "5", "--random-seed", "3"), "seed"),
        (("transform", "--every", "60", "--cycles", "2", "--metrics-port", "9103", "build"), "transform"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, tuple) else a,
)
def test_each_action_parses_to_its_own_command(argv, handler):
    assert parse(*argv).handler.name == handler


def test_each_action_reads_its_own_flags():
    assert settings.load(StackUpSettings, parse("stack", "up", "--seed-if-new", "5"), {}).seed_if_new == 5
    assert settings.load(DlqRedriveSettings, parse("dlq", "redrive", "--max-messages", "5"), {}).max_messages == 5
    rotation = settings.load(KeyRotation, parse("keys", "rotate", "encryption", "--batch", "7"), {})
    assert (rotation.kind, rotation.batch) == ("encryption", 7)
    assert settings.load(RequestId, parse("recover", "approve", "7", "--reason", "ok"), {}).request_id == 7
    asked = settings.load(Lookup, parse("recover", "lookup", "--device-id", "d", "--reason", "r"), {})
    assert (asked.token, asked.ip, asked.device_id) == (None, None, "d")
    seed = settings.load(SeedSettings, parse("seed", "--file", "~/events.json"), {})
    assert (seed.file.name, seed.file.is_absolute(), seed.random_seed) == ("events.json", True, 42)
    audit = settings.load(AuditSettings, parse("audit", "--format", "JSON"), {})
    assert (audit.since, audit.audit_format) == (None, "json")
    service = settings.load(TransformSettings, parse("transform", "--every", "60", "--cycles", "2"), {})
    assert (service.every, service.cycles) == (60.0, 2)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # The three: each was silently ignored.
        (
            ("transform", "--cycles", "3", "build"),
            "loginvault transform: error: argument --cycles: needs argument --every",
        ),
        (("run", "--cycles", "3"), "loginvault run: error: unrecognized arguments: --cycles 3"),
        (("dlq", "--max-messages", "5"), "loginvault dlq: error: unrecognized arguments: --max-messages"),
        (("dlq", "status", "--max-messages", "5"), "loginvault dlq status: error: unrecognized arguments: --max-mess"),
        (("keys", "status", "hmac"), "loginvault keys status: error: unrecognized arguments: hmac"),
        # And more of the same kind.
        (("transform", "--metrics-port", "9103", "build"), "transform: error: argument --metrics-port: needs argument"),
        (("transform", "--metrics-host", "0.0.0.0", "build"), "transform: error: argument --metrics-host: needs"),
        (("seed", "--file", "x.json", "--random-seed", "3"), "seed: error: argument --random-seed: not allowed with"),
        (
            ("seed", "--count", "3", "--file", "x.json"),
            "seed: error: argument --file: not allowed with argument --count",
        ),
        (("keys", "rotate"), "keys rotate: error: the following arguments are required: KIND"),
        (("keys", "rotate", "rsa"), "keys rotate: error: argument KIND: expected one of hmac, encryption, got 'rsa'"),
        (("keys", "retire", "hmac", "--batch", "5"), "keys retire: error: unrecognized arguments: --batch 5"),
        (("keys", "--batch", "5", "rotate", "hmac"), "keys: error: unrecognized arguments: --batch (a flag goes after"),
        (("stack", "down", "--seed-if-new", "5"), "stack down: error: unrecognized arguments: --seed-if-new 5"),
        (("stack", "--seed-if-new", "5", "up"), "stack: error: unrecognized arguments: --seed-if-new"),
        (("retention", "--days", "3", "apply"), "retention: error: unrecognized arguments: --days"),
        (("raw", "partition", "--dry-run"), "raw partition: error: unrecognized arguments: --dry-run"),
        (("recovery", "serve", "--timeout", "3"), "recovery serve: error: unrecognized arguments: --timeout 3"),
        (("recover", "--token", TOKEN, "--reason", "r"), "recover: error: unrecognized arguments: --token"),
        (
            ("recover", "lookup", "--reason", "r"),
            "recover lookup: error: one of the arguments --token --ip --device-id",
        ),
        (("recover", "lookup", "--token", TOKEN, "--ip", "1.2.3.4", "--reason", "r"), "argument --ip: not allowed"),
        (
            ("recover", "lookup", "--token", TOKEN),
            "recover lookup: error: the following arguments are required: --reason",
        ),
        (("recover", "pending", "3"), "recover pending: error: unrecognized arguments: 3"),
        (("recover", "pending", "--reason", "r"), "recover pending: error: unrecognized arguments: --reason r"),
        (("recover", "approve", "--reason", "r"), "recover approve: error: the following arguments are required: ID"),
        (("recover", "approve", "7", "--reason", "r", "--timeout", "3"), "recover approve: error: unrecognized"),
        (("recover", "answer", "7", "--reason", "r"), "recover answer: error: unrecognized arguments: --reason r"),
        (("recover", "answer", "0"), "recover answer: error: argument ID: expected a whole number of at least 1"),
        (("erase", "--user-id", "u"), "erase: error: the following arguments are required: --reason"),
        (("audit", "--since", "yesterday"), "audit: error: argument --since: expected e.g. 7d"),
        (("run", "--log-format", "json"), "loginvault run: error: unrecognized arguments: --log-format json"),
        (("keys",), "loginvault keys: error: the following arguments are required: ACTION"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, tuple) else None,
)
def test_a_flag_that_does_not_apply_is_an_error(capsys, argv, said):
    assert said in refused(capsys, *argv)


@pytest.mark.parametrize(
    ("cls", "argv", "variable", "value", "expected"),
    [
        (RequestSettings, ("recover", "lookup", "--token", TOKEN, "--reason", "r", "--timeout"), "LOGINVAULT_RECOVERY_TIMEOUT", "5", 5.0),
        (RequestSettings, ("erase", "--user-id", "u", "--reason", "r", "--timeout"), "LOGINVAULT_RECOVERY_TIMEOUT", "7", 7.0),
        (RetentionSettings, ("retention", "apply", "--days"), "LOGINVAULT_RAW_RETENTION_DAYS", "3", 3),
        (RecoveryServiceSettings, ("recovery", "serve", "--poll-seconds"), "LOGINVAULT_RECOVERY_POLL_SECONDS", "2", 2.0),
        (RecoveryServiceSettings, ("recovery", "serve", "--metrics-port"), "RECOVERY_METRICS_PORT", "9104", 9104),
        (TransformSettings, ("transform", "--test-scope"), "TRANSFORM_TEST_SCOPE", "incremental", "incremental"),
    ],
    ids=lambda a: a if isinstance(a, str) and a.isupper() else None,
)  # fmt: skip
def test_a_flag_and_its_variable_reach_the_same_setting(cls, argv, variable, value, expected):
    name = next(n for n, (_, source) in settings.sources(cls).items() if source.flag == argv[-1])
    by_flag = getattr(settings.load(cls, parse(*argv, value), {}), name)
    by_variable = getattr(settings.load(cls, parse(*argv[:-1]), {variable: value}), name)
    assert by_flag == by_variable == expected
    assert getattr(settings.load(cls, parse(*argv[:-1]), {}), name) != expected  # the default is another


def test_a_bad_variable_is_refused_as_the_same_flag_would_be(capsys):
    said = refused(capsys, "retention", "apply", "--days", "0")
    assert said.endswith("argument --days: expected a whole number of at least 1, got 0")
    with pytest.raises(settings.SettingError, match="^LOGINVAULT_RAW_RETENTION_DAYS: expected a whole number of at"):
        settings.load(RetentionSettings, parse("retention", "apply"), {"LOGINVAULT_RAW_RETENTION_DAYS": "0"})


@pytest.mark.parametrize("group", GROUPS)
def test_the_help_of_each_group_lists_its_actions(group):
    help_text = command_parser(group).format_help()
    assert help_text.startswith(f"usage: loginvault {group} [-h] ACTION ...")
    listed = re.findall(r"^    (\S+)", help_text.split("\nactions:\n")[1], re.M)
    assert tuple(listed) == GROUPS[group]
    assert set(command_parser(group).children) == set(GROUPS[group])


def test_every_argument_after_stack_dbt_is_dbts():
    for dbt_args in (["--version"], ["--help"], ["--log-level", "debug", "run"], ["run", "--select", "x"], []):
        args = parse("--log-level", "warning", "stack", "dbt", *dbt_args)
        assert settings.load(DbtArgs, args, {}).dbt_args == tuple(dbt_args)
        assert args.log_level == "WARNING"  # loginvault's own, before the command, unchanged


def cli_modules() -> list:
    return sorted((config.REPO_ROOT / "ingest" / "cli").glob("*.py"))


def test_no_command_declares_a_flag_of_its_own():
    """Flags come from ingest/settings/ through settings.add_arguments; the only add_argument
    call left in ingest/cli/ is --version's."""
    calls = []
    for path in cli_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                calls.append((path.name, ast.literal_eval(node.args[0])))
    assert calls == [("__init__.py", "--version")]


def leaves(parser=None, names=()):
    """(command words, parser) of every command and action."""
    parser = parser or build_parser()
    for name, child in parser.children.items():
        yield from leaves(child, (*names, name)) if child.children else [((*names, name), child)]


def test_the_readmes_command_reference_names_every_command_and_flag():
    readme = (config.REPO_ROOT / "README.md").read_text()
    reference = readme.split("## Command line: `loginvault …`")[1].split("\n## ")[0]
    table = {line.split(" | ")[0].strip("| `"): line for line in reference.splitlines() if line.startswith("| `")}
    found = list(leaves())
    assert len(found) == 27
    for words, parser in found:
        row = next((row for command, row in table.items() if command.split()[: len(words)] == list(words)), None)
        assert row is not None, f"the README's command reference has no row for `{' '.join(words)}`"
        for flag in parser.format_usage().split():
            flag = flag.strip("[](|")
            if flag.startswith("--"):
                assert f"`{flag}" in row, f"`loginvault {' '.join(words)}`: {flag} is not in its README row"
