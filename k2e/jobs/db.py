"""The job store's engine, schema upkeep and row mapping, shared by both sides of the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import Connection, RowMapping

from k2e.jobs.tables import events, jobs, metadata
from k2e.schemas import Job, JobStatus

# Built once: jobs are read by id on every GET /jobs/{id} and every progress update.
BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every time k2e writes is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes progress.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)


def create_schema(engine: Engine) -> None:
    """Create the tables, and add columns a newer k2e introduced to older ones.

    k2e only ever adds nullable columns, so this is the whole migration story.
    """
    metadata.create_all(engine)
    existing = inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
                if column.unique:
                    # An added column has no constraint yet; a unique index does the job.
                    conn.execute(
                        text(
                            f"CREATE UNIQUE INDEX IF NOT EXISTS "
                            f'uq_{table.name}_{column.name} ON {table.name} ("{column.name}")'
                        )
                    )


def add_event(conn: Connection, job_id: str, kind: str, message: str) -> None:
    """A transition (``kind`` is the new status) or a log line (``kind`` "log")."""
    conn.execute(insert(events).values(job_id=job_id, at=utcnow(), kind=kind, message=message))


def to_job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        created_at=aware(row["created_at"]),
        started_at=aware(row["started_at"]),
        finished_at=aware(row["finished_at"]),
        spec=row["spec"],
        progress=row["progress"],
        metrics=row["metrics"],
        error=row["error"],
        attempts=row["attempts"],
        queue=row["queue"],
        model_dir=row["model_dir"],
        warm_start_from=row["warm_start_from"],
        timeout_s=row["timeout_s"],
    )
