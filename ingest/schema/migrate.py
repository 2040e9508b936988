"""The schema's versions, applied by the bootstrap on its own connection, in its one
transaction, under its advisory lock: alembic's numbered one-off migrations
(migrations/versions/NNNN_*.py, each running the .sql file beside it), then the repeatable
definitions (repeatable/*.sql: functions, views, grants, guards, the shape declaration), then
the settings (settings.sql).

The version table is loginvault.alembic_version (alembic's). The repeatable definitions are
applied again, all of them in name order, when the checksum of any of them (its text, the mart
schema's name and the database's own privileges) differs from the one recorded in
loginvault.schema_definitions; else nothing is run.

A database of loginvault 0.1.0 (commit c5aed21, un-versioned: its schemas but no version
table) is taken over: checked to have the baseline's tables and columns, stamped at the
baseline (0001), then migrated. An older one is refused (OlderSchema): the bootstrap of
0.1.0 converts it first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest import LoginvaultError, db

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    Psycopg = psycopg.Connection[Any]

HERE = Path(__file__).parent
MIGRATIONS_DIR = HERE / "migrations"
REPEATABLE_DIR = HERE / "repeatable"
SETTINGS_SQL = HERE / "settings.sql"
# The baseline's tables and columns ("relation kind column type not_null", one a line): what
# a database of 0.1.0 must have to be taken over (tests/integration/test_migrations.py makes
# sure a new database has exactly these).
PREVIOUS_SHAPE = MIGRATIONS_DIR / "previous_shape.txt"
BASELINE = "0001"
CONTEXT_OPTIONS: dict[str, Any] = {
    "version_table": "alembic_version",
    "version_table_schema": "loginvault",
    "transaction_per_migration": False,
}
# Schemas of loginvault's own: one of them without a version table is an un-versioned database.
OWN_SCHEMAS = ("raw", "pii", "loginvault")
_SHAPE_SQL = """
SELECT n.nspname || '.' || c.relname, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       a.attnotnull::text
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND NOT (n.nspname = 'loginvault' AND c.relname LIKE 'guard\\_%%')
  AND (n.nspname || '.' || c.relname) NOT IN ('loginvault.alembic_version', 'loginvault.schema_definitions')
"""


class OlderSchema(LoginvaultError):
    """An un-versioned database that is not of 0.1.0's shape."""


@dataclass
class Applied:
    """What one bootstrap changed: the migrations run, the definitions applied again."""

    before: str | None
    head: str
    migrations: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    taken_over: bool = False

    def summary(self) -> str:
        parts = [f"schema at {self.head}"]
        if self.taken_over:
            parts.append("un-versioned 0.1.0 schema taken over at the baseline")
        parts.append(
            f"migrations applied: {', '.join(self.migrations)}" if self.migrations else "no migration to apply"
        )
        parts.append(
            f"{len(self.definitions)} repeatable definitions applied" if self.definitions else "definitions unchanged"
        )
        return "; ".join(parts)


def execute_sql_file(migration: str, name: str) -> None:
    """Run the SQL file `name` beside the migration module `migration` (its __file__) on the
    migration's connection, as the driver gets it (no bind-parameter parsing)."""
    from alembic import op

    driver(op.get_bind()).execute((Path(migration).parent / name).read_text())


def driver(connection: sqlalchemy.Connection) -> Psycopg:
    """The psycopg connection under a SQLAlchemy one (the bootstrap's own)."""
    conn = connection.connection.driver_connection
    if conn is None:
        raise LoginvaultError("the migration's database connection is closed")
    return conn  # type: ignore[no-any-return]  # SQLAlchemy types the driver's connection as Any


