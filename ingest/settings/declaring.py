"""How a setting is declared, put on a command line and loaded.

A setting is a field of a frozen dataclass, made by `setting`: its default, the flag (or the
positional argument) and the environment variable(s) it may come from, the parser that reads a
value, what it means, and how it goes with the other flags of its class (`needs`, `conflicts`,
`group`). `add_arguments` puts a class's flags on a command's parser; `load` builds the class
from the parsed command line, the environment and the defaults, in that order.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ingest import LoginvaultError
from ingest.setting_values import Parser, argument_type, host, port_or_off

T = TypeVar("T")
SETUP_HINT = 'run `eval "$(make -s env)"` or set it yourself'


class SettingError(LoginvaultError):
    """A flag or a variable with a value that cannot be used: the command line is wrong."""

    exit_code = 2


# ---------------------------------------------------------------- the environment


def env(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """An environment variable, with an empty (or blank) one treated as unset."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default


def require(name: str, hint: str = SETUP_HINT) -> str:
    """An environment variable that must be set (a credential: exit 1 when it is not)."""
    value = env(name)
    if value is None:
        raise LoginvaultError(f"{name} is not set: {hint}")
    return value


# ---------------------------------------------------------------- declaring


@dataclass(frozen=True)
class Source:
    """Where a setting may come from, and how its text is read."""

    help: str
    env: tuple[str, ...] = ()  # the first one set wins; the later ones are older names
    # `--name`: a flag; a name without dashes (`KIND`): a positional argument, shown so.
    flag: str | None = None
    parse: Parser = str
    metavar: str | None = None
    hidden_flags: tuple[str, ...] = ()  # older flags, still accepted, not in --help
    # A variable: unset is an error (exit 1) when loading with require=True. A flag with no
    # variable: the command line must give it (exit 2), or one of its group.
    required: bool = False
    default_text: str | None = None  # what --help says of a default that is not a plain value
    needs: str | None = None  # the setting (of the same class) whose flag must come with this one
    conflicts: str | None = None  # the setting (of the same class) whose flag must not
    group: str | None = None  # the flags of one group exclude each other
    nargs: str | None = None  # a positional's: argparse.REMAINDER takes the rest of the line

    @property
    def positional(self) -> bool:
        return self.flag is not None and not self.flag.startswith("-")


def setting(default: Any, help: str, *, env: str | tuple[str, ...] = (), **where: Any) -> Any:
    """A dataclass field that is a setting: its default beside what it means and where it comes
    from (`where`: Source's other fields)."""
    names = (env,) if isinstance(env, str) else env
    return field(default=default, metadata={"source": Source(help, names, **where)})


def sources(cls: type) -> dict[str, tuple[Any, Source]]:
    """name → (default, source) of each setting of a settings class."""
    return {f.name: (f.default, f.metadata["source"]) for f in fields(cls) if "source" in f.metadata}


def metrics_port_setting(variable: str, scope: str = "", needs: str | None = None) -> Any:
    """A service's port for Prometheus /metrics and /healthz (the ingest's, the transform service's)."""
    return setting(
        None,
        f"{scope}serve Prometheus /metrics and /healthz on this port",
        env=variable,
        flag="--metrics-port",
        parse=port_or_off,
        metavar="P",
        default_text="off",
        needs=needs,
    )


METRICS_HOST = "0.0.0.0"


def metrics_host_setting(variable: str, scope: str = "", needs: str | None = None) -> Any:
    """The address a service serves its metrics on: every interface, for a scraper in the cluster."""
    return setting(
        METRICS_HOST,
        f"{scope}address to serve metrics on",
        env=variable,
        flag="--metrics-host",
        parse=host,
        metavar="ADDR",
        needs=needs,
    )


def refuse_host_without_port(port: int | None, host: str, port_variable: str, host_variable: str) -> None:
    """A metrics address (flag or variable) with no port to serve on (from either) would be
    ignored: refused instead, naming both."""
    if port is None and host != METRICS_HOST:
        raise SettingError(
            f"--metrics-host / {host_variable} {host} is set, but no --metrics-port / {port_variable}:"
            " metrics are served only on a port"
        )


