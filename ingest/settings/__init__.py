"""Every setting of loginvault, read once at a command's start and checked the same way whatever
its source.

A setting is a field of one of the frozen dataclasses of this package: its default, the flag and
the environment variable(s) it may come from, the parser that reads a value, and what it means,
all in one place (declaring.py says how). services.py has the workloads' settings, commands.py
the flags of single commands. `load` builds a settings object from the parsed command line, the
environment and the defaults, in that order. A flag's value and a variable's go through the same
parser; a bad one is one sentence naming the flag or the variable, and exit 2. Nothing reads the
environment at import time.

Credentials are not settings: the DSNs and the PII keys are read where they are used (ingest/db.py,
ingest/vault/keys.py), through `env` and `require` below, and checked there.
"""

from __future__ import annotations

import dataclasses

from ingest.settings import commands, services
from ingest.settings.commands import (
    AuditSettings,
    DbtArgs,
    DlqRedriveSettings,
    EraseSettings,
    KeyKind,
    KeyRotation,
    Lookup,
    Reason,
    RequestId,
    SeedSettings,
    StackUpSettings,
)
from ingest.settings.declaring import (
    SETUP_HINT,
    CommandParser,
    SettingError,
    Source,
    add_arguments,
    env,
    load,
    require,
    setting,
    sources,
)
from ingest.settings.services import (
    BootstrapSettings,
    CommonSettings,
    LocalStackSettings,
    RecoveryServiceSettings,
    RequestSettings,
    RetentionSettings,
    RunSettings,
    SqsSettings,
    TransformSettings,
)

__all__ = [
    "ALL", "SETUP_HINT", "AuditSettings", "BootstrapSettings", "CommandParser", "CommonSettings", "DbtArgs",
    "DlqRedriveSettings", "EraseSettings", "KeyKind", "KeyRotation", "LocalStackSettings", "Lookup", "Reason",
    "RecoveryServiceSettings", "RequestId", "RequestSettings", "RetentionSettings", "RunSettings", "SeedSettings",
    "SettingError", "Source", "SqsSettings", "StackUpSettings", "TransformSettings", "add_arguments", "env", "load",
    "require", "setting", "sources", "variables",
]  # fmt: skip

# The settings classes that read the environment (the workloads'), found in the modules that
# declare them: a new one is in the README's check without being listed anywhere.
ALL = tuple(
    cls
    for module in (services, commands)
    for cls in vars(module).values()
    if isinstance(cls, type)
    and dataclasses.is_dataclass(cls)
    and cls.__module__ == module.__name__
    and any(source.env for _, source in sources(cls).values())
)


def variables() -> dict[str, str]:
    """Every environment variable a setting reads → what it means (the README's table has them)."""
    return {name: source.help for cls in ALL for _, source in sources(cls).values() for name in source.env}
