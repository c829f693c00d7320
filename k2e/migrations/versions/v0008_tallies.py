"""Metrics: the tally ledger that GET /metrics counts and its folded totals
(k2e.jobs.tallies).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "k2e_tally_totals" not in existing:
        op.create_table(
            "k2e_tally_totals",
            sa.Column("event", sa.String(16), primary_key=True),
            sa.Column("queue", sa.String(32), primary_key=True),
            sa.Column("reason", sa.String(32), primary_key=True),
            sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("count", sa.BigInteger, nullable=False),
            sa.Column("total", sa.Float, nullable=False),
        )
    if "k2e_tallies" in existing:
        return
    op.create_table(
        "k2e_tallies",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("value", sa.Float),
    )
    op.create_index("ix_k2e_tallies_event", "k2e_tallies", ["event", "queue", "reason"])


def downgrade() -> None:
    op.drop_table("k2e_tallies")
    op.drop_table("k2e_tally_totals")
