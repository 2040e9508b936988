"""`make rotate-keys` on the local stack: new keys into .local/keys.env (the current ones kept
as …_PREVIOUS), both rotations, then `keys status`.

Run again after an interruption, it finishes the rotation it started with the same keys
instead of making new ones. A previous version still in its grace period is retired first
(on the local stack only: in production retiring is a decision, `loginvault keys retire`).
"""

from __future__ import annotations

import os
import secrets
import sys

from ingest import LoginvaultError, config, db, keys, rotation
from ingest.local.keys_file import PREVIOUS_KEYS
from ingest.local.stack import LocalStack


def _plan(values: dict[str, str], mart_schema: str) -> dict[str, bool]:
    """kind → whether it needs new keys (its file key is in use and nothing is unfinished)."""
    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
        registered = keys.versions(conn)
    coverage = {(c.version.kind, c.version.state): c.vault_rows for c in keys.status(mart_schema)}
    fresh = {}
    for kind in keys.KINDS:
        active = keys.in_state(registered, kind, "active")
        if active is None:
            raise LoginvaultError(f"no {kind} key is registered yet: run `make transform` first")
        in_use = active.fingerprint == keys.fingerprint(kind, values[keys.ENV[kind]])
        unfinished = keys.in_state(registered, kind, "pending") is not None or (
            kind == keys.ENCRYPTION and coverage.get((kind, "previous"), 0) > 0
        )
        fresh[kind] = in_use and not unfinished
    return fresh


def rotate(stack: LocalStack) -> None:
    values = stack.keys.read()
    os.environ.update(stack.env())
    for kind, new in _plan(values, stack.mart_schema).items():
        if not new:
            print(f"keys: finishing the unfinished {kind} rotation with the keys in {stack.keys.path}", file=sys.stderr)
            continue
        with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
            previous = keys.in_state(keys.versions(conn), kind, "previous")
        if previous is not None:
            keys.retire(kind)
            print(f"keys: retired {kind} key version {previous.version} (local stack)", file=sys.stderr)
        values[keys.PREVIOUS_ENV[kind]] = values[keys.ENV[kind]]
        values[keys.ENV[kind]] = secrets.token_hex(32)
    stack.keys.write(values)
    for name in (*config.KEY_ENVS, *PREVIOUS_KEYS):
        if name in values:
            os.environ[name] = values[name]
    for rotate_kind in (lambda: rotation.rotate_hmac(stack.mart_schema), rotation.rotate_encryption):
        rotated = rotate_kind()
        if rotated:
            print(rotated.line(), file=sys.stderr)
