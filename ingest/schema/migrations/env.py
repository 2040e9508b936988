"""alembic's environment for loginvault's migrations: always online, on the connection the
bootstrap passes in `config.attributes["connection"]` (its transaction, under its advisory
lock), with the version table loginvault.alembic_version. There is no alembic.ini: the
bootstrap builds the Config (ingest/schema/migrate.py)."""

from alembic import context

from ingest.schema import migrate

options = migrate.CONTEXT_OPTIONS
context.configure(
    connection=context.config.attributes["connection"],
    version_table=options["version_table"],
    version_table_schema=options["version_table_schema"],
    transaction_per_migration=options["transaction_per_migration"],
)
with context.begin_transaction():
    context.run_migrations()
