"""Fair hand-over of queued jobs to the broker.

The fairness rule: a tenant has at most ``tenant_inflight_jobs`` (K) jobs in the broker
or running at once. Its other queued jobs wait in the job store (``dispatched_at`` NULL)
and are handed over, oldest first, as its earlier jobs end. So when a worker frees up,
the jobs ahead of a newly submitted job in the broker's FIFO queue are at most K per
other tenant, whatever those tenants have queued: one tenant's burst of 1000 jobs delays
another tenant's next job by at most K of its jobs.

Anyone may pump: the API after a submission or a cancel (the submitting tenant only),
a worker after a job ends, and the reconciler every round (all tenants). Claiming a job
is one conditional UPDATE, so a job is handed over once however many pump at once;
the per-tenant bound itself is counted, then claimed, and may be passed by one or two
jobs when pumps race.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, func, select, update

from k2e.db import utcnow
from k2e.errors import Unavailable
from k2e.jobs.queueing import TaskSender
from k2e.schemas import JobStatus
from k2e.tables import jobs
from k2e.tenancy.scope import Scope, tenant_of

log = logging.getLogger("k2e.dispatch")
_IN_FLIGHT = [JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value]


class Dispatcher:
    def __init__(self, engine: Engine, sender: TaskSender, inflight_per_tenant: int) -> None:
        self.engine = engine
        self.sender = sender
        self.limit = inflight_per_tenant

    def pump(self, scope: Scope) -> list[str]:
        """Hand over what the rule allows (for the scope's tenant, or every tenant with
        ``ANY_TENANT``); returns the job ids.

        Raises Unavailable when the broker does not answer; the job it was handing over
        goes back to waiting.
        """
        sent: list[str] = []
        tenant = tenant_of(scope)
        for name in [tenant] if tenant is not None else self._waiting_tenants():
            while self._in_flight(name) < self.limit:
                claimed = self._claim_oldest(name)
                if claimed is None:
                    break
                job_id, queue, timeout_s = claimed
                try:
                    self.sender.send_train(job_id, queue, timeout_s)
                except Unavailable:
                    self._unclaim(job_id)
                    raise
                sent.append(job_id)
        return sent

    def _waiting_tenants(self) -> list[str]:
        """Tenants with jobs waiting, the one waiting longest first."""
        query = (
            select(jobs.c.tenant)
            .where(jobs.c.status == JobStatus.queued.value, jobs.c.dispatched_at.is_(None))
            .group_by(jobs.c.tenant)
            .order_by(func.min(jobs.c.seq))
        )
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query).all()]

    def _in_flight(self, tenant: str) -> int:
        query = select(func.count()).where(
            jobs.c.tenant == tenant,
            jobs.c.status.in_(_IN_FLIGHT),
            jobs.c.dispatched_at.is_not(None),
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _claim_oldest(self, tenant: str) -> tuple[str, str, int | None] | None:
        waiting = (
            select(jobs.c.id, jobs.c.queue, jobs.c.timeout_s)
            .where(
                jobs.c.tenant == tenant,
                jobs.c.status == JobStatus.queued.value,
                jobs.c.dispatched_at.is_(None),
            )
            .order_by(jobs.c.seq)
            .limit(1)
        )
        with self.engine.begin() as conn:
            for _ in range(3):  # another pump may take the oldest first: try the next
                row = conn.execute(waiting).first()
                if row is None:
                    return None
                taken = conn.execute(
                    update(jobs)
                    .where(jobs.c.id == row.id, jobs.c.dispatched_at.is_(None))
                    .values(dispatched_at=utcnow(), updated_at=utcnow())
                ).rowcount
                if taken:
                    return str(row.id), str(row.queue), row.timeout_s
        return None

    def _unclaim(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(dispatched_at=None))
