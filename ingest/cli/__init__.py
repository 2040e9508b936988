"""`loginvault`, the command line (`python -m ingest` is the same entry point): parse, load the
settings, call the command, report an error the user can fix in one line.

One module per command group, each command a class (command.py) whose `execute` imports the
module that does the work: stack.py, bootstrap.py, check.py, seed.py, run.py, dlq.py, transform.py,
recover.py (recover, audit, recovery), summary.py, keys.py, lifecycle.py (retention, raw, erase).
"""

from __future__ import annotations

import argparse
import sys

from ingest import LoginvaultError, settings
from ingest.cli import logs
from ingest.cli.bootstrap import BootstrapCommand
from ingest.cli.check import CheckCommand
from ingest.cli.command import Command
from ingest.cli.dlq import DlqCommand
from ingest.cli.keys import KeysCommand
from ingest.cli.lifecycle import EraseCommand, RawCommand, RetentionCommand
from ingest.cli.recover import AuditCommand, RecoverCommand, RecoveryCommand
from ingest.cli.run import RunCommand
from ingest.cli.seed import SeedCommand
from ingest.cli.stack import StackCommand
from ingest.cli.summary import SummaryCommand
from ingest.cli.transform import TransformCommand
from ingest.settings import CommonSettings

PROG = "loginvault"
COMMANDS: tuple[Command, ...] = (
    StackCommand(),
    BootstrapCommand(),
    CheckCommand(),
    SeedCommand(),
    RunCommand(),
    DlqCommand(),
    RecoverCommand(),
    KeysCommand(),
    RetentionCommand(),
    RawCommand(),
    EraseCommand(),
    AuditCommand(),
    RecoveryCommand(),
    SummaryCommand(),
    TransformCommand(),
)


def version() -> str:
    """The installed package's version (pyproject.toml's, through the package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("loginvault")
    except PackageNotFoundError:
        return "unknown (not installed: `make venv`, or `pip install .`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="loginvault: SQS login events → PostgreSQL, PII masked.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    settings.add_arguments(parser, CommonSettings)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure_parser(command_parser)
        command_parser.set_defaults(handler=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = "text"
    try:
        common = settings.load(CommonSettings, args)
        log_format = common.log_format
        logs.configure(common.log_level, common.log_format)
        return args.handler.execute(args, common)
    except LoginvaultError as exc:
        logs.report_error(str(exc), log_format)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
