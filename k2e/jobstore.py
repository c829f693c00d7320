"""The durable job store k2e owns: SQLite by default, PostgreSQL via DATABASE_URL.

Job state never comes from Celery's result backend: the record is written here
before the task is sent, and only the worker holding the job moves it forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping

from k2e.errors import FieldError, InvalidSpec, NotFound
from k2e.schemas import TERMINAL_STATUSES, Job, JobPage, JobStatus

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
)

MAX_PAGE = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every time k2e writes is UTC.
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
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class JobStore:
    """Create, read and move jobs through their states."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # writes from the API -------------------------------------------------

    def create(
        self,
        job_id: str,
        spec: dict[str, Any],
        queue: str,
        model_dir: str,
        max_steps: int | None,
        warm_start_from: str | None = None,
    ) -> Job:
        now = utcnow()
        with self._tx() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    status=JobStatus.queued.value,
                    queue=queue,
                    created_at=now,
                    updated_at=now,
                    spec=spec,
                    progress={"global_step": 0, "max_steps": max_steps},
                    metrics={"train": [], "eval": {}},
                    attempts=0,
                    model_dir=model_dir,
                    warm_start_from=warm_start_from,
                )
            )
        return self.get(job_id)

    # reads ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _to_job(row)

    def list_jobs(
        self, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """Newest first; ``cursor`` is the opaque ``next_cursor`` of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        query = select(jobs).order_by(jobs.c.seq.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if cursor is not None:
            query = query.where(jobs.c.seq < _decode_cursor(cursor))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        items = [_to_job(r) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return JobPage(items=items, next_cursor=next_cursor)

    # transitions ---------------------------------------------------------

    def start(self, job_id: str) -> Job | None:
        """Move a queued job to running and count the attempt; None if it must not run."""
        now = utcnow()
        with self._tx() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
                .values(
                    status=JobStatus.running.value,
                    attempts=jobs.c.attempts + 1,
                    started_at=now,
                    updated_at=now,
                )
            )
        if result.rowcount != 1:
            return None
        return self.get(job_id)

    def record_progress(
        self, job_id: str, progress: dict[str, Any], train_curve: list[dict[str, Any]]
    ) -> str:
        """Write progress and the loss curve; returns the job's status (to notice cancels)."""
        with self._tx() as conn:
            current = conn.execute(
                select(jobs.c.metrics, jobs.c.status).where(jobs.c.id == job_id)
            ).first()
            if current is None:
                raise NotFound(f"no job with id {job_id!r}")
            metrics = dict(current.metrics)
            metrics["train"] = train_curve
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(progress=progress, metrics=metrics, updated_at=utcnow())
            )
            return str(current.status)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        eval_metrics: dict[str, float] | None = None,
        error: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
    ) -> Job:
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status} is not a terminal status")
        now = utcnow()
        with self._tx() as conn:
            current = conn.execute(select(jobs.c.metrics).where(jobs.c.id == job_id)).first()
            if current is None:
                raise NotFound(f"no job with id {job_id!r}")
            values: dict[str, Any] = {
                "status": status.value,
                "finished_at": now,
                "updated_at": now,
                "error": error,
            }
            if eval_metrics is not None:
                values["metrics"] = {**current.metrics, "eval": eval_metrics}
            if progress is not None:
                values["progress"] = progress
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        """Queued jobs end cancelled at once; running ones go to cancelling for the worker."""
        now = utcnow()
        with self._tx() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.queued.value)
                .values(status=JobStatus.cancelled.value, finished_at=now, updated_at=now)
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.running.value)
                .values(status=JobStatus.cancelling.value, updated_at=now)
            )
        return self.get(job_id)


def _decode_cursor(cursor: str) -> int:
    if not cursor.isdigit():
        raise InvalidSpec(
            "`cursor` must be a `next_cursor` value from a previous page",
            [FieldError(("query", "cursor"), "not a cursor k2e issued")],
        )
    return int(cursor)


def _to_job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        created_at=_aware(row["created_at"]),
        started_at=_aware(row["started_at"]),
        finished_at=_aware(row["finished_at"]),
        spec=row["spec"],
        progress=row["progress"],
        metrics=row["metrics"],
        error=row["error"],
        attempts=row["attempts"],
        queue=row["queue"],
        model_dir=row["model_dir"],
        warm_start_from=row["warm_start_from"],
    )
