"""Audited PII recovery, as loginvault_pii_admin: token → value, and value → token.

Every call appends a row to pii.recovery_audit (who, when, which token, why) in the same
transaction as the lookup, so there is no recovery without its audit row. The cleartext
goes to the caller's stdout only: never to a log, an error message or the audit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import LoginvaultError, config, masking


@dataclass(frozen=True)
class Recovery:
    direction: str  # token_to_value | value_to_token
    kind: str | None
    token: str
    found: bool
    value: str | None = None  # token_to_value only
    logins: int = 0  # value_to_token only: user_logins rows carrying the token


def _connect(keys: dict[str, str]):
    """A session acting as the pii-admin role, with the keys as session settings."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dsn = config.role_dsn(config.PII_ADMIN_ROLE)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise LoginvaultError(f"cannot parse the DSN {config.redact_dsn(dsn)}") from None
    params["options"] = f"{params.get('options', '')} {config.key_options(keys)}".strip()
    try:
        conn = psycopg.connect(**params, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise config.cannot_connect(dsn, exc) from None
    role, allowed = conn.execute(
        "SELECT current_user, pg_has_role(current_user, %s, 'MEMBER')", (config.PII_ADMIN_ROLE,)
    ).fetchone()
    if not allowed:
        conn.close()
        raise LoginvaultError(f"role {role} is not authorized to recover PII: only {config.PII_ADMIN_ROLE} may")
    return conn


def _audit(cur, direction: str, kind: str | None, token: str, found: bool, reason: str) -> None:
    cur.execute(
        f"INSERT INTO {config.PII_SCHEMA}.recovery_audit (direction, kind, token, found, reason)"
        " VALUES (%s, %s, %s, %s, %s)",
        (direction, kind, token, found, reason),
    )


def recover(*, reason: str, token: str | None = None, value: str | None = None, kind: str | None = None) -> Recovery:
    """token → (kind, value), or (value, kind) → (token, number of logins carrying it)."""
    import psycopg

    if not reason or not reason.strip():
        raise LoginvaultError("a reason is required (--reason): it is written to the recovery audit")
    keys = {name: config.check_key(name) for name in config.KEY_ENVS}
    if value is not None:
        token = masking.token(value, kind, keys[config.HMAC_KEY_ENV])
        if token is None:
            raise LoginvaultError(f"that is not a valid {kind.replace('_', ' ')}, so no login can carry it")
    elif not token or len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise LoginvaultError("a token is 64 lowercase hex characters")

    with _connect(keys) as conn:
        try:
            with conn.transaction(), conn.cursor() as cur:
                if value is not None:
                    column = "masked_ip" if kind == "ip" else "masked_device_id"
                    cur.execute(
                        f"SELECT count(*) FROM {config.MART_SCHEMA}.user_logins WHERE {column} = %s",  # noqa: S608 (names are constants)
                        (token,),
                    )
                    logins = cur.fetchone()[0]
                    result = Recovery("value_to_token", kind, token, logins > 0, logins=logins)
                else:
                    cur.execute(
                        f"SELECT kind, pgp_sym_decrypt(ciphertext, current_setting('loginvault.encryption_key'))"
                        f" FROM {config.PII_SCHEMA}.vault WHERE token = %s ORDER BY kind",
                        (token,),
                    )
                    row = cur.fetchone()
                    result = Recovery(
                        "token_to_value", row[0] if row else None, token, row is not None, value=row[1] if row else None
                    )
                _audit(cur, result.direction, result.kind, token, result.found, reason.strip())
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(f"not authorized to recover PII: {config.first_line(exc)}") from None
        except psycopg.errors.UndefinedTable:
            raise LoginvaultError("the vault or mart does not exist yet: run `make transform` first") from None
        except psycopg.errors.ExternalRoutineInvocationException:
            raise LoginvaultError(
                "the vault entry cannot be decrypted with LOGINVAULT_ENCRYPTION_KEY: wrong key?"
            ) from None
    return result
