"""What a `loginvault` command is: a name, a help line, the settings classes whose flags it takes
(`flags`, declared in ingest/settings/) and what it does (`execute`, which imports the module that
does the work and calls it) — or, for a group such as `keys`, its actions, each a command of its
own with its own flags."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ingest.settings import CommonSettings


class Command:
    """One command of `loginvault`, or one action of a group; subclasses set `name`, `help` and
    either `flags` and `execute`, or `actions`."""

    name: str
    help: str
    flags: tuple[type, ...] = ()  # settings classes: their flags and arguments are the command's
    actions: tuple[Command, ...] = ()  # a group's: `loginvault NAME ACTION …`
    verbatim: str | None = None  # a setting that takes every argument after the command as written

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """Do the command; its exit code. A problem the user can fix raises LoginvaultError."""
        raise NotImplementedError


def print_rows(header: Iterable[str] | None, rows: Iterable[Iterable[object]]) -> None:
    """Tab-separated rows on stdout (NULL as an empty cell), after a header line if given."""
    if header is not None:
        print("\t".join(header))
    for row in rows:
        print("\t".join("" if cell is None else str(cell) for cell in row))
