"""The baseline: the schema of loginvault 0.1.0 (commit c5aed21), 0001_baseline.sql.

Revision ID: 0001
Revises:
"""

from ingest.schema.migrate import execute_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file(__file__, "0001_baseline.sql")


def downgrade() -> None:
    raise NotImplementedError("loginvault's migrations go forward only")
