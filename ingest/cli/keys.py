"""`loginvault keys status|rotate KIND|retire KIND`: the PII key versions (ingest/vault/keys.py) and their
rotation (ingest/vault/rotation.py), as dbt's login."""

from __future__ import annotations

import argparse
import sys

from ingest import settings
from ingest.cli.command import Command, print_rows
from ingest.settings import CommonSettings, KeyKind, KeyRotation

STATUS_COLUMNS = (
    "kind", "version", "state", "fingerprint", "tokens", "vault_rows", "mart_rows", "created_at", "activated_at",
    "retired_at",
)  # fmt: skip


class KeysStatus(Command):
    name = "status"
    help = "every key version: kind, version, state, fingerprint, token rule, vault and mart rows, times"

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        print_key_status(common.mart_schema)
        return 0


class KeysRotate(Command):
    name = "rotate"
    help = "rotate a key from LOGINVAULT_<KIND>_KEY_PREVIOUS (the active key) to LOGINVAULT_<KIND>_KEY"
    flags = (KeyRotation,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local import keys_in_step
        from ingest.vault import keys, rotation

        chosen = settings.load(KeyRotation, args)
        if chosen.kind == keys.HMAC:
            rotated = rotation.rotate_hmac(common.mart_schema, chosen.batch or rotation.MAP_BATCH)
        else:
            rotated = rotation.rotate_encryption(chosen.batch or rotation.REWRAP_BATCH)
        done = f"keys: the {chosen.kind} key is rotated already: nothing to do"
        print(rotated.line() if rotated else done, file=sys.stderr)
        return after_change(keys_in_step.after_rotate(chosen.kind, common.mart_schema), common)


class KeysRetire(Command):
    name = "retire"
    help = "retire the previous version of a key: hmac, old tokens stop resolving; encryption, the old key goes"
    flags = (KeyKind,)

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local import keys_in_step
        from ingest.vault import keys

        kind = settings.load(KeyKind, args).kind
        retired = keys.retire(kind)
        print(f"keys: {kind} key version {retired.version} retired", file=sys.stderr)
        return after_change(keys_in_step.after_retire(kind, common.mart_schema), common)


def after_change(in_step: str | None, common: CommonSettings) -> int:
    """What the local stack's keys file did to keep in step, then the key status."""
    if in_step:
        print(in_step, file=sys.stderr)
    print_key_status(common.mart_schema)
    return 0


class KeysCommand(Command):
    name = "keys"
    help = "PII key versions, as dbt's login: status; rotate or retire a key"
    actions = (KeysStatus(), KeysRotate(), KeysRetire())


def print_key_status(mart_schema: str) -> None:
    """Every key version, tab-separated: kind, version, state, fingerprint, token rule, rows, times."""
    from ingest.vault import keys

    rows = []
    for row in keys.status(mart_schema):
        v = row.version
        tokens = ("kind:value" if v.kind_separated else "value") if v.kind == keys.HMAC else ""
        rows.append((v.kind, v.version, v.state, v.fingerprint, tokens, row.vault_rows, row.mart_rows, v.created_at,
                     v.activated_at, v.retired_at))  # fmt: skip
    print_rows(STATUS_COLUMNS, rows)
    if not rows:
        print(
            "keys: no key is registered yet: the first build (`make transform`, or `loginvault transform build`)"
            " registers the keys in its environment as version 1 of each kind",
            file=sys.stderr,
        )
