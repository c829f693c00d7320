"""A job that yields its worker: the worker's release of it, and the reconciler's when
that worker died on the way (mixed into k2e.jobs.leases.JobLeases).

A yield request (``jobs.yield_request``) is ``'suspend'`` (POST /jobs/{id}/suspend) or
``'preempt'`` (the scheduler wants the worker for another job). The worker stops at its
next step with a checkpoint at that step and releases the job:

- suspend: ``suspended``; resume queues it again;
- preempt: ``queued`` and waiting for its turn (``dispatched_at`` NULL), its
  ``preemptions`` counted;
- a request withdrawn meanwhile (resume while the suspend was pending): ``queued``, so
  the job goes on from its checkpoint at its next turn.

The job keeps its model_dir lock (it has not ended), and its lease is let go. The
attempt is given back (``attempts - 1``): a yield is not a failed start, and a job
preempted many times must not run out of attempts. Every release is fenced on the
lease, like every write a worker makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, case, func, update

from k2e.db import utcnow
from k2e.jobs.rows import add_event
from k2e.jobs.suspension import PREEMPT, SUSPEND
from k2e.jobs.tallies import PREEMPTED, tally_job
from k2e.schemas import JobStatus
from k2e.tables import jobs
from k2e.webhooks.schemas import EventType


class YieldReleases:
    engine: Engine

    if TYPE_CHECKING:  # JobStore's

        def _notify(self, job_id: str) -> None: ...

    def release_yielded(
        self, job_id: str, owner: str, step: int, progress: dict[str, Any] | None = None
    ) -> JobStatus | None:
        """Release a job whose worker stopped it at ``step`` for a yield request: the
        status it now has (suspended or queued), or None when ``owner`` no longer holds
        it running (the lease was lost, or a cancel came first: the caller ends it so)."""
        now = utcnow()
        released: dict[str, Any] = {
            "dispatched_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "yield_request": None,
            "attempts": case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0),
            "updated_at": now,
        }
        if progress is not None:
            released["progress"] = progress
        mine = [jobs.c.id == job_id, jobs.c.lease_owner == owner]
        mine.append(jobs.c.status == JobStatus.running.value)
        webhook = None
        with self.engine.begin() as conn:
            if _update(conn, mine, SUSPEND, {**released, "status": JobStatus.suspended.value}):
                status, note = JobStatus.suspended, f"suspended at step {step}"
            elif _update(
                conn,
                mine,
                PREEMPT,
                {
                    **released,
                    "status": JobStatus.queued.value,
                    "preemptions": func.coalesce(jobs.c.preemptions, 0) + 1,
                    "preempted_at": now,
                },
            ):
                status, webhook = JobStatus.queued, EventType.preempted
                note = f"preempted: queued again, it resumes from step {step}"
                tally_job(conn, PREEMPTED, job_id)
            elif _update(conn, mine, None, {**released, "status": JobStatus.queued.value}):
                status, note = JobStatus.queued, f"queued again: it goes on from step {step}"
            else:
                return None
            add_event(conn, job_id, status.value, note, webhook=webhook)
        self._notify(job_id)
        return status

    def suspend_expired(self, job_id: str) -> bool:
        """A job whose worker died while asked to suspend ends suspended: resumed, it
        goes on from its newest checkpoint."""
        return self._release_lost(
            job_id, SUSPEND, JobStatus.suspended, {}, "suspended: worker_lost"
        )

    def preempt_expired(self, job_id: str) -> bool:
        """A job whose worker died while preempted waits for its turn again."""
        values = {
            "preemptions": func.coalesce(jobs.c.preemptions, 0) + 1,
            "preempted_at": utcnow(),
        }
        return self._release_lost(
            job_id, PREEMPT, JobStatus.queued, values, "preempted: queued again (worker_lost)"
        )

    def _release_lost(
        self, job_id: str, request: str, new: JobStatus, extra: dict[str, Any], note: str
    ) -> bool:
        now = utcnow()
        values = {
            "status": new.value,
            "dispatched_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
            "yield_request": None,
            "updated_at": now,
            **extra,
        }
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.running.value)
                .where(jobs.c.yield_request == request, jobs.c.lease_expires_at < now)
                .values(**values)
            )
            if result.rowcount == 1:
                webhook = EventType.preempted if request == PREEMPT else None
                add_event(conn, job_id, new.value, note, webhook=webhook)
                if request == PREEMPT:
                    tally_job(conn, PREEMPTED, job_id)
        if result.rowcount == 1:
            self._notify(job_id)
        return result.rowcount == 1


def _update(conn: Any, where: list[Any], request: str | None, values: dict[str, Any]) -> bool:
    condition = (
        jobs.c.yield_request.is_(None) if request is None else jobs.c.yield_request == request
    )
    return bool(conn.execute(update(jobs).where(*where, condition).values(**values)).rowcount)