@contextmanager
def sqlalchemy_connection(conn: Psycopg) -> Iterator[sqlalchemy.Connection]:
    """A SQLAlchemy Connection over the psycopg connection `conn` (which it closes at the end)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: conn, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def alembic_config(connection: sqlalchemy.Connection | None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(connection: sqlalchemy.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts=CONTEXT_OPTIONS).get_current_revision()


def head_revision(script: ScriptDirectory | None = None) -> str:
    """The newest migration's revision (of `script`, else of the package's migrations)."""
    if script is None:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config(None))
    head = script.get_current_head()
    if head is None:
        raise LoginvaultError(f"no schema migration found in {MIGRATIONS_DIR}: the package is incomplete")
    return head


def migrate(connection: sqlalchemy.Connection, mart_schema: str) -> Applied:
    """Bring the database of `connection` (a SQLAlchemy Connection in a transaction) to head,
    apply the repeatable definitions if they changed, write the settings."""
    # alembic narrates each step (and its plugins, on import) at INFO; the bootstrap's own line
    # says what was applied.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.script import ScriptDirectory

    conn = driver(connection)
    cfg = alembic_config(connection)
    before = current_revision(connection)
    taken_over = False
    if before is None and unversioned(conn):
        check_previous_shape(conn)
        command.stamp(cfg, BASELINE)
        before, taken_over = BASELINE, True
    elif before is None:
        # A new database: the version table's schema first (the admin's, as the baseline's
        # loginvault schema would be).
        conn.execute("CREATE SCHEMA IF NOT EXISTS loginvault")
    script = ScriptDirectory.from_config(cfg)
    head = head_revision(script)
    pending = [rev.revision for rev in script.iterate_revisions(head, before or "base")] if before != head else []
    command.upgrade(cfg, "head")
    applied = Applied(before, current_revision(connection) or "", list(reversed(pending)), taken_over=taken_over)
    applied.definitions = apply_definitions(conn, mart_schema)
    conn.execute(SETTINGS_SQL.read_text())
    return applied


def unversioned(conn: Psycopg) -> bool:
    """loginvault's schemas are there, alembic's version table is not."""
    found = db.one_row(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (list(OWN_SCHEMAS),))[0]
    return bool(found)


def previous_shape() -> set[tuple[str, ...]]:
    return {tuple(line.split()) for line in PREVIOUS_SHAPE.read_text().splitlines() if line and line[0] != "#"}


def shape(conn: Psycopg) -> set[tuple[str, ...]]:
    """The tables of loginvault's schemas (not partitions, guards or the versions' tables) as
    (relation, kind, column, type with no spaces, not null)."""
    return {
        (rel, kind, col, typ.replace(" ", "_"), nn)
        for rel, kind, col, typ, nn in conn.execute(_SHAPE_SQL, (list(OWN_SCHEMAS),))
    }


def check_previous_shape(conn: Psycopg) -> None:
    """OlderSchema unless every table and column of the baseline is there as in 0.1.0."""
    missing = sorted(previous_shape() - shape(conn))
    if missing:
        rel, kind, col, typ, nn = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise OlderSchema(
            f"this database has loginvault's schemas but no schema version, and is older than loginvault 0.1.0:"
            f" {rel}.{col} ({typ.replace('_', ' ')}{', not null' if nn == 'true' else ''}) is missing or differs{more};"
            " run the bootstrap of loginvault 0.1.0 (commit c5aed21) on it first, then this one"
        )


def repeatable_definitions() -> dict[str, bytes]:
    """name → text of each repeatable definition, in name order."""
    return {path.name: path.read_bytes() for path in sorted(REPEATABLE_DIR.glob("*.sql"))}


def definition_checksums(definitions: dict[str, bytes], mart_schema: str, database_acl: str) -> dict[str, str]:
    """name → sha256 of each repeatable definition with the mart schema's name and the
    database's own privileges: a new mart schema applies them again (the marts, their grants
    and the declaration depend on it), and so does a database whose privileges are not what
    they left (they live outside the database: a copy from a template or a restored dump lacks
    them, and a GRANT on the database is undone)."""
    context = f"{mart_schema}\n{database_acl}\n".encode()
    return {name: hashlib.sha256(context + text).hexdigest() for name, text in definitions.items()}


def database_acl(conn: Psycopg) -> str:
    return str(
        db.one_row(conn, "SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()")[0]
    )


def apply_definitions(conn: Psycopg, mart_schema: str) -> list[str]:
    """Every repeatable definition in name order when any checksum differs from the recorded
    ones (then recorded); nothing otherwise. The names applied."""
    definitions = repeatable_definitions()
    wanted = definition_checksums(definitions, mart_schema, database_acl(conn))
    recorded = dict(conn.execute("SELECT name, sha256 FROM loginvault.schema_definitions").fetchall())
    if recorded == wanted:
        return []
    for text in definitions.values():
        conn.execute(text.decode())
    # The definitions may change the database's privileges: record what they left.
    applied = definition_checksums(definitions, mart_schema, database_acl(conn))
    conn.execute("DELETE FROM loginvault.schema_definitions")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO loginvault.schema_definitions (name, sha256, applied_at) VALUES (%s, %s, now())",
            list(applied.items()),
        )
    return list(applied)
