"""`loginvault`, the command line (`python -m ingest` is the same entry point): parse, load the
settings, call the command, report an error the user can fix in one line.

One module per command group, each command a class (command.py) whose `execute` imports the
module that does the work: stack.py, bootstrap.py, check.py, seed.py, run.py, dlq.py, transform.py,
recover.py (recover, audit, recovery), summary.py, keys.py, lifecycle.py (retention, raw, erase).
A group's actions (`keys status|rotate|retire`) are sub-parsers, each with only its own flags;
every flag is a setting of ingest/settings/, put on the parser by `settings.add_arguments`.
"""

from __future__ import annotations

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
from ingest.settings import CommandParser, CommonSettings

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


def build_parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description="loginvault: SQS login events → PostgreSQL, PII masked.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    settings.add_arguments(parser, CommonSettings)
    add_commands(parser, COMMANDS, "command")
    return parser


def add_commands(parser: CommandParser, commands: tuple[Command, ...], dest: str) -> None:
    """A sub-parser for each command (each action of a group), with the flags of its settings."""
    sub = parser.add_subparsers(dest=dest, required=True, metavar=dest.upper(), title=f"{dest}s")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=command.help, verbatim=command.verbatim)
        parser.children[command.name] = child
        if command.actions:
            child.grouping = True
            add_commands(child, command.actions, "action")
            continue
        child.leaf = True
        for cls in command.flags:
            settings.add_arguments(child, cls)
        child.set_defaults(handler=command)


def command_parser(*names: str) -> CommandParser:
    """The parser of `loginvault NAMES…` (e.g. "keys", "rotate"), for its help."""
    parser = build_parser()
    for name in names:
        parser = parser.children[name]
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = "text"
    try:
        common = settings.load(CommonSettings, args)
        log_format = common.log_format
        logs.configure(common.log_level, common.log_format)
        handler: Command = args.handler
        return handler.execute(args, common)
    except LoginvaultError as exc:
        logs.report_error(str(exc), log_format)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
