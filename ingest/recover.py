"""Audited PII recovery, as a privacy officer's own login (a member of loginvault_pii_admin):
token → value and value → token, both through the database's recovery functions.

The functions (sql/bootstrap/60_recovery.sql: pii.recover_value, pii.recover_token) run as a NOLOGIN owner
that alone may read the vault; they take who, when and from where from the session, count the
login's daily budget, and write the audit row in the transaction of the lookup, so there is no
answer without its audit row, and no way around it. The keys travel as session settings in the
startup packet. The cleartext goes to the caller's stdout only: never to a log, an error or the
audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest import LoginvaultError, config, db, keys

OUTCOMES = ("found", "found_pre_rotation", "not_found", "decrypt_failed", "wrong_key", "over_budget", "invalid")


@dataclass(frozen=True)
class Recovery:
    direction: str  # token_to_value | value_to_token
    outcome: str  # one of OUTCOMES
    kind: str | None = None
    token: str | None = None
    values: list[tuple[str, str]] = field(default_factory=list)  # token_to_value: (kind, cleartext)
    logins: int = 0  # value_to_token: user_logins rows carrying the token
    current_token: str | None = None  # found_pre_rotation: the token that replaced it

    @property
    def found(self) -> bool:
        return self.outcome.startswith("found")


def recover(*, reason: str, token: str | None = None, value: str | None = None, kind: str | None = None) -> Recovery:
    """token → [(kind, value)], or (value, kind) → (token, number of logins carrying it)."""
    import psycopg

    if not reason or not reason.strip():
        raise LoginvaultError("a reason is required (--reason): it is written to the recovery audit")
    if value is None and (not token or len(token) != 64 or any(c not in "0123456789abcdef" for c in token)):
        raise LoginvaultError("a token is 64 lowercase hex characters")
    with db.connect(config.PII_ADMIN_ROLE, options=keys.session_options(previous=True), autocommit=True) as conn:
        try:
            if value is not None:
                rows = conn.execute(
                    "SELECT token, logins, outcome FROM pii.recover_token(%s::text, %s::text, %s::text)",
                    (kind, value, reason),
                ).fetchall()
                token_, logins, outcome = rows[0]
                result = Recovery("value_to_token", outcome, kind, token_, logins=logins or 0)
            else:
                rows = conn.execute(
                    "SELECT kind, value, outcome, current_token FROM pii.recover_value(%s::text, %s::text)",
                    (token, reason),
                ).fetchall()
                found = [(k, v) for k, v, o, _ in rows if o.startswith("found")]
                result = Recovery("token_to_value", rows[0][2], rows[0][0], token, found, current_token=rows[0][3])
            if result.outcome == "wrong_key":
                keys.check_environment(conn)  # names the kind and both fingerprints
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(
                f"not authorized to recover PII ({db.first_line(exc)}): only members of {config.PII_ADMIN_ROLE} may"
            ) from None
        except psycopg.errors.UndefinedFunction:
            raise LoginvaultError("the recovery functions do not exist: run the bootstrap") from None
        except psycopg.Error as exc:  # e.g. a tampered vault, a missing key: the database's sentence
            raise LoginvaultError(db.first_line(exc)) from None
    return result
