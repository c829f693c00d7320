"""Webhooks: tenants' endpoints, and the outbox of their deliveries.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "k2e_webhooks" not in tables:
        op.create_table(
            "k2e_webhooks",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(32), nullable=False, unique=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("url", sa.String(2048), nullable=False),
            sa.Column("events", sa.JSON, nullable=False),
            sa.Column("secret", sa.String(128), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_k2e_webhooks_tenant", "k2e_webhooks", ["tenant"])
    if "k2e_webhook_deliveries" not in tables:
        op.create_table(
            "k2e_webhook_deliveries",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(32), nullable=False, unique=True),
            sa.Column("webhook_id", sa.String(32), nullable=False),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("event_id", sa.String(40), nullable=False),
            sa.Column("type", sa.String(32), nullable=False),
            sa.Column("body", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
            sa.Column("claimed_by", sa.String(128)),
            sa.Column("claimed_until", sa.DateTime(timezone=True)),
            sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
            sa.Column("response_status", sa.Integer),
            sa.Column("response_excerpt", sa.Text),
            sa.Column("error", sa.Text),
            sa.Column("delivered_at", sa.DateTime(timezone=True)),
        )
        op.create_index(
            "ix_k2e_webhook_deliveries_webhook_id", "k2e_webhook_deliveries", ["webhook_id"]
        )
        op.create_index(
            "ix_k2e_webhook_deliveries_next_attempt_at",
            "k2e_webhook_deliveries",
            ["next_attempt_at"],
        )


def downgrade() -> None:
    op.drop_table("k2e_webhook_deliveries")
    op.drop_table("k2e_webhooks")
