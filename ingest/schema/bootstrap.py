"""The production bootstrap, as the admin PG_DSN: the schema brought to its head version (the
numbered migrations not yet applied, then the repeatable definitions when they changed:
ingest/schema/migrate.py), and a login of its own for each workload whose DSN is given.

One transaction under an advisory lock: processes that start together (a pod fleet, a
rollout, several `make ingest`) bootstrap one after the other, and a failed bootstrap changes
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ingest import LoginvaultError, config, db, settings
from ingest.schema import migrate

if TYPE_CHECKING:
    import psycopg

# pg_advisory_xact_lock key of the bootstrap: hashtext('loginvault.bootstrap') is not stable
# across major versions, so a constant.
LOCK_KEY = 0x4C56_4253  # "LVBS"


def bootstrap(
    admin_dsn: str,
    mart_schema: str = "public",
    daily_budget: int | None = None,
    logins: Mapping[str, str] | None = None,
) -> migrate.Applied:
    """Migrate the schema to head (one transaction); then, for each role → DSN of `logins`, make the DSN's
    user a login of its own with the DSN's password, a member of that role only. What it applied.

    `daily_budget`: the default recovery lookups per login per day (None keeps the current one,
    200 on a new database)."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    try:
        conn = psycopg.connect(admin_dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise db.cannot_connect(admin_dsn, exc) from None
    try:
        with migrate.sqlalchemy_connection(conn) as connection, connection.begin():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute(
                "SELECT set_config('loginvault.mart_schema', %s, true),"
                " set_config('loginvault.recovery_daily_budget', %s, true)",
                (mart_schema, "" if daily_budget is None else str(daily_budget)),
            )
            applied = migrate.migrate(connection, mart_schema)
            for role, dsn in (logins or {}).items():
                ensure_login(conn, role, dsn)
    except psycopg.OperationalError as exc:
        raise db.cannot_connect(admin_dsn, exc) from None
    except psycopg.Error as exc:
        raise LoginvaultError(f"bootstrap SQL failed: {db.first_line(exc)}") from None
    except DBAPIError as exc:
        raise LoginvaultError(f"bootstrap SQL failed: {db.first_line(exc.orig or exc)}") from None
    finally:
        conn.close()
    return applied


def ensure_login(conn: psycopg.Connection[Any], role: str, dsn: str) -> None:
    """The DSN's user as a login (created, or its password set) that is a member of `role`
    and of no other role, and no superuser. The password reaches the server as a SCRAM
    verifier computed here: the statement (which a statement log may keep) never holds it."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    workload = config.WORKLOADS[role]
    params = conninfo_to_dict(dsn)
    login, password = str(params.get("user") or ""), str(params.get("password") or "")
    if not login:
        raise LoginvaultError(f"{workload.dsn_env} names no user: cannot create {workload.who}'s login")
    admin = db.one_row(conn, "SELECT current_user")[0]
    if login in config.WORKLOADS or login in (config.RAW_OWNER_ROLE, config.RECOVERY_ROLE):
        raise LoginvaultError(
            f"{workload.dsn_env} logs in as the role {login} itself: use a login that is a member of {role}"
        )
    if login == admin:
        raise LoginvaultError(
            f"{workload.dsn_env} logs in as the admin {login}: give {workload.who} a login of its own"
        )
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
    if row and row[0]:
        raise LoginvaultError(f"{workload.dsn_env} logs in as {login}, a superuser: give {workload.who} its own login")
    attributes = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {}"
    ).format(sql.Literal(workload.connection_limit))
    if password:
        verifier = conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256").decode()
        attributes += sql.SQL(" PASSWORD {}").format(sql.Literal(verifier))
    verb = sql.SQL("ALTER ROLE") if row else sql.SQL("CREATE ROLE")
    conn.execute(sql.SQL("{} {} {}").format(verb, sql.Identifier(login), attributes))
    others = [
        r[0]
        for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members AS m JOIN pg_roles AS g ON g.oid = m.roleid"
            " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) AND g.rolname <> %s",
            (login, role),
        )
    ]
    if others:
        raise LoginvaultError(
            f"{workload.dsn_env} logs in as {login}, which is also a member of {', '.join(sorted(others))}:"
            f" {workload.who}'s login must belong to {role} only"
        )
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(login)))
    if role != config.TRANSFORMER_ROLE:
        # A policy on a table another role owns (the transformer's marts, say) would run its
        # owner's code in this login's session: with row_security off, such a table refuses the
        # read instead. The transformer owns what it reads (but raw, which its checks cover).
        conn.execute(sql.SQL("ALTER ROLE {} SET row_security = off").format(sql.Identifier(login)))


def workload_logins() -> dict[str, str]:
    """role → DSN, for each LOGINVAULT_<ROLE>_DSN set in the environment."""
    return {role: dsn for role, w in config.WORKLOADS.items() if (dsn := settings.env(w.dsn_env))}


def run(mart_schema: str, daily_budget: int | None) -> None:
    """`loginvault bootstrap`: as PG_DSN, with a login for each LOGINVAULT_<ROLE>_DSN that is set."""
    logins = workload_logins()
    applied = bootstrap(settings.require("PG_DSN"), mart_schema, daily_budget=daily_budget, logins=logins)
    made = ", ".join(f"{conninfo_user(dsn)} ({role})" for role, dsn in logins.items())
    print(f"bootstrap: done; {applied.summary()}{'; logins: ' + made if made else ''}", file=sys.stderr)


def conninfo_user(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn).get("user", "?"))
