"""The durable job store k2e owns: SQLite by default, PostgreSQL via DATABASE_URL.

Job state never comes from Celery's result backend: the record is written here
before the task is sent. A worker runs a job only while it holds the job's lease,
and every write it makes is fenced on that lease: a worker that lost its lease
(it stalled, and the job was handed to another) can no longer change the job.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from k2e.errors import Conflict, FieldError, InvalidSpec, NotFound
from k2e.schemas import TERMINAL_STATUSES, Job, JobPage, JobStatus
from k2e.tables import events, jobs, metadata

MAX_PAGE = 200
# Built once: the store reads jobs by id on every GET /jobs/{id} and progress update.
_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))
_CURSOR = re.compile(r"[0-9]{1,18}")
ACTIVE = (JobStatus.running.value, JobStatus.cancelling.value)


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
        """Create the tables, and add columns a newer k2e introduced to older ones.

        k2e only ever adds nullable columns, so this is the whole migration story.
        """
        metadata.create_all(self.engine)
        existing = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                have = {c["name"] for c in existing.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in have:
                        kind = column.type.compile(dialect=self.engine.dialect)
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
        """Record a queued job. With an idempotency key already used, raises Conflict."""
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
                _event(conn, job_id, JobStatus.queued.value, f"queued on {queue}")
        except IntegrityError as exc:
            raise Conflict(f"idempotency key {idempotency_key!r} is already in use") from exc
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
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
                _event(conn, job_id, JobStatus.cancelled.value, "cancelled while queued")
            if running:
                _event(conn, job_id, JobStatus.cancelling.value, "cancel requested")
        return self.get(job_id)

    # reads ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return _to_job(self._row(job_id))

    def _row(self, job_id: str) -> RowMapping:
        with self.engine.connect() as conn:
            row = conn.execute(_BY_ID, {"job_id": job_id}).mappings().first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return row

    def by_idempotency_key(self, key: str) -> tuple[Job, str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings().first()
        return None if row is None else (_to_job(row), row["request_hash"])

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
            {"seq": r["seq"], "at": _aware(r["at"]), "kind": r["kind"], "message": r["message"]}
            for r in rows
        ]

    # the worker's side: lease, progress, finish -----------------------------

    def start(self, job_id: str, owner: str, lease_s: float) -> Job | None:
        """Take the job's lease and count the attempt; None when it must not run here
        (finished, cancelled, or leased by a live worker)."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
                .where(or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < now))
                .values(
                    status=JobStatus.running.value,
                    attempts=jobs.c.attempts + 1,
                    started_at=func.coalesce(jobs.c.started_at, now),
                    updated_at=now,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                    error=None,
                )
            )
            if result.rowcount != 1:
                return None
            _event(conn, job_id, JobStatus.running.value, f"started by {owner}")
        return self.get(job_id)

    def fail_exhausted(self, job_id: str, max_attempts: int) -> bool:
        """A job that used up its attempts (and nobody runs) ends failed: max_attempts."""
        now = utcnow()
        error = {
            "type": "MaxAttemptsExceeded",
            "message": f"the job was started {max_attempts} times without finishing",
            "reason": "max_attempts",
        }
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.attempts >= max_attempts)
                .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
                .where(or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < now))
                .values(
                    status=JobStatus.failed.value,
                    error=error,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if result.rowcount == 1:
                _event(conn, job_id, JobStatus.failed.value, "max_attempts")
            return result.rowcount == 1

    def stale_queued(self, older_than_s: float) -> list[Job]:
        """Queued jobs untouched for a long time: their message may have been lost."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        query = select(jobs).where(
            jobs.c.status == JobStatus.queued.value, jobs.c.updated_at < cutoff
        )
        with self.engine.connect() as conn:
            return [_to_job(r) for r in conn.execute(query).mappings().all()]

    def touch(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=utcnow()))

    def renew_lease(self, job_id: str, owner: str, lease_s: float) -> str | None:
        """Extend the lease; returns the job's status, or None when the lease is lost."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .where(jobs.c.status.in_(ACTIVE))
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
            )
            if result.rowcount != 1:
                return None
            return conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one()

    def record_progress(
        self,
        job_id: str,
        owner: str,
        progress: dict[str, Any],
        train_curve: list[dict[str, Any]],
    ) -> str | None:
        """Write progress and the loss curve; returns the status, None if the lease is lost."""
        with self.engine.begin() as conn:
            current = conn.execute(
                select(jobs.c.metrics, jobs.c.status).where(
                    jobs.c.id == job_id, jobs.c.lease_owner == owner
                )
            ).first()
            if current is None:
                return None
            metrics = {**current.metrics, "train": train_curve}
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(progress=progress, metrics=metrics, updated_at=utcnow())
            )
            return str(current.status)

    def record_export(self, job_id: str, owner: str, path: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(export_path=path)
            )
            _event(conn, job_id, "log", f"exported {path}")

    def export_path(self, job_id: str) -> str | None:
        return self._row(job_id)["export_path"]

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        owner: str | None = None,
        eval_metrics: dict[str, float] | None = None,
        error: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
    ) -> Job | None:
        """End the job. With ``owner``, only while that worker holds the lease (fencing);
        returns None when it does not."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status} is not a terminal status")
        now = utcnow()
        condition = [jobs.c.id == job_id]
        if owner is not None:
            condition.append(jobs.c.lease_owner == owner)
        with self.engine.begin() as conn:
            current = conn.execute(select(jobs.c.metrics).where(*condition)).first()
            if current is None:
                if owner is None:
                    raise NotFound(f"no job with id {job_id!r}")
                return None
            values: dict[str, Any] = {
                "status": status.value,
                "finished_at": now,
                "updated_at": now,
                "error": error,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if eval_metrics is not None:
                values["metrics"] = {**current.metrics, "eval": eval_metrics}
            if progress is not None:
                values["progress"] = progress
            conn.execute(update(jobs).where(*condition).values(**values))
            detail = f"{error['reason']}: {error['message']}" if error else status.value
            _event(conn, job_id, status.value, detail[:2000])
        return self.get(job_id)

    def log(self, job_id: str, message: str) -> None:
        with self.engine.begin() as conn:
            _event(conn, job_id, "log", message)

    def log_many(self, job_id: str, messages: list[str]) -> None:
        if not messages:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                insert(events),
                [{"job_id": job_id, "at": now, "kind": "log", "message": m} for m in messages],
            )

    # the reconciler's side ------------------------------------------------

    def expired(self, now: datetime | None = None) -> list[Job]:
        """Running or cancelling jobs whose lease ran out: their worker is gone."""
        now = now or utcnow()
        query = select(jobs).where(jobs.c.status.in_(ACTIVE), jobs.c.lease_expires_at < now)
        with self.engine.connect() as conn:
            return [_to_job(r) for r in conn.execute(query).mappings().all()]

    def requeue_expired(self, job_id: str) -> bool:
        """Hand a job whose worker died back to the queue (its checkpoints stay)."""
        return self._release_expired(
            job_id, JobStatus.running, JobStatus.queued, "requeued: worker_lost"
        )

    def cancel_expired(self, job_id: str) -> bool:
        """A cancelling job whose worker died is cancelled: nobody will run it further."""
        return self._release_expired(
            job_id, JobStatus.cancelling, JobStatus.cancelled, "cancelled: worker_lost"
        )

    def _release_expired(self, job_id: str, current: JobStatus, new: JobStatus, note: str) -> bool:
        now = utcnow()
        values: dict[str, Any] = {
            "status": new.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
        if new in TERMINAL_STATUSES:
            values["finished_at"] = now
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == current.value)
                .where(jobs.c.lease_expires_at < now)
                .values(**values)
            )
            if result.rowcount == 1:
                _event(conn, job_id, new.value, note)
            return result.rowcount == 1


def _event(conn: Connection, job_id: str, kind: str, message: str) -> None:
    conn.execute(insert(events).values(job_id=job_id, at=utcnow(), kind=kind, message=message))


def _decode_cursor(cursor: str) -> int:
    if not _CURSOR.fullmatch(cursor):
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
