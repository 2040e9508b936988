"""`loginvault stack up|down|status|env|rotate-keys`: the local PostgreSQL + moto SQS stack."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ingest import settings
from ingest.cli.command import Command
from ingest.setting_values import argument_type, whole
from ingest.settings import CommonSettings, LocalStackSettings, SqsSettings

# `stack status` when a part is down: LSB's "program is not running".
NOT_RUNNING = 3


class StackCommand(Command):
    name = "stack"
    help = (
        "the local PostgreSQL + moto SQS + recovery service stack: up, down, status (exit 3 when a part is down),"
        ' env, rotate-keys; dbt ARGS: dbt as the transformer with the keys (what `dbt` runs after `eval "$(make -s env)"`)'
    )

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status", "env", "rotate-keys", "dbt"])
        _flags(parser)
        parser.add_argument("dbt_args", nargs=argparse.REMAINDER, help="with dbt: dbt's command and flags")

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local.stack import LocalStack

        stack = LocalStack(
            settings.load(LocalStackSettings), settings.load(SqsSettings, require=False), common.mart_schema
        )
        if args.action == "dbt":
            return run_dbt(stack, args.dbt_args)
        # After the action, argparse left its flags in dbt_args: parse them as the action's.
        _flags(argparse.ArgumentParser(prog=f"loginvault stack {args.action}")).parse_args(args.dbt_args, args)
        if args.action == "up":
            stack.up(seed_if_new=args.seed_if_new)
        elif args.action == "down":
            stack.down()
        elif args.action == "status":
            parts = stack.status()
            for part, up in parts.items():
                print(f"{part}: {'up' if up else 'down'}")
            return 0 if all(parts.values()) else NOT_RUNNING
        elif args.action == "env":
            for name, value in stack.env().items():
                print(f"export {name}={shlex.quote(value)}")
        elif args.action == "rotate-keys":
            from ingest.cli.keys import print_key_status
            from ingest.local import rotate_keys

            rotate_keys.rotate(stack)
            if stack.recovery().running():  # it holds the keys: it must hold the new ones
                restarted = stack.recovery().ensure_up({**os.environ, **stack.env()}, restart=True)
                print(f"stack: recovery: {restarted}", file=sys.stderr)
            print_key_status(common.mart_schema)
        return 0


def _flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--seed-if-new",
        type=argument_type(whole(0)),
        default=0,
        metavar="N",
        help="with up: send N sample events if the queue was just created",
    )
    return parser


def run_dbt(stack, dbt_args: list[str]) -> int:
    """dbt (the venv's) in place of this process, with the local stack's environment and the keys
    for it alone (`bin/dbt`, first on the PATH that `make -s env` sets, runs this)."""
    import os
    import sys
    from pathlib import Path

    from ingest.local.stack import dbt_env

    dbt = Path(sys.executable).parent / "dbt"
    os.execve(dbt, [str(dbt), *dbt_args], {**os.environ, **dbt_env(stack)})
