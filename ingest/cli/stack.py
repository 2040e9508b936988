"""`loginvault stack up|down|status|env|rotate-keys|dbt`: the local PostgreSQL + moto SQS stack."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import TYPE_CHECKING

from ingest import settings
from ingest.cli.command import Command
from ingest.settings import CommonSettings, DbtArgs, LocalStackSettings, SqsSettings, StackUpSettings

if TYPE_CHECKING:
    from ingest.local.stack import LocalStack

# `stack status` when a part is down: LSB's "program is not running".
NOT_RUNNING = 3


class StackAction(Command):
    """An action on the local stack of this checkout (LocalStackSettings: where, which ports)."""

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local.stack import LocalStack

        stack = LocalStack(
            settings.load(LocalStackSettings), settings.load(SqsSettings, require=False), common.mart_schema
        )
        return self.act(stack, args, common)

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        raise NotImplementedError


class Up(StackAction):
    name = "up"
    help = "start PostgreSQL, moto and the recovery service; create the queue, the roles and the logins"
    flags = (StackUpSettings,)

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        stack.up(seed_if_new=settings.load(StackUpSettings, args).seed_if_new)
        return 0


class Down(StackAction):
    name = "down"
    help = "stop PostgreSQL, moto and the recovery service (the data in .local/ is kept)"

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        stack.down()
        return 0


class Status(StackAction):
    name = "status"
    help = "say whether each part is up (exit 3 when one is down)"

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        parts = stack.status()
        for part, up in parts.items():
            print(f"{part}: {'up' if up else 'down'}")
        return 0 if all(parts.values()) else NOT_RUNNING


class Env(StackAction):
    name = "env"
    help = 'print `export …` lines for the local stack: eval "$(make -s env)"'

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        for name, value in stack.env().items():
            print(f"export {name}={shlex.quote(value)}")
        return 0


class RotateKeys(StackAction):
    name = "rotate-keys"
    help = "new PII keys into .local/keys.env (the old ones kept as *_PREVIOUS), both rotated, the key status"

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.cli.keys import print_key_status
        from ingest.local import rotate_keys

        rotate_keys.rotate(stack)
        if stack.recovery().running():  # it holds the keys: it must hold the new ones
            restarted = stack.recovery().ensure_up({**os.environ, **stack.env()}, restart=True)
            print(f"stack: recovery: {restarted}", file=sys.stderr)
        print_key_status(common.mart_schema)
        return 0


class Dbt(StackAction):
    name = "dbt"
    help = (
        'dbt as the transformer with the keys: what `dbt` runs after `eval "$(make -s env)"` (every argument is dbt\'s)'
    )
    flags = (DbtArgs,)
    verbatim = "dbt_args"

    def act(self, stack: LocalStack, args: argparse.Namespace, common: CommonSettings) -> int:
        """dbt (the venv's) in place of this process, with the local stack's environment and the
        keys for it alone (`bin/dbt`, first on the PATH that `make -s env` sets, runs this)."""
        from pathlib import Path

        from ingest.local.stack import dbt_env

        dbt = Path(sys.executable).parent / "dbt"
        dbt_args = settings.load(DbtArgs, args).dbt_args
        os.execve(dbt, [str(dbt), *dbt_args], {**os.environ, **dbt_env(stack)})


class StackCommand(Command):
    name = "stack"
    help = "the local PostgreSQL + moto SQS + recovery service stack: up, down, status, env, rotate-keys, dbt"
    actions = (Up(), Down(), Status(), Env(), RotateKeys(), Dbt())
