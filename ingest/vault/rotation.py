"""Key rotation without raw data: `loginvault keys rotate hmac|encryption`.

HMAC: every vault value is decrypted once and tokenized with the new key (kind || ':' ||
value); the old → new tokens go to pii.token_map (kept until `keys retire hmac`, so that an
old token still resolves), then the vault's and the mart's tokens are replaced in place in one
transaction: readers see all-old or all-new.
Encryption: the vault is re-encrypted in batches, each row recording its key version; both
keys work meanwhile (the recovery functions pick a row's key by its version).

Both run as dbt's own login with the keys as session settings (never in SQL text), hold the
transform lock (a transform cannot run beside them), and are resumable: each phase either
commits as a whole or in batches that a second run continues, so a run killed at any point is
finished by the next one with the same result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest import LoginvaultError, config, count, db, settings
from ingest.faults import pause_at
from ingest.vault import keys

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

MAP_BATCH = 50_000
REWRAP_BATCH = 20_000
# The tables an HMAC rotation rewrites (their token columns and the kind each carries).
VAULT = "pii.vault"
TOKEN_COLUMNS = {"masked_ip": "ip", "masked_device_id": "device_id"}
# What an earlier version's rotation built beside the tables (a killed run could leave them).
ROTATING, PRE_ROTATION = "__rotating", "__pre_rotation"


@dataclass(frozen=True)
class Rotated:
    kind: str
    from_version: int
    to_version: int
    rows: int  # tokens mapped (hmac) or rows re-encrypted (encryption)
    seconds: float

    def line(self) -> str:
        if self.kind == keys.HMAC:
            what = f"{count(self.rows, 'token')} re-made"
        else:
            what = f"{count(self.rows, 'vault row')} re-encrypted"
        return (
            f"keys: {self.kind} rotated from version {self.from_version} to {self.to_version}:"
            f" {what} in {self.seconds:.1f} s"
        )


# SQLSTATEs with which the key administrator's functions (pii.begin_hmac_rotation, …) refuse a
# step (a key registered before, a rotation under way with another key): running it again would
# not help.
REFUSALS = {"22023", "55000"}  # invalid_parameter_value, object_not_in_prerequisite_state


@contextlib.contextmanager
def _stopped_cleanly() -> Iterator[None]:
    """A database error ends the rotation with one sentence: each phase either committed or
    left nothing, so running it again finishes the job (unless the registry refused the step)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        if exc.sqlstate in REFUSALS:
            raise LoginvaultError(f"key rotation refused: {db.first_line(exc)}") from None
        raise LoginvaultError(f"key rotation stopped (run it again to finish): {db.first_line(exc)}") from None


def _connect() -> Connection[TupleRow]:
    """dbt's login, acting as the transformer (what it creates belongs to the role), with the
    current and the previous keys as session settings."""
    conn = db.connect(config.TRANSFORMER_ROLE, autocommit=True, options=keys.session_options(previous=True))
    conn.execute(f"SET ROLE {config.TRANSFORMER_ROLE}")
    return conn


@contextlib.contextmanager
def _checked(conn: Connection[TupleRow], *targets: str, mode: str = "ROW EXCLUSIVE") -> Iterator[None]:
    """A transaction that starts by locking and checking every table the transformer owns
    (loginvault.checked_transform_relations; `targets`, declared names, in `mode`): this session
    holds the keys, and dbt's login could attach code to those tables at any time."""
    with conn.transaction():
        conn.execute("SELECT loginvault.checked_transform_relations(%s::text[], %s)", (list(targets), mode))
        yield


def _previous_key(kind: str) -> str:
    return keys.check_key(keys.PREVIOUS_ENV[kind])


def _registered(
    conn: Connection[TupleRow], kind: str
) -> tuple[keys.Version | None, keys.Version | None, keys.Version | None]:
    all_versions = keys.versions(conn)
    active, previous, pending = (keys.in_state(all_versions, kind, s) for s in ("active", "previous", "pending"))
    return active, previous, pending


# ---------------------------------------------------------------- HMAC


