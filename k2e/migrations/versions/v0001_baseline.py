"""The baseline: the schema the release before migrations (796de42) created.

Revision ID: 0001
Revises:
"""

from alembic import op

from k2e.migrations import baseline

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline.metadata.create_all(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("k2e's store is never downgraded")
