"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from ingest.schema.migrate import execute_sql_file

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file(__file__, "${up_revision}_CHANGE.sql")


def downgrade() -> None:
    raise NotImplementedError("loginvault's migrations go forward only")
