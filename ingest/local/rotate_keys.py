"""`make rotate-keys` on the local stack: new keys into .local/keys.env (the current ones kept
as …_PREVIOUS), both rotations, then `keys status`.

Everything that would stop it half-way is checked first (the keys file's keys are the registered
ones, a rotation in hand has its previous key, the transform lock is free): a refusal changes
nothing. Run again after an interruption, it finishes the rotation it started with the same keys
instead of making new ones. A previous version still in its grace period is retired first
(on the local stack only: in production retiring is a decision, `loginvault keys retire`).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from ingest import LoginvaultError, config, db
from ingest.local.keys_file import PREVIOUS_KEYS
from ingest.local.stack import LocalStack
from ingest.vault import keys, rotation


def _plan(values: dict[str, str], mart_schema: str, path: Path) -> dict[str, bool]:
    """kind → whether it needs new keys (True) or finishing the rotation in hand (False). Refuses,
    in one sentence, whatever would stop the rotation half-way, before anything changes."""
    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
        registered = keys.versions(conn)
    coverage = {(c.version.kind, c.version.state): c.vault_rows for c in keys.status(mart_schema)}
    fresh = {}
    for kind in keys.KINDS:
        active = keys.in_state(registered, kind, "active")
        if active is None:
            raise LoginvaultError(f"no {kind} key is registered yet: run `make transform` first")
        pending = keys.in_state(registered, kind, "pending")
        unfinished = pending is not None or (kind == keys.ENCRYPTION and coverage.get((kind, "previous"), 0) > 0)
        current = pending or active  # the key the file must hold: the one being rotated to, else the active
        file_key = values[keys.ENV[kind]]
        if current.fingerprint != keys.fingerprint(kind, file_key):
            raise LoginvaultError(
                f"{keys.ENV[kind]} in {path} (fingerprint {keys.fingerprint(kind, file_key)}) is not the"
                f" {current.state} {kind} key (version {current.version}, {current.fingerprint}): it was changed by"
                f" other means; put that key in {path}, then run `make rotate-keys` again (nothing was changed)"
            )
        if unfinished and not values.get(keys.PREVIOUS_ENV[kind]):
            raise LoginvaultError(
                f"the {kind} rotation in hand needs {keys.PREVIOUS_ENV[kind]}, which {path} lacks: finish it"
                f" with `loginvault keys rotate {kind}` and both keys set (nothing was changed)"
            )
        fresh[kind] = not unfinished
    with keys.exclusive("rotate-keys"):
        pass  # the transform lock is free now (a holder would stop a rotation after the new keys)
    return fresh


def rotate(stack: LocalStack) -> None:
    values = stack.keys.read()
    os.environ.update(stack.env())
    plan = _plan(values, stack.mart_schema, stack.keys.path)  # refuses before anything changes
    for kind, new in plan.items():
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
    steps: tuple[Callable[[], rotation.Rotated | None], ...] = (
        lambda: rotation.rotate_hmac(stack.mart_schema),
        rotation.rotate_encryption,
    )
    for rotate_kind in steps:
        rotated = rotate_kind()
        if rotated:
            print(rotated.line(), file=sys.stderr)
    print('keys: .local/keys.env holds the new keys; other shells reload with `eval "$(make -s env)"`', file=sys.stderr)