def rotate_hmac(mart_schema: str, batch: int = MAP_BATCH) -> Rotated | None:
    """Rotate the HMAC key from LOGINVAULT_HMAC_KEY_PREVIOUS (the active one) to
    LOGINVAULT_HMAC_KEY in the vault and `mart_schema`.user_logins. None when that rotation is
    done already."""
    started = time.monotonic()
    new_key, old_key = keys.check_key(keys.ENV[keys.HMAC]), _previous_key(keys.HMAC)
    new_fp = keys.fingerprint(keys.HMAC, new_key)
    with _stopped_cleanly(), keys.exclusive("rotate-hmac-key", wait_seconds=300), _connect() as conn:
        active, previous, pending = _registered(conn, keys.HMAC)
        if active is None:
            raise LoginvaultError("no hmac key is registered yet: run a transform first")
        if active.fingerprint == new_fp and pending is None:
            _drop_leftovers(conn, mart_schema)
            # Erased subjects an earlier version's rotation left under the old key (none: a no-op).
            conn.execute("SELECT pii.rehash_erased_subjects()")
            return None
        if active.fingerprint != keys.fingerprint(keys.HMAC, old_key):
            raise keys.mismatch(keys.HMAC, old_key, active, keys.PREVIOUS_ENV[keys.HMAC])
        if previous is not None:
            raise LoginvaultError(
                f"hmac key version {previous.version} is still in its grace period: `loginvault keys retire hmac` first"
            )
        if pending is not None and pending.fingerprint != new_fp:
            raise keys.mismatch(keys.HMAC, new_key, pending)
        # The key administrator's step (pii.begin_hmac_rotation): the session's new key as the next
        # version, pending; a resumed rotation gets its pending version back.
        (target,) = db.one_row(conn, "SELECT pii.begin_hmac_rotation()")
        mapped = _map_tokens(conn, target, batch)
        pause_at("rotate_built_map")
        mart = _check_mart(conn, mart_schema)
        _rewrite(conn, mart, target)
        pause_at("rotate_rewritten")
        _drop_leftovers(conn, mart)
    return Rotated(keys.HMAC, active.version, target, mapped, time.monotonic() - started)


def _decryption(conn: Connection[TupleRow]) -> str:
    """SQL for the key of a vault row `n` (by its encryption key version): whichever of the
    environment's encryption keys (LOGINVAULT_ENCRYPTION_KEY, …_PREVIOUS) has that version's
    fingerprint. Refuses, naming the version, when neither has."""
    setting_of = {
        keys.fingerprint(keys.ENCRYPTION, keys.check_key(keys.ENV[keys.ENCRYPTION])): "loginvault.encryption_key"
    }
    if settings.env(keys.PREVIOUS_ENV[keys.ENCRYPTION]):
        previous = keys.check_key(keys.PREVIOUS_ENV[keys.ENCRYPTION])
        setting_of[keys.fingerprint(keys.ENCRYPTION, previous)] = "loginvault.encryption_key_previous"
    registered = {v.version: v.fingerprint for v in keys.versions(conn) if v.kind == keys.ENCRYPTION}
    cases = []
    with _checked(conn):
        versions = conn.execute("SELECT DISTINCT encryption_key_version FROM pii.vault").fetchall()
    for (version,) in versions:
        setting = setting_of.get(registered.get(version, ""))
        if setting is None:
            raise LoginvaultError(
                f"vault rows of encryption key version {version} need that key (fingerprint"
                f" {registered.get(version, 'unknown')}): set it as {keys.ENV[keys.ENCRYPTION]} or"
                f" {keys.PREVIOUS_ENV[keys.ENCRYPTION]}"
            )
        cases.append(f"WHEN {int(version)} THEN current_setting('{setting}')")
    return f"CASE n.encryption_key_version {' '.join(cases)} END" if cases else "NULL::text"


# One batch of the token map: the next `batch` vault rows after (token, kind), decrypted with the
# key of their version (KEY_OF_ROW, from _decryption) and tokenized with the new HMAC key.
MAP_BATCH_SQL = """
WITH next AS (
    SELECT v.kind::text AS kind, v.token::text AS token, v.ciphertext, v.encryption_key_version, v.hmac_key_version
    FROM pii.vault AS v
    WHERE (v.token, v.kind) > (%(token)s, %(kind)s)
    ORDER BY v.token, v.kind
    LIMIT %(batch)s
), mapped AS (
    INSERT INTO pii.token_map (kind, old_token, new_token, from_version, to_version)
    SELECT n.kind, n.token,
           loginvault.pii_token(n.kind, public.pgp_sym_decrypt(n.ciphertext, KEY_OF_ROW),
                                current_setting('loginvault.hmac_key'), true),
           n.hmac_key_version, %(target)s
    FROM next AS n
    ON CONFLICT (kind, old_token) DO NOTHING
)
SELECT count(*), max(token), (array_agg(kind ORDER BY token DESC, kind DESC))[1] FROM next
"""


