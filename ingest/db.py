"""Connections as a workload's own login, checked before use, and the one sentence for a
database that cannot be reached."""

from __future__ import annotations

from ingest import LoginvaultError, config


def connect(role: str, *, options: str | None = None, autocommit: bool = False):
    """A psycopg connection as `role`'s workload login (LOGINVAULT_<ROLE>_DSN), checked by
    `check_login`. `options`: extra startup options (e.g. the keys as session settings: they
    travel in the startup packet, never in SQL text or a log)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    dsn = config.role_dsn(role)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise LoginvaultError(
            f"cannot parse {config.WORKLOADS[role].dsn_env} ({config.redact_dsn(dsn)}):"
            " expected postgresql://user:password@host:port/db"
        ) from None
    if options:
        params["options"] = f"{params.get('options', '')} {options}".strip()
    params.setdefault("connect_timeout", 10)
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise config.cannot_connect(dsn, exc) from None
    try:
        check_login(conn, role)
    except BaseException:
        conn.close()
        raise
    return conn


def check_login(conn, role: str) -> None:
    """The session's login is a member of `role` and no superuser: a workload never acts with
    more than its role may (a superuser would skip every grant, and could run anything)."""
    import psycopg

    workload = config.WORKLOADS[role]
    try:
        login, superuser, member = conn.execute(
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
