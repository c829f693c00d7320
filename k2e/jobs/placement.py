"""What the scheduler's state looks like from outside: a queued job's place in its queue
(``Job.scheduling``) and each queue's slots and jobs (``GET /queues``, admins).

A place tells a member its job's position among every tenant's waiting jobs in the
scheduler's order (k2e.jobs.scheduling) and why it waits; it never names another job.
"""

from __future__ import annotations

from sqlalchemy import Engine

from k2e.jobs.queueing import CPU_QUEUE, GPU_QUEUE
from k2e.jobs.records import JobRecord
from k2e.jobs.scheduling import Policy, Snapshot, Waiting, read_shares, read_snapshot
from k2e.queue_schemas import QueuePlace, QueueSummary, TenantInQueue, WaitingFor
from k2e.schemas import JobStatus
from k2e.tenancy.bodies import DEFAULT_TENANT


class Placement:
    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine = engine
        self.policy = policy

    def places(self, records: list[JobRecord]) -> dict[str, QueuePlace]:
        """The place of each queued job among ``records``, by id (one read per queue)."""
        queued = [r for r in records if r.status is JobStatus.queued]
        found: dict[str, QueuePlace] = {}
        if not queued:
            return found
        with self.engine.connect() as conn:
            for queue in sorted({r.queue for r in queued}):
                snapshot = read_snapshot(conn, self.policy, queue=queue)
                ranked = sorted(snapshot.waiting, key=snapshot.order_key)
                position = {job.id: n for n, job in enumerate(ranked, start=1)}
                for record in (r for r in queued if r.queue == queue):
                    found[record.id] = QueuePlace(
                        position=None if record.dispatched else position.get(record.id),
                        priority=self.policy.name_of(record.priority),
                        waiting_for=waiting_for(snapshot, record),
                    )
        return found

    def place(self, record: JobRecord) -> QueuePlace | None:
        return self.places([record]).get(record.id)

    def prospect(self, queue: str, tenant: str, priority: int) -> QueuePlace:
        """Where a job of ``tenant`` with ``priority`` would stand in ``queue`` if it were
        submitted now (a dry run): behind the waiting jobs the scheduler orders first."""
        with self.engine.connect() as conn:
            snapshot = read_snapshot(conn, self.policy, queue=queue)
            if tenant not in snapshot.shares:
                snapshot.shares.update(read_shares(conn, {tenant}))
        new = Waiting("", tenant, queue, priority, seq=2**62, timeout_s=None)
        ahead = sum(
            1 for job in snapshot.waiting if snapshot.order_key(job) < snapshot.order_key(new)
        )
        reason = _waiting_for(snapshot, queue, tenant, dispatched=False)
        free = snapshot.slots.get(queue, 0) - sum(
            snapshot.held[q, t] for q, t in snapshot.held if q == queue
        )
        if reason == "slot" and ahead == 0 and free > 0:
            reason = "pickup"  # handed to the broker at once
        return QueuePlace(
            position=ahead + 1, priority=self.policy.name_of(priority), waiting_for=reason
        )

    def queues(self) -> list[QueueSummary]:
        """Every queue with workers or jobs (and the two k2e routes to), by name."""
        with self.engine.connect() as conn:
            snapshot = read_snapshot(conn, self.policy)
        names = {CPU_QUEUE, GPU_QUEUE, *snapshot.slots, *(q for q, _ in snapshot.held)}
        names |= {job.queue for job in snapshot.waiting}
        return [summary(snapshot, name) for name in sorted(names)]


def waiting_for(snapshot: Snapshot, record: JobRecord) -> WaitingFor:
    return _waiting_for(snapshot, record.queue, record.tenant, record.dispatched)


def _waiting_for(
    snapshot: Snapshot, queue: str, tenant: str | None, dispatched: bool
) -> WaitingFor:
    slots = snapshot.slots.get(queue, 0)
    if dispatched:
        return "pickup" if slots > 0 else "worker"
    if snapshot.inflight[tenant] >= snapshot.policy.inflight_per_tenant:
        return "tenant_limit"
    if slots <= 0:
        return "worker"
    if not snapshot.borrows(tenant) and not snapshot.below_share(queue, tenant):
        return "share"
    return "slot"


def summary(snapshot: Snapshot, queue: str) -> QueueSummary:
    tenants = {t for q, t in snapshot.held if q == queue}
    tenants |= {job.tenant for job in snapshot.waiting if job.queue == queue}
    rows = []
    for tenant in sorted(tenants, key=lambda t: t or DEFAULT_TENANT):
        share = snapshot.share(queue, tenant)
        held = snapshot.held[queue, tenant]
        waiting = sum(1 for j in snapshot.waiting if j.queue == queue and j.tenant == tenant)
        if not held and not waiting:
            continue
        rows.append(
            TenantInQueue(
                tenant=tenant or DEFAULT_TENANT,
                share=share,
                running=held,
                waiting=waiting,
                borrowed=max(0, held - share),
            )
        )
    return QueueSummary(
        name=queue,
        slots=snapshot.slots.get(queue, 0),
        running=sum(r.running for r in rows),
        waiting=sum(r.waiting for r in rows),
        borrowed=sum(r.borrowed for r in rows),
        tenants=rows,
    )