def _map_tokens(conn: Connection[TupleRow], target: int, batch: int) -> int:
    """Every vault token → its token under the new key, in batches (keyset over the vault's
    (token, kind) index), each committed: a killed run resumes after the last batch."""
    statement = MAP_BATCH_SQL.replace("KEY_OF_ROW", _decryption(conn))
    with _checked(conn):
        last = conn.execute(
            "SELECT old_token, kind FROM pii.token_map WHERE to_version = %s ORDER BY old_token DESC, kind DESC LIMIT 1",
            (target,),
        ).fetchone() or ("", "")
    while True:
        with _checked(conn, "pii.token_map"):
            n, token, kind = db.one_row(
                conn, statement, {"token": last[0], "kind": last[1], "batch": batch, "target": target}
            )
        if not n:
            break
        last = (token, kind)
        pause_at("rotate_mapping")
    with _checked(conn):
        mapped: int = db.one_row(conn, "SELECT count(*) FROM pii.token_map WHERE to_version = %s", (target,))[0]
    return mapped


def _check_mart(conn: Connection[TupleRow], mart: str) -> str:
    """The mart's schema, once every token it carries has a mapping (the vault knows every
    token the mart carries: a transform writes both from the same rows)."""
    for column, kind in TOKEN_COLUMNS.items():
        with _checked(conn):
            (orphans,) = db.one_row(
                conn,
                f"SELECT count(*) FROM {mart}.user_logins AS u WHERE u.{column} IS NOT NULL AND NOT EXISTS"  # noqa: S608
                f" (SELECT FROM pii.token_map AS m WHERE m.kind = %s AND m.old_token = u.{column})",
                (kind,),
            )
        if orphans:
            raise LoginvaultError(
                f"{count(orphans, column + ' token')} of {mart}.user_logins have no vault entry: the mart and the vault"
                " disagree; nothing was changed (`loginvault transform build` shows which)"
            )
    return mart


def _rewrite(conn: Connection[TupleRow], mart: str, target: int) -> None:
    """In one transaction: every token of the vault and the mart replaced by its new one (from
    the token map), then the pending version made active and the active one previous (the erased
    subjects re-hashed with it). Readers see all-old or all-new (MVCC: they are never blocked); a killed
    run leaves nothing, and the next one does it again. In place: the two tables stay the
    ones the bootstrap made (no workload may create in their schemas)."""
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '60s'")
        conn.execute(
            "SELECT loginvault.checked_transform_relations(ARRAY[%s, format('%%I.user_logins', %s::text)], 'SHARE ROW EXCLUSIVE')",
            (VAULT, mart),
        )
        conn.execute(
            f"UPDATE {VAULT} AS v SET token = m.new_token, hmac_key_version = %s"  # noqa: S608
            " FROM pii.token_map AS m WHERE m.kind = v.kind AND m.old_token = v.token AND v.hmac_key_version IS DISTINCT FROM %s",
            (target, target),
        )
        assignments = ", ".join(
            f"{c} = (SELECT m.new_token FROM pii.token_map AS m WHERE m.kind = '{kind}' AND m.old_token = u.{c})"
            for c, kind in TOKEN_COLUMNS.items()
        )
        present = " OR ".join(f"u.{c} IS NOT NULL" for c in TOKEN_COLUMNS)
        conn.execute(f"UPDATE {mart}.user_logins AS u SET {assignments} WHERE {present}")  # noqa: S608
        pause_at("rotate_rewriting")
        # The key administrator's step: pending → active, active → previous, and the erased
        # subjects re-hashed under the new key. That the tables are rewritten is checked here,
        # before: they are the transformer's, which the key administrator's functions never read.
        conn.execute("SELECT pii.activate_hmac_key()")
    for table in (VAULT, f"{mart}.user_logins"):
        with conn.transaction():  # ANALYZE runs statistics expressions: checked under a lock that keeps new ones out
            conn.execute("SELECT loginvault.checked_relation(%s, 'SHARE UPDATE EXCLUSIVE')", (table,))
            conn.execute(f"ANALYZE {table}")


def _drop_leftovers(conn: Connection[TupleRow], mart: str) -> None:
    """Copies an earlier version's rotation built beside the tables and a killed run left."""
    for table in (VAULT, f"{mart}.user_logins"):
        conn.execute(f"DROP TABLE IF EXISTS {table}{ROTATING}, {table}{PRE_ROTATION}")


