"""The record of the repeatable definitions applied: 0002_schema_definitions.sql.

Revision ID: 0002
Revises: 0001
"""

from ingest.schema.migrate import execute_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file(__file__, "0002_schema_definitions.sql")


def downgrade() -> None:
    raise NotImplementedError("loginvault's migrations go forward only")
