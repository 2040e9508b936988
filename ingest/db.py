"""Connections as a workload's own login (its DSN, checked before use), and the one sentence for a
database that cannot be reached, with the DSN's password left out of every message."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ingest import LoginvaultError, config, settings

if TYPE_CHECKING:  # psycopg is imported where a connection is made: a command without one starts faster
    from psycopg import Connection
    from psycopg.abc import Params, QueryNoTemplate
    from psycopg.rows import TupleRow

# Where a user who runs the local stack looks first when the database does not answer.
DOWN_HINT = "is it running? (`make stack-up` starts the local one)"


def role_dsn(role: str) -> str:
    """The DSN of a workload's own login: LOGINVAULT_<ROLE>_DSN. PG_DSN (the admin) is the
    bootstrap's only: no workload connects as the admin or acts as another role."""
    workload = config.WORKLOADS[role]
    dsn = settings.require(
        workload.dsn_env,
        f"{workload.who} connects with a login of its own, a member of {role} only"
        ' (`eval "$(make -s env)"` sets the local stack\'s)',
    )
    if "://" not in dsn:
        raise LoginvaultError(
            f"{workload.dsn_env} must be a URL such as postgresql://user:password@host:5432/loginvault"
        )
    return dsn


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        user, sep, _ = parts.netloc.rpartition("@")
        if sep and ":" in user:
            parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{parts.netloc.rpartition('@')[2]}")
        return urlunsplit(parts)
    # key=value: password='quoted value' or password=plain
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def first_line(exc: BaseException) -> str:
    """An error's first line: PostgreSQL's DETAIL lines can quote a row, i.e. cleartext PII."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def cannot_connect(dsn: str, exc: BaseException) -> LoginvaultError:
    """The one sentence for a database that cannot be reached or refuses the login."""
    reason = first_line(exc)
    hint = f": {DOWN_HINT}" if "refused" in reason.lower() or "timeout" in reason.lower() else ""
    return LoginvaultError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {reason}{hint}")


def libpq_env(dsn: str) -> dict[str, str]:
    """PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for a DSN: what dbt's profile and psql read."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise LoginvaultError(
            f"cannot parse the DSN {redact_dsn(dsn)}: expected postgresql://user:password@host:port/db"
        ) from None
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE"}
    return {env_name: str(params[key]) for key, env_name in names.items() if params.get(key) not in (None, "")}


def connect(role: str, *, options: str | None = None, autocommit: bool = False) -> Connection[TupleRow]:
    """A psycopg connection as `role`'s workload login (LOGINVAULT_<ROLE>_DSN), checked by
    `check_login`. `options`: extra startup options (e.g. the keys as session settings: they
    travel in the startup packet, never in SQL text or a log)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dsn = role_dsn(role)
    try:
        # libpq's parameters, of all types: passed on as they are.
        params: dict[str, Any] = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise LoginvaultError(
            f"cannot parse {config.WORKLOADS[role].dsn_env} ({redact_dsn(dsn)}):"
            " expected postgresql://user:password@host:port/db"
        ) from None
    # Always given, if only empty: libpq would otherwise take PGOPTIONS from the environment,
    # where the transform puts the keys for dbt (runner.dbt_environment). No session of ours but
    # dbt's and those asked for (`options`) holds them.
    params["options"] = f"{params.get('options', '')} {options or ''}".strip()
    params.setdefault("connect_timeout", 10)
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise cannot_connect(dsn, exc) from None
    try:
        check_login(conn, role)
    except BaseException:
        conn.close()
        raise
    return conn


def one_row(conn: Connection[TupleRow], query: QueryNoTemplate, params: Params | None = None) -> TupleRow:
    """The row of a query that always returns one (an aggregate, a function's result)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LoginvaultError("a query that returns one row returned none")
    return row


def check_login(conn: Connection[TupleRow], role: str) -> None:
    """The session's login is a member of `role` and no superuser: a workload never acts with
    more than its role may (a superuser would skip every grant, and could run anything)."""
    import psycopg

    workload = config.WORKLOADS[role]
    try:
        row = conn.execute(
            "SELECT session_user, rolsuper, pg_has_role(session_user, %s, 'MEMBER')"
            " FROM pg_roles WHERE rolname = session_user",
            (role,),
        ).fetchone()
    except psycopg.errors.UndefinedObject:
        raise LoginvaultError(
            f"role {role} does not exist in this database: run the bootstrap (`make stack-up`, or"
            " `loginvault bootstrap` with the admin PG_DSN)"
        ) from None
    finally:
        if not conn.autocommit:
            conn.rollback()
    if row is None:  # the session's login is a role: pg_roles has it
        raise LoginvaultError(f"{workload.dsn_env}: the login of this session is not in pg_roles")
    login, superuser, member = row
    if superuser:
        raise LoginvaultError(
            f"{workload.dsn_env} logs in as {login}, a superuser: {workload.who} must use a login of its own,"
            f" a member of {role} only (`loginvault bootstrap` creates it from the DSN)"
        )
    if not member:
        raise LoginvaultError(f"{workload.dsn_env} logs in as {login}, which is not a member of {role}")


def check_workload(role: str) -> None:
    """Pre-flight of a command: its login connects and is what `check_login` requires."""
    connect(role, autocommit=True).close()
