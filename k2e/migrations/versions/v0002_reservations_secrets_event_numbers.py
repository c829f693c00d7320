"""Upload reservations, the server's secrets, events numbered per job; and the data
fix-ups start-up used to repeat on every start, done once.

Revision ID: 0002
Revises: 0001

Tolerant of stores a development build between the two releases already extended:
each table, column and index is added only when missing.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# As they are at this revision (a later rename must not change what this one did).
TERMINAL = ("succeeded", "failed", "cancelled")
END = "end"
DEFAULT_TENANT = "default"

jobs = sa.table(
    "k2e_jobs",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("dispatched_at", sa.DateTime(timezone=True)),
    sa.column("tenant", sa.String),
    sa.column("uploads", sa.String),
    sa.column("events_num", sa.Integer),
)
events = sa.table(
    "k2e_job_events",
    sa.column("seq", sa.Integer),
    sa.column("job_id", sa.String),
    sa.column("num", sa.Integer),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("kind", sa.String),
    sa.column("message", sa.Text),
)


def upgrade() -> None:
    conn = op.get_bind()
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if "k2e_upload_reservations" not in tables:
        op.create_table(
            "k2e_upload_reservations",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_k2e_upload_reservations_tenant", "k2e_upload_reservations", ["tenant"])
    if "k2e_secrets" not in tables:
        op.create_table(
            "k2e_secrets",
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("value", sa.String(128), nullable=False),
        )
    if "events_num" not in {c["name"] for c in inspector.get_columns("k2e_jobs")}:
        op.add_column("k2e_jobs", sa.Column("events_num", sa.Integer))
    if "num" not in {c["name"] for c in inspector.get_columns("k2e_job_events")}:
        op.add_column("k2e_job_events", sa.Column("num", sa.Integer))
    _drop_duplicate_unique_indexes(inspector)

    # Jobs that ended before the event stream existed get their "end" event.
    has_end = sa.exists().where(events.c.job_id == jobs.c.id, events.c.kind == END)
    conn.execute(
        sa.insert(events).from_select(
            ["job_id", "at", "kind", "message"],
            sa.select(
                jobs.c.id,
                sa.func.coalesce(jobs.c.finished_at, jobs.c.updated_at),
                sa.literal(END),
                sa.literal(""),
            ).where(jobs.c.status.in_(TERMINAL), ~has_end),
        )
    )
    _number_events(conn)
    # Rows from before tenancy: the default tenant's, already handed to the broker.
    conn.execute(sa.update(jobs).where(jobs.c.tenant.is_(None)).values(tenant=DEFAULT_TENANT))
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.uploads.is_(None))
        .values(dispatched_at=sa.func.coalesce(jobs.c.dispatched_at, jobs.c.created_at), uploads="")
    )


def _drop_duplicate_unique_indexes(inspector: sa.Inspector) -> None:
    """Start-up before migrations added a unique index ``uq_<table>_<column>`` for every
    unique column, also where the table's own unique constraint already covers it: drop
    those duplicates, keep the ones that are a column's only uniqueness."""
    for table in inspector.get_table_names():
        covered: set[tuple[str | None, ...]] = {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
        }
        covered |= {
            tuple(i["column_names"])
            for i in inspector.get_indexes(table)
            if i["unique"] and not str(i["name"]).startswith("uq_")
        }
        for index in inspector.get_indexes(table):
            name = str(index["name"])
            if name.startswith(f"uq_{table}_") and tuple(index["column_names"]) in covered:
                op.drop_index(name, table_name=table)


def _number_events(conn: sa.Connection) -> None:
    """Number each job's events 1, 2, ... in the order they were written, and record each
    job's newest number."""
    old = sa.select(events.c.job_id).where(events.c.num.is_(None)).distinct()
    ordinal = (
        sa.select(
            events.c.seq.label("s"),
            sa.func.row_number()
            .over(partition_by=events.c.job_id, order_by=events.c.seq)
            .label("n"),
        )
        .where(events.c.job_id.in_(old))
        .subquery()
    )
    conn.execute(
        sa.update(events)
        .where(events.c.seq == ordinal.c.s, events.c.num.is_(None))
        .values(num=ordinal.c.n)
    )
    newest = sa.select(sa.func.max(events.c.num)).where(events.c.job_id == jobs.c.id)
    conn.execute(
        sa.update(jobs)
        .where(sa.or_(jobs.c.events_num.is_(None), jobs.c.events_num < newest.scalar_subquery()))
        .values(events_num=newest.scalar_subquery())
    )
