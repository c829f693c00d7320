"""The durable job store k2e owns: SQLite by default, PostgreSQL via DATABASE_URL.

Job state never comes from Celery's result backend: the record is written here before
the task is sent. This class is what the API needs (create, read, list, cancel); the
worker's lease-fenced writes live in :mod:`k2e.jobs.leases`.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from k2e.errors import Conflict, FieldError, InvalidSpec, NotFound
from k2e.jobs.db import BY_ID, add_event, aware, create_schema, make_engine, to_job, utcnow
from k2e.jobs.tables import events, jobs
from k2e.schemas import Job, JobPage, JobStatus

MAX_PAGE = 200
_CURSOR = re.compile(r"[0-9]{1,18}")


class JobStore:
    """Create, read, list and cancel jobs."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def create_schema(self) -> None:
        create_schema(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # writes from the API -------------------------------------------------

    def create(
        self,
        job_id: str,
        spec: dict[str, Any],
        queue: str,
        model_dir: str,
        max_steps: int | None,
        warm_start_from: str | None = None,
        timeout_s: int | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Job:
        """Record a queued job. With an idempotency key already used, raises Conflict.

        ``timeout_s`` is the run-time limit the worker enforces (read back as
        ``Job.timeout_s``).
        """
        now = utcnow()
        try:
            with self.engine.begin() as conn:
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
                        timeout_s=timeout_s,
                        idempotency_key=idempotency_key,
                        request_hash=request_hash,
                    )
                )
                add_event(conn, job_id, JobStatus.queued.value, f"queued on {queue}")
        except IntegrityError as exc:
            raise Conflict(f"idempotency key {idempotency_key!r} is already in use") from exc
        return self.get(job_id)

    def discard(self, job_id: str) -> None:
        """Forget a job that was never accepted (its task could not be sent)."""
        with self.engine.begin() as conn:
            conn.execute(delete(events).where(events.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))

    def request_cancel(self, job_id: str) -> Job:
        """Queued jobs end cancelled at once; running ones go to cancelling for the worker."""
        now = utcnow()
        with self.engine.begin() as conn:
            queued = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.queued.value)
                .values(status=JobStatus.cancelled.value, finished_at=now, updated_at=now)
            ).rowcount
            running = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.running.value)
                .values(status=JobStatus.cancelling.value, updated_at=now)
            ).rowcount
            if queued:
                add_event(conn, job_id, JobStatus.cancelled.value, "cancelled while queued")
            if running:
                add_event(conn, job_id, JobStatus.cancelling.value, "cancel requested")
        return self.get(job_id)

    # reads ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return to_job(self._row(job_id))

    def _row(self, job_id: str) -> RowMapping:
        with self.engine.connect() as conn:
            row = conn.execute(BY_ID, {"job_id": job_id}).mappings().first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return row

    def by_idempotency_key(self, key: str) -> tuple[Job, str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings().first()
        return None if row is None else (to_job(row), row["request_hash"])

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
        items = [to_job(r) for r in rows[:limit]]
        next_cursor = str(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return JobPage(items=items, next_cursor=next_cursor)

    def events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The job's transitions and log lines after event ``since``, oldest first."""
        query = (
            select(events)
            .where(events.c.job_id == job_id, events.c.seq > since)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {"seq": r["seq"], "at": aware(r["at"]), "kind": r["kind"], "message": r["message"]}
            for r in rows
        ]

    def export_path(self, job_id: str) -> str | None:
        return self._row(job_id)["export_path"]


def _decode_cursor(cursor: str) -> int:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidSpec(
            "`cursor` must be a `next_cursor` value from a previous page",
            [FieldError(("query", "cursor"), "not a cursor k2e issued")],
        )
    return int(cursor)
