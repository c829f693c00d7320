"""Observability: a job's request id and trace context; the fleet's accelerator, current
jobs and memory in the worker registry.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JOB_COLUMNS = (("request_id", sa.String(128)), ("trace_context", sa.String(128)))
WORKER_COLUMNS = (
    ("accelerator", sa.String(16)),
    ("current_jobs", sa.String(400)),
    ("rss_bytes", sa.BigInteger()),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in (("k2e_jobs", JOB_COLUMNS), ("k2e_workers", WORKER_COLUMNS)):
        present = {c["name"] for c in inspector.get_columns(table)}
        for name, type_ in columns:
            if name not in present:
                op.add_column(table, sa.Column(name, type_))


def downgrade() -> None:
    for table, columns in (("k2e_workers", WORKER_COLUMNS), ("k2e_jobs", JOB_COLUMNS)):
        for name, _ in columns:
            op.drop_column(table, name)
