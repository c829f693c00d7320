"""Provenance: how each job was made (digests, seeds, versions, worker).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "provenance" not in {c["name"] for c in inspector.get_columns("k2e_jobs")}:
        op.add_column("k2e_jobs", sa.Column("provenance", sa.JSON))


def downgrade() -> None:
    op.drop_column("k2e_jobs", "provenance")