# ---------------------------------------------------------------- encryption


def rotate_encryption(batch: int = REWRAP_BATCH) -> Rotated | None:
    """Re-encrypt the vault from LOGINVAULT_ENCRYPTION_KEY_PREVIOUS to LOGINVAULT_ENCRYPTION_KEY,
    in batches. The new key is active from the start (new rows use it); rows not yet
    re-encrypted keep working with the previous one. None when there was nothing to do."""
    started = time.monotonic()
    new_key, old_key = keys.check_key(keys.ENV[keys.ENCRYPTION]), _previous_key(keys.ENCRYPTION)
    new_fp, old_fp = keys.fingerprint(keys.ENCRYPTION, new_key), keys.fingerprint(keys.ENCRYPTION, old_key)
    with _stopped_cleanly(), keys.exclusive("rotate-encryption-key", wait_seconds=300), _connect() as conn:
        active, previous, _ = _registered(conn, keys.ENCRYPTION)
        if active is None:
            raise LoginvaultError("no encryption key is registered yet: run a transform first")
        if active.fingerprint == old_fp:  # not switched yet
            if previous is not None:
                raise LoginvaultError(
                    f"encryption key version {previous.version} is still needed: finish and retire it first"
                    " (`loginvault keys rotate encryption` with it as LOGINVAULT_ENCRYPTION_KEY_PREVIOUS, then"
                    " `loginvault keys retire encryption`)"
                )
            # The key administrator's switch: the new key active, the old one previous, the erased
            # subjects re-wrapped under the new one (the vault's rows follow below, in batches).
            conn.execute("SELECT pii.rotate_encryption_key()")
            active, previous, _ = _registered(conn, keys.ENCRYPTION)
            if active is None or previous is None:  # what pii.rotate_encryption_key just registered
                raise LoginvaultError("the encryption key switch registered no active and previous version")
        elif active.fingerprint != new_fp:
            raise keys.mismatch(keys.ENCRYPTION, new_key, active)
        elif previous is None or previous.fingerprint != old_fp:
            if previous is None:
                return None
            raise keys.mismatch(keys.ENCRYPTION, old_key, previous, keys.PREVIOUS_ENV[keys.ENCRYPTION])
        pause_at("rewrap_switched")
        rows = _rewrap(conn, previous.version, active.version, batch)
        conn.execute("SELECT pii.rewrap_erased_subjects()")  # what an earlier version's run left (else a no-op)
    return Rotated(keys.ENCRYPTION, previous.version, active.version, rows, time.monotonic() - started)


def _rewrap(conn: Connection[TupleRow], old: int, new: int, batch: int) -> int:
    """Re-encrypt the rows of version `old` in batches (keyset over the vault's (token, kind)
    index), each its own transaction: a killed run leaves whole batches done, the next one
    finds the rest by their version."""
    total, last = 0, ("", "")
    while True:
        with _checked(conn, VAULT):
            n, token, kind = _rewrap_batch(
                conn, {"token": last[0], "kind": last[1], "old": old, "new": new, "batch": batch}
            )
        if not n:
            return total
        total += n
        last = (token, kind)
        pause_at("rewrapping")


def _rewrap_batch(conn: Connection[TupleRow], params: dict[str, object]) -> tuple[int, str, str]:
    """One batch of _rewrap: (rows re-encrypted, the last token and kind)."""
    n, token, kind = db.one_row(
        conn,
        """
            WITH next AS (
                SELECT token, kind FROM pii.vault
                WHERE (token, kind) > (%(token)s, %(kind)s) AND encryption_key_version = %(old)s
                ORDER BY token, kind
                LIMIT %(batch)s
            ), rewrapped AS (
                UPDATE pii.vault AS v
                SET ciphertext = public.pgp_sym_encrypt(
                        public.pgp_sym_decrypt(v.ciphertext, current_setting('loginvault.encryption_key_previous')),
                        current_setting('loginvault.encryption_key'), 'cipher-algo=aes256, s2k-mode=1'),
                    encryption_key_version = %(new)s
                FROM next AS n
                WHERE v.token = n.token AND v.kind = n.kind
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM rewrapped), max(token), (array_agg(kind ORDER BY token DESC, kind DESC))[1]
            FROM next
            """,
        params,
    )
    return n, token, kind
