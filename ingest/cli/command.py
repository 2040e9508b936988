"""What a `loginvault` command is: a name, a help line, its flags (`configure_parser`) and what it
does (`execute`, which imports the module that does the work and calls it)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ingest.settings import CommonSettings


class Command:
    """One command of `loginvault`; subclasses set `name` and `help` and override the two methods."""

    name: str
    help: str

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's own flags and arguments."""

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        """Do the command; its exit code. A problem the user can fix raises LoginvaultError."""
        raise NotImplementedError


def print_rows(header: Iterable[str] | None, rows: Iterable[Iterable[object]]) -> None:
    """Tab-separated rows on stdout (NULL as an empty cell), after a header line if given."""
    if header is not None:
        print("\t".join(header))
    for row in rows:
        print("\t".join("" if cell is None else str(cell) for cell in row))
