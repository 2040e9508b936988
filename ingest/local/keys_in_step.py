"""On the local stack, `loginvault keys rotate KIND` and `keys retire KIND` keep .local/keys.env in
step with the key registry: after a rotation it holds the environment's new key (the old one as
…_PREVIOUS), after a retirement no longer the previous key. So `make transform`, a new shell's
`eval "$(make -s env)"` and `make rotate-keys` use the active keys, whoever rotated them.

"The local stack" is the one whose transformer login the command used: its keys.env exists and
LOGINVAULT_TRANSFORMER_DSN is that stack's own. Against any other database nothing is written.
"""

from __future__ import annotations

from ingest import config, settings
from ingest.local.keys_file import KeysFile
from ingest.local.stack import LocalStack
from ingest.settings import LocalStackSettings, SqsSettings
from ingest.vault import keys

RELOAD = 'other shells reload with `eval "$(make -s env)"`'


def local_keys(mart_schema: str = "public") -> KeysFile | None:
    """The local stack's keys file, when the transformer's login in use is that stack's."""
    stack = LocalStack(settings.load(LocalStackSettings), settings.load(SqsSettings, require=False), mart_schema)
    if not stack.keys.path.exists():
        return None
    dsn_env = config.WORKLOADS[config.TRANSFORMER_ROLE].dsn_env
    in_use = settings.env(dsn_env)
    return stack.keys if in_use is not None and in_use == stack.local_values()[dsn_env] else None


def after_rotate(kind: str, mart_schema: str = "public") -> str | None:
    """keys.env gets the environment's new key of `kind` and its old one as …_PREVIOUS; what
    changed, in a sentence (None when nothing did or this is not the local stack)."""
    keys_file = local_keys(mart_schema)
    new, old = settings.env(keys.ENV[kind]), settings.env(keys.PREVIOUS_ENV[kind])
    if keys_file is None or new is None:
        return None
    values = keys_file.read(create=False)
    if values.get(keys.ENV[kind]) == new and values.get(keys.PREVIOUS_ENV[kind]) == old:
        return None
    values[keys.ENV[kind]] = new
    if old is not None:
        values[keys.PREVIOUS_ENV[kind]] = old
    keys_file.write(values)
    return (
        f"keys: {keys_file.path} now holds the new {kind} key (the one before as {keys.PREVIOUS_ENV[kind]}); {RELOAD}"
    )


def after_retire(kind: str, mart_schema: str = "public") -> str | None:
    """keys.env no longer holds the retired previous key of `kind`; what changed, in a sentence."""
    keys_file = local_keys(mart_schema)
    if keys_file is None:
        return None
    values = keys_file.read(create=False)
    if values.pop(keys.PREVIOUS_ENV[kind], None) is None:
        return None
    keys_file.write(values)
    return f"keys: {keys.PREVIOUS_ENV[kind]} removed from {keys_file.path} (retired); {RELOAD}"
