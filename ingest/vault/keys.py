"""PII keys: reading them from the environment and handing them to PostgreSQL as session settings,
their versions (fingerprints, the registry's check of the environment's keys, `keys status`,
retirement), and the lock that keeps a transform and a key rotation apart.

The registry (pii.key_versions) holds per kind and version a fingerprint: the first 16 hex
digits of HMAC-SHA256("loginvault key fingerprint <kind>", key), computed the same here and in
PostgreSQL (loginvault.key_fingerprint). One-way and keyed: it tells two keys apart and says
nothing about either. Keys themselves never leave the environment but as session settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ingest import LoginvaultError, config, db, settings

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

HMAC, ENCRYPTION = "hmac", "encryption"
KINDS = (HMAC, ENCRYPTION)
ENV = {HMAC: config.HMAC_KEY_ENV, ENCRYPTION: config.ENCRYPTION_KEY_ENV}
PREVIOUS_ENV = {kind: f"{name}_PREVIOUS" for kind, name in ENV.items()}
# Session settings of the previous keys, beside config.KEY_SETTINGS' current ones.
PREVIOUS_SETTINGS = {HMAC: "loginvault.hmac_key_previous", ENCRYPTION: "loginvault.encryption_key_previous"}
# pg_advisory_lock key held by a transform's build and by a key rotation: never both at once.
TRANSFORM_LOCK = 0x4C56_5452  # "LVTR"


# A file of NAME=value lines that the commands which use keys (transform, key rotation, the
# recovery service) read a key from when its variable is unset: the local stack's .local/keys.env.
# Nothing else reads it, so that the shells `make -s env` prepares hold no key.
KEYS_FILE_ENV = "LOGINVAULT_KEYS_FILE"


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines (comments and blank lines skipped); empty when the file is missing."""
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                values[name.strip()] = value.strip()
    return values


def key_value(name: str) -> str | None:
    """A key variable's value: the environment's, else LOGINVAULT_KEYS_FILE's (None when neither)."""
    value = settings.env(name)
    if value is None and (keys_file := settings.env(KEYS_FILE_ENV)):
        value = read_env_file(Path(keys_file)).get(name) or None
    return value


def check_key(name: str) -> str:
    """The value of a PII key variable; a missing or weak key fails loudly."""
    value = key_value(name)
    if value is None:
        raise LoginvaultError(
            f"{name} is not set: this command holds the PII keys (on the local stack they come from"
            f" {KEYS_FILE_ENV}, which `make -s env` sets); elsewhere set a random key of at least 32 bytes"
        )
    if len(value.encode()) < config.MIN_KEY_BYTES:
        raise LoginvaultError(
            f"{name} is too short: use at least {config.MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)"
        )
    return value


def setting_option(setting: str, value: str) -> str:
    """One startup option `-c setting=value`, escaped for libpq's options (spaces, backslashes)."""
    escaped = value.replace("\\", "\\\\").replace(" ", "\\ ")
    return f"-c {setting}={escaped}"


# The search path of every session that holds keys: names it does not qualify (pgcrypto's
# functions, in public) resolve there and nowhere else. A login may give itself a search path
# (ALTER ROLE … SET), and the transformer may create functions in staging: a pgp_sym_encrypt of
# its own found first would be handed the keys. A startup option wins over the login's setting.
KEYED_SEARCH_PATH = "pg_catalog,public"


def key_options(values: dict[str, str] | None = None) -> str:
    """PGOPTIONS that put the PII keys in the session as loginvault.* settings, with the search
    path pinned (KEYED_SEARCH_PATH).

    `values` maps LOGINVAULT_*_KEY names to keys (default: the environment's, checked). Startup
    options are neither SQL nor logged, so the keys never reach compiled SQL, dbt's logs or
    the server's statement log.
    """
    values = values if values is not None else {name: check_key(name) for name in config.KEY_SETTINGS}
    keys = [setting_option(setting, values[name]) for name, setting in config.KEY_SETTINGS.items()]
    return " ".join([setting_option("search_path", KEYED_SEARCH_PATH), *keys])


