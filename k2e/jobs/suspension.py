"""Suspend and resume as the API asks for them (POST /jobs/{id}/suspend and /resume).

A job waiting in the store (queued, not handed to the broker) is suspended at once. A
job in the broker or on a worker gets a yield request (``yield_request = 'suspend'``):
its worker saves a checkpoint at the step it stopped, gives the worker back and
suspends the job (k2e.jobs.yielding). A suspended job holds no worker and no place in
the broker, keeps its model_dir lock, and counts against no active-job quota; resume
queues it again, and it goes on from its newest checkpoint.

Each transition is one conditional UPDATE, so a suspend racing the dispatcher, a worker
or a cancel has one outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, update

from k2e.db import utcnow
from k2e.errors import Conflict
from k2e.jobs.records import JobRecord
from k2e.jobs.rows import add_event
from k2e.schemas import JobStatus
from k2e.tables import jobs
from k2e.tenancy.scope import ANY_TENANT, Scope

SUSPEND, PREEMPT = "suspend", "preempt"
# Where a worker can be asked to yield: in the broker (queued, dispatched) or running.
_ON_A_WORKER = [JobStatus.queued.value, JobStatus.running.value]


class SuspendResume:
    """The job store's suspend and resume (mixed into k2e.jobs.job_store.JobStore)."""

    engine: Engine

    if TYPE_CHECKING:  # JobStore's

        def get(self, job_id: str, scope: Scope) -> JobRecord: ...

        def _notify(self, job_id: str) -> None: ...

    def request_suspend(self, job_id: str, scope: Scope) -> JobRecord:
        """Suspend a waiting job at once; ask a dispatched or running one's worker to
        yield. A suspended job answers as it is (idempotent); Conflict from a job that
        ended or is being cancelled. A job outside ``scope`` is not found."""
        job = self.get(job_id, scope)
        now = utcnow()
        with self.engine.begin() as conn:
            waiting = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.queued.value)
                .where(jobs.c.dispatched_at.is_(None))
                .values(status=JobStatus.suspended.value, yield_request=None, updated_at=now)
            ).rowcount
            asked = 0
            if not waiting:
                asked = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status.in_(_ON_A_WORKER))
                    .where((jobs.c.yield_request.is_(None)) | (jobs.c.yield_request != SUSPEND))
                    .values(yield_request=SUSPEND, updated_at=now)
                ).rowcount
            if waiting:
                add_event(conn, job_id, JobStatus.suspended.value, "suspended while queued")
            elif asked:
                add_event(conn, job_id, "log", "suspend requested: checkpointing at the next step")
        if waiting or asked:
            self._notify(job_id)
            return self.get(job_id, ANY_TENANT)
        job = self.get(job_id, ANY_TENANT)
        if job.status in (JobStatus.queued, JobStatus.running, JobStatus.suspended):
            return job  # suspended already, or its suspend is pending
        raise Conflict(f"job {job_id} is {job.status.value}: only a live job can be suspended")

    def resume(self, job_id: str, scope: Scope) -> JobRecord:
        """Queue a suspended job again (the caller then pumps its tenant's turn); withdraw
        a suspend still pending. Conflict from any other state: a job that ended, is
        being cancelled, or runs without a suspend pending."""
        self.get(job_id, scope)
        now = utcnow()
        with self.engine.begin() as conn:
            resumed = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.suspended.value)
                .values(
                    status=JobStatus.queued.value,
                    dispatched_at=None,
                    yield_request=None,
                    updated_at=now,
                )
            ).rowcount
            withdrawn = 0
            if not resumed:
                withdrawn = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status.in_(_ON_A_WORKER))
                    .where(jobs.c.yield_request == SUSPEND)
                    .values(yield_request=None, updated_at=now)
                ).rowcount
            if resumed:
                add_event(conn, job_id, JobStatus.queued.value, "resumed: queued again")
            elif withdrawn:
                add_event(conn, job_id, "log", "suspend withdrawn: the job goes on")
        job = self.get(job_id, ANY_TENANT)
        if resumed or withdrawn:
            self._notify(job_id)
            return job
        raise Conflict(f"job {job_id} is {job.status.value}: only a suspended job can be resumed")
