"""`loginvault keys status|rotate KIND|retire KIND`: the PII key versions (ingest/vault/keys.py) and their
rotation (ingest/vault/rotation.py), as dbt's login."""

from __future__ import annotations

import argparse
import sys

from ingest.cli.command import Command, print_rows
from ingest.setting_values import argument_type, positive
from ingest.settings import CommonSettings, SettingError

STATUS_COLUMNS = (
    "kind", "version", "state", "fingerprint", "tokens", "vault_rows", "mart_rows", "created_at", "activated_at",
    "retired_at",
)  # fmt: skip


class KeysCommand(Command):
    name = "keys"
    help = "PII key versions, as dbt's login: status; rotate or retire a key"

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", choices=["status", "rotate", "retire"])
        parser.add_argument(
            "kind",
            nargs="?",
            choices=["hmac", "encryption"],
            help="with rotate: from LOGINVAULT_<KIND>_KEY_PREVIOUS (the active key) to LOGINVAULT_<KIND>_KEY;"
            " with retire: the previous version (old tokens stop resolving / the old key is no longer needed)",
        )
        parser.add_argument(
            "--batch",
            type=argument_type(positive),
            metavar="N",
            help="with rotate: vault rows per committed batch (default 50,000 for hmac, 20,000 for encryption)",
        )

    def execute(self, args: argparse.Namespace, common: CommonSettings) -> int:
        from ingest.local import keys_in_step
        from ingest.vault import keys, rotation

        if args.action in ("rotate", "retire") and args.kind is None:
            raise SettingError(f"keys {args.action} needs a kind: hmac or encryption")
        if args.action == "rotate":
            if args.kind == keys.HMAC:
                rotated = rotation.rotate_hmac(common.mart_schema, args.batch or rotation.MAP_BATCH)
            else:
                rotated = rotation.rotate_encryption(args.batch or rotation.REWRAP_BATCH)
            done = f"keys: the {args.kind} key is rotated already: nothing to do"
            print(rotated.line() if rotated else done, file=sys.stderr)
            in_step = keys_in_step.after_rotate(args.kind, common.mart_schema)
        elif args.action == "retire":
            retired = keys.retire(args.kind)
            print(f"keys: {args.kind} key version {retired.version} retired", file=sys.stderr)
            in_step = keys_in_step.after_retire(args.kind, common.mart_schema)
        if args.action != "status" and in_step:
            print(in_step, file=sys.stderr)
        print_key_status(common.mart_schema)
        return 0


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
