"""The job store's tables (SQLAlchemy Core): one row per job, one per job event."""

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

jobs = Table(
    "k2e_jobs",
    metadata,
    # `seq` orders the list (newest first) and backs the cursor without a scan.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("queue", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("progress", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("error", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    Column("model_dir", String(1024), nullable=False),
    Column("warm_start_from", String(1024)),
    Column("timeout_s", Integer),
    # The lease: who runs the job, until when. Renewed by the worker's heartbeat.
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime(timezone=True), index=True),
    Column("export_path", String(1024)),
    Column("idempotency_key", String(255), unique=True),
    Column("request_hash", String(64)),
)

events = Table(
    "k2e_job_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False),  # a status name, or "log"
    Column("message", Text, nullable=False),
)
