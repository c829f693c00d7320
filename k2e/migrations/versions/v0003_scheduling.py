"""Scheduling: job priorities, preemption and suspension, the worker registry, and the
row scheduling passes take turns on.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("k2e_jobs")}
    for column in (
        sa.Column("priority", sa.Integer),
        sa.Column("preemptions", sa.Integer),
        sa.Column("preempted_at", sa.DateTime(timezone=True)),
        sa.Column("yield_request", sa.String(16)),
    ):
        if column.name not in have:
            op.add_column("k2e_jobs", column)
    if "ix_k2e_jobs_turns" not in {i["name"] for i in inspector.get_indexes("k2e_jobs")}:
        op.create_index("ix_k2e_jobs_turns", "k2e_jobs", ["tenant", "queue", "dispatched_at"])
    tables = set(inspector.get_table_names())
    if "k2e_workers" not in tables:
        op.create_table(
            "k2e_workers",
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("node", sa.String(128), nullable=False),
            sa.Column("queues", sa.String(200), nullable=False),
            sa.Column("slots", sa.Integer, nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_k2e_workers_seen_at", "k2e_workers", ["seen_at"])
    if "k2e_scheduler" not in tables:
        op.create_table(
            "k2e_scheduler",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("passed_at", sa.DateTime(timezone=True)),
        )


def downgrade() -> None:
    op.drop_table("k2e_scheduler")
    op.drop_index("ix_k2e_workers_seen_at", table_name="k2e_workers")
    op.drop_table("k2e_workers")
    op.drop_index("ix_k2e_jobs_turns", table_name="k2e_jobs")
    for name in ("yield_request", "preempted_at", "preemptions", "priority"):
        op.drop_column("k2e_jobs", name)
