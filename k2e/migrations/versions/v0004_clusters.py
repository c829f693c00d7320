"""Clusters: a job's gang placements and the members of its newest one.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "gang" not in {c["name"] for c in inspector.get_columns("k2e_jobs")}:
        op.add_column("k2e_jobs", sa.Column("gang", sa.Integer))
    if "k2e_job_members" not in set(inspector.get_table_names()):
        op.create_table(
            "k2e_job_members",
            sa.Column("job_id", sa.String(64), primary_key=True),
            sa.Column("role", sa.String(16), primary_key=True),
            sa.Column("index", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("gang", sa.Integer, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("owner", sa.String(128)),
            sa.Column("node", sa.String(128)),
            sa.Column("address", sa.String(280)),
            sa.Column("beat_at", sa.DateTime(timezone=True)),
        )


def downgrade() -> None:
    op.drop_table("k2e_job_members")
    op.drop_column("k2e_jobs", "gang")