def fingerprint(kind: str, key: str) -> str:
    """The registry's fingerprint of `key` (loginvault.key_fingerprint in SQL)."""
    return hmac.new(key.encode(), f"loginvault key fingerprint {kind}".encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Version:
    kind: str
    version: int
    fingerprint: str
    state: str  # pending | active | previous | retired
    kind_separated: bool
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None


def versions(conn: Connection[TupleRow]) -> list[Version]:
    rows = conn.execute(
        "SELECT kind, version, fingerprint, state, kind_separated, created_at, activated_at, retired_at"
        " FROM pii.key_versions ORDER BY kind, version"
    ).fetchall()
    return [Version(*row) for row in rows]


def in_state(all_versions: list[Version], kind: str, state: str) -> Version | None:
    return next((v for v in all_versions if v.kind == kind and v.state == state), None)


def mismatch(
    kind: str, key: str, registered: Version, env_name: str | None = None, known: Sequence[Version] = ()
) -> LoginvaultError:
    """The one sentence for a key that is not the registered one; when it is an older version of
    `known`, the sentence says so and how a shell left with it reloads."""
    name = env_name or ENV[kind]
    older = next((v for v in known if v.kind == kind and v.fingerprint == fingerprint(kind, key)), None)
    if older is not None and older.version < registered.version:
        return LoginvaultError(
            f"{name} is {kind} key version {older.version} ({older.state}), not the {registered.state} version"
            f" {registered.version}: this environment has the key from before a rotation (a shell: reload it"
            ' with `eval "$(make -s env)"` on the local stack; a service: give it the active key)'
        )
    return LoginvaultError(
        f"{name} is not the {registered.state} {kind} key: its fingerprint is"
        f" {fingerprint(kind, key)}, the {registered.state} key (version {registered.version}) has"
        f" {registered.fingerprint}"
    )


def check_environment(conn: Connection[TupleRow], kinds: tuple[str, ...] = KINDS) -> None:
    """The environment's keys are the registered active versions (a kind with none registered
    yet passes: its first build registers it), and no HMAC rotation is unfinished."""
    registered = versions(conn)
    for kind in kinds:
        key = check_key(ENV[kind])
        active = in_state(registered, kind, "active")
        if active and active.fingerprint != fingerprint(kind, key):
            raise mismatch(kind, key, active, known=registered)
    pending = in_state(registered, HMAC, "pending")
    if pending:
        raise LoginvaultError(
            f"an HMAC key rotation to version {pending.version} is unfinished: run `loginvault keys rotate hmac` again"
        )


def session_options(*, previous: bool = False) -> str:
    """PGOPTIONS-style startup options with the environment's keys (and, with `previous`, the
    _PREVIOUS ones that are set) as session settings."""
    options = key_options()
    if previous:
        for kind, name in PREVIOUS_ENV.items():
            if key_value(name):
                options += " " + setting_option(PREVIOUS_SETTINGS[kind], check_key(name))
    return options


# ---------------------------------------------------------------- the transform lock


def _lock_holder(conn: Connection[TupleRow]) -> str:
    row = conn.execute(
        "SELECT a.application_name, a.pid, a.backend_start FROM pg_locks AS l"
        " JOIN pg_stat_activity AS a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (TRANSFORM_LOCK,),
    ).fetchone()
    if not row:
        return "another transform, key rotation, retention run or erasure"
    name, pid, since = row
    when = f", since {since:%Y-%m-%d %H:%M:%S %Z}" if since else ""
    return f"{name or 'another login'} (pid {pid}{when})"


@contextlib.contextmanager
def exclusive(doing: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the transform lock (a session advisory lock, as the transformer's login) while the
    block runs: a transform's build, a key rotation and a retention run never run at the same
    time (an erasure takes the same lock in the recovery service's transaction,
    pii.serve_next_request). Waits up to `wait_seconds` for the holder, saying so once; then
    refuses with one sentence."""
    conn = db.connect(config.TRANSFORMER_ROLE, autocommit=True, options=f"-c application_name=loginvault-{doing}")
    try:
        deadline = time.monotonic() + wait_seconds
        said = False
        while not db.one_row(conn, "SELECT pg_try_advisory_lock(%s)", (TRANSFORM_LOCK,))[0]:
            holder = _lock_holder(conn)
            if time.monotonic() >= deadline:
                raise LoginvaultError(f"cannot {doing.replace('-', ' ')} now: {holder} holds the transform lock")
            if not said:
                log.info("waiting for %s to finish before the %s", holder, doing.replace("-", " "))
                said = True
            time.sleep(1.0)
        yield
    finally:
        conn.close()  # ends the session: the lock goes with it


# ---------------------------------------------------------------- status and retirement


@dataclass(frozen=True)
class Coverage:
    version: Version
    vault_rows: int
    mart_rows: int | None  # hmac only: the mart's rows carry the active version's tokens


def status(mart_schema: str) -> list[Coverage]:
    """Every registered version, with the vault and mart rows its key made."""
    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn:
        registered = versions(conn)
        counts: dict[tuple[str, int], int] = {}
        if db.one_row(conn, "SELECT to_regclass('pii.vault') IS NOT NULL")[0]:
            for kind, column in ((HMAC, "hmac_key_version"), (ENCRYPTION, "encryption_key_version")):
                for version, n in conn.execute(f"SELECT {column}, count(*) FROM pii.vault GROUP BY 1").fetchall():
                    counts[(kind, version)] = n
        mart = mart_schema
        mart_rows = 0
        if db.one_row(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{mart}.user_logins",))[0]:
            mart_rows = db.one_row(conn, f"SELECT count(*) FROM {mart}.user_logins")[0]  # noqa: S608
    return [
        Coverage(
            v,
            counts.get((v.kind, v.version), 0),
            (mart_rows if v.state == "active" else 0) if v.kind == HMAC else None,
        )
        for v in registered
    ]


def retire(kind: str) -> Version:
    """Retire the previous version of `kind` (the key administrator's pii.retire_key). HMAC: its
    old → new token map goes (old tokens stop resolving). Encryption: refused while a vault row
    still needs the previous key (checked here: the vault is the transformer's, which the key
    administrator's functions never read)."""
    with db.connect(config.TRANSFORMER_ROLE, autocommit=True) as conn, exclusive(f"retire-{kind}"):
        with conn.transaction():
            registered = versions(conn)
            previous = in_state(registered, kind, "previous")
            if previous is None:
                raise LoginvaultError(f"no previous {kind} key to retire (`loginvault keys status`)")
            if kind == ENCRYPTION:
                (left,) = db.one_row(
                    conn, "SELECT count(*) FROM pii.vault WHERE encryption_key_version = %s", (previous.version,)
                )
                if left:
                    raise LoginvaultError(
                        f"{left} vault rows are still encrypted with encryption key version {previous.version}:"
                        " finish `loginvault keys rotate encryption` first"
                    )
            else:
                conn.execute(f"SET LOCAL ROLE {config.TRANSFORMER_ROLE}")
                conn.execute("DELETE FROM pii.token_map WHERE from_version = %s", (previous.version,))
            conn.execute("SELECT pii.retire_key(%s)", (kind,))
    return previous