# ---------------------------------------------------------------- the command line


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, which also refuses (exit 2, one `error:` line) a flag given without the
    flag it `needs` or with one it `conflicts` with; a command's own parser refuses an argument
    it does not know itself, naming the command, and a group's a flag before the action. With
    `verbatim`, every argument after the command is that one setting's, as written (`stack dbt`:
    dbt's own flags, --help included)."""

    def __init__(self, *args: Any, verbatim: str | None = None, **kwargs: Any) -> None:
        if verbatim is not None:
            kwargs["add_help"] = False
        super().__init__(*args, **kwargs)
        self.verbatim = verbatim
        self.relations: list[tuple[str, str, str, str, bool]] = []  # dest, flag, other dest, other flag, needed
        self.leaf = False  # a command's parser, not a group's
        self.grouping = False  # a group's (`keys`): only its actions follow
        self.children: dict[str, CommandParser] = {}  # a group's: the parser of each of its commands

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.verbatim is not None:
            parsed, _ = super().parse_known_args([], namespace)
            setattr(parsed, self.verbatim, list(args or ()))
            return parsed, []
        if self.grouping and args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
            self.error(f"unrecognized arguments: {args[0]} (a flag goes after the action: {', '.join(self.children)})")
        parsed, extras = super().parse_known_args(args, namespace)
        if self.leaf and extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        for dest, flag, other, other_flag, needed in self.relations:
            if getattr(parsed, dest, None) is not None and (getattr(parsed, other, None) is None) == needed:
                self.error(f"argument {flag}: {'needs' if needed else 'not allowed with'} argument {other_flag}")
        return parsed, extras


def add_arguments(parser: argparse.ArgumentParser, cls: type, *names: str) -> None:
    """The flags of `cls`'s settings (or of those named), each with its parser and a help that says
    its default and its variable. Unset flags are None, so that `load` can tell them apart."""
    declared = sources(cls)
    groups: dict[str, Any] = {}
    for name, (default, source) in declared.items():
        if source.flag is None or (names and name not in names):
            continue
        target: Any = parser
        if source.group is not None and source.group not in groups:
            required = any(s.required for _, s in declared.values() if s.group == source.group)
            groups[source.group] = parser.add_mutually_exclusive_group(required=required)
        if source.group is not None:
            target = groups[source.group]
        options = _options(name, default, source)
        target.add_argument(*([] if source.positional else [source.flag]), **options)
        for hidden in source.hidden_flags:
            target.add_argument(hidden, **{**options, "help": argparse.SUPPRESS})
        for other, needed in ((source.needs, True), (source.conflicts, False)):
            if other is not None:
                if not isinstance(parser, CommandParser):
                    raise TypeError(f"{cls.__name__}.{name}: a relation between flags needs a CommandParser")
                parser.relations.append((name, source.flag, other, str(declared[other][1].flag), needed))


def _options(name: str, default: Any, source: Source) -> dict[str, Any]:
    """add_argument's keywords for a setting."""
    options: dict[str, Any] = {"help": _help(default, source)}
    if source.positional:
        options.update(dest=name, metavar=source.flag, type=argument_type(source.parse))
        if source.nargs is not None:
            options["nargs"] = source.nargs
        return options
    options.update(dest=name, default=None, required=source.required and not source.env and source.group is None)
    if isinstance(default, bool):
        options["action"] = "store_true"
    else:
        options.update(type=argument_type(source.parse), metavar=source.metavar)
    return options


def _help(default: Any, source: Source) -> str:
    said = []
    if source.default_text is not None:
        said.append(f"default {source.default_text}")
    elif default not in (None, ()) and not isinstance(default, bool):
        said.append(f"default {default:g}" if isinstance(default, float) else f"default {default}")
    if source.env:
        said.append(f"env {source.env[0]}")
    return f"{source.help} ({', '.join(said)})" if said else source.help


# ---------------------------------------------------------------- loading


def load(
    cls: type[T],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require: bool = True,
) -> T:
    """`cls` from the flags in `args`, else the environment, else the defaults. A variable that does
    not parse is a SettingError naming it; a required setting left unset, a LoginvaultError."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (default, source) in sources(cls).items():
        given = getattr(args, name, None) if source.flag else None
        if given is not None:
            values[name] = tuple(given) if isinstance(given, list) else given
            continue
        for variable in source.env:
            text = env(variable, environ=environ)
            if text is not None:
                try:
                    values[name] = source.parse(text)
                except ValueError as exc:
                    raise SettingError(f"{variable}: {exc}") from None
                break
        else:
            if source.required and require and default is None and source.env:
                raise LoginvaultError(f"{source.env[0]} is not set: {SETUP_HINT}")
    return cls(**values)
