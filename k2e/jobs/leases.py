"""The worker's side of the job store: leases, fenced progress and results, the reconciler's
releases.

A worker runs a job only while it holds the job's lease, and every write it makes is
fenced on that lease: a worker that lost its lease (it stalled, and the job was handed
to another) can no longer change the job. Each transition is one conditional UPDATE, so
two workers (or a worker and the reconciler) racing for a job cannot both win.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, insert, or_, select, update

from k2e.db import utcnow
from k2e.errors import NotFound
from k2e.jobs.event_log import EVAL, LOSS, PROGRESS
from k2e.jobs.job_store import JobStore
from k2e.jobs.records import JobRecord
from k2e.jobs.rows import add_event, number_events
from k2e.jobs.tallies import tally_first_start
from k2e.jobs.yielding import YieldReleases
from k2e.schemas import TERMINAL_STATUSES, JobError, JobStatus
from k2e.tables import events, jobs
from k2e.tenancy.scope import ANY_TENANT

ACTIVE = (JobStatus.running.value, JobStatus.cancelling.value)


class Lease(NamedTuple):
    """A renewed lease: the job's status, and the yield its worker is asked for."""

    status: str
    yield_request: str | None = None


class JobLeases(YieldReleases, JobStore):
    """The job store as a worker and the reconciler use it."""

    def start(self, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
        """Take the job's lease and count the attempt; None when it must not run here
        (finished, cancelled, or leased by a live worker)."""
        now = utcnow()
        with self.engine.begin() as conn:
            before = conn.execute(
                select(jobs.c.started_at, jobs.c.created_at, jobs.c.queue).where(
                    jobs.c.id == job_id
                )
            ).first()
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
                    # A redelivered message may start a job that waits for its turn:
                    # running, it is in flight, and no pump hands it over again.
                    dispatched_at=func.coalesce(jobs.c.dispatched_at, now),
                )
            )
            if result.rowcount != 1:
                return None
            # The API shows members "started" only: the owner names a host and a pid.
            add_event(conn, job_id, JobStatus.running.value, f"started by {owner}")
            if before is not None and before.started_at is None:
                tally_first_start(conn, str(before.queue), before.created_at, now)
        self._notify(job_id)
        return self.get(job_id, ANY_TENANT)

    def fail_exhausted(self, job_id: str, max_attempts: int) -> bool:
        """A job that used up its attempts (and nobody runs) ends failed: max_attempts."""
        now = utcnow()
        error = JobError(
            type="MaxAttemptsExceeded",
            message=f"the job was started {max_attempts} times without finishing",
            reason="max_attempts",
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.attempts >= max_attempts)
                .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
                .where(or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < now))
                .values(
                    status=JobStatus.failed.value,
                    error=error.model_dump(),
                    dir_lock=None,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if result.rowcount == 1:
                add_event(conn, job_id, JobStatus.failed.value, "max_attempts")
        if result.rowcount == 1:
            self._notify(job_id)
        return result.rowcount == 1

    def stale_queued(self, older_than_s: float) -> list[JobRecord]:
        """Queued jobs untouched for a long time: their message may have been lost."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        query = select(jobs).where(
            jobs.c.status == JobStatus.queued.value,
            jobs.c.dispatched_at.is_not(None),
            jobs.c.updated_at < cutoff,
        )
        with self.engine.connect() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings().all()]

    def touch(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=utcnow()))

    def renew_lease(self, job_id: str, owner: str, lease_s: float) -> Lease | None:
        """Extend the lease; returns the job's status and yield request, or None when the
        lease is lost."""
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
            row = conn.execute(
                select(jobs.c.status, jobs.c.yield_request).where(jobs.c.id == job_id)
            ).one()
            return Lease(str(row.status), row.yield_request)

    def control(self, job_id: str, owner: str) -> Lease | None:
        """The job's status and yield request, read without renewing; None when ``owner``
        no longer holds it (the next renewal says what that means)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(jobs.c.status, jobs.c.yield_request).where(
                    jobs.c.id == job_id, jobs.c.lease_owner == owner
                )
            ).first()
        return None if row is None else Lease(str(row.status), row.yield_request)

    def record_progress(
        self,
        job_id: str,
        owner: str,
        progress: dict[str, Any],
        train_curve: list[dict[str, Any]],
    ) -> str | None:
        """Write progress and the loss curve; returns the status, None if the lease is lost.

        The stream gets a "progress" event, and a "loss" event for the curve's newest
        point when it is new."""
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
            add_event(conn, job_id, PROGRESS, data=_progress_event(progress))
            previous = current.metrics.get("train") or []
            if train_curve and (not previous or previous[-1] != train_curve[-1]):
                add_event(conn, job_id, LOSS, data=train_curve[-1])
            status = str(current.status)
        self._notify(job_id)
        return status

    def record_export(
        self, job_id: str, owner: str, path: str, check: dict[str, Any] | None = None
    ) -> bool:
        """Record the published export and its check; False (nothing written, no event)
        when ``owner`` no longer holds the lease."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
                .values(export_path=path, export_check=check)
            )
            if result.rowcount != 1:
                return False
            add_event(conn, job_id, "log", f"exported {path}")
        self._notify(job_id)
        return True

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        owner: str | None = None,
        eval_metrics: dict[str, float] | None = None,
        error: JobError | None = None,
        progress: dict[str, Any] | None = None,
        disk_bytes: int | None = None,
    ) -> JobRecord | None:
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
                "error": error.model_dump() if error is not None else None,
                "lease_owner": None,
                "lease_expires_at": None,
                "dir_lock": None,
                "yield_request": None,
            }
            if disk_bytes is not None:
                values["disk_bytes"] = disk_bytes
            if eval_metrics is not None:
                values["metrics"] = {**current.metrics, "eval": eval_metrics}
            if progress is not None:
                values["progress"] = progress
            conn.execute(update(jobs).where(*condition).values(**values))
            # The stream's last events: the final step, the evaluation, the status, the end.
            if progress is not None:
                add_event(conn, job_id, PROGRESS, data=_progress_event(progress))
            if eval_metrics:
                add_event(conn, job_id, EVAL, data={"metrics": eval_metrics})
            detail = f"{error.reason}: {error.message}" if error else status.value
            add_event(conn, job_id, status.value, detail[:2000])
        self._notify(job_id)
        return self.get(job_id, ANY_TENANT)

    def log_many(self, job_id: str, messages: list[str]) -> None:
        if not messages:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            first = number_events(conn, job_id, len(messages))
            if first is None:
                return
            conn.execute(
                insert(events),
                [
                    {"job_id": job_id, "num": first + i, "at": now, "kind": "log", "message": m}
                    for i, m in enumerate(messages)
                ],
            )
        self._notify(job_id)

    # the reconciler's side ------------------------------------------------

    def expired(self, now: datetime | None = None) -> list[JobRecord]:
        """Running or cancelling jobs whose lease ran out: their worker is gone."""
        now = now or utcnow()
        query = select(jobs).where(jobs.c.status.in_(ACTIVE), jobs.c.lease_expires_at < now)
        with self.engine.connect() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings().all()]

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
            values["dir_lock"] = None
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == current.value)
                .where(jobs.c.lease_expires_at < now)
                .values(**values)
            )
            if result.rowcount == 1:
                add_event(conn, job_id, new.value, note)
        if result.rowcount == 1:
            self._notify(job_id)
        return result.rowcount == 1

    # retention -------------------------------------------------------------

    def past_retention(self, older_than_s: float, limit: int = 100) -> list[tuple[str, str, str]]:
        """Finished jobs whose files outlived the retention period and are not removed yet:
        (id, tenant, stored model_dir) of each. Only jobs with a model_dir of their own: a
        named model_dir is kept, later jobs may warm-start from it."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        query = (
            select(jobs.c.id, jobs.c.tenant, jobs.c.model_dir)
            .where(jobs.c.status.in_([s.value for s in TERMINAL_STATUSES]))
            .where(jobs.c.finished_at < cutoff)
            .where(or_(jobs.c.disk_bytes.is_(None), jobs.c.disk_bytes > 0))
            .where(jobs.c.model_dir.like("jobs/%"))
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(r.id, r.tenant, r.model_dir) for r in conn.execute(query).all()]

    def files_removed(self, job_id: str, note: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs).where(jobs.c.id == job_id).values(disk_bytes=0, export_path=None)
            )
            add_event(conn, job_id, "log", note)
        self._notify(job_id)


def _progress_event(progress: dict[str, Any]) -> dict[str, Any]:
    """The progress fields the stream shows (the contract's, with nulls where unknown)."""
    keys = ("global_step", "max_steps", "steps_per_sec", "eta_s")
    return {key: progress.get(key) for key in keys}
