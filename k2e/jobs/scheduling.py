"""What a scheduling pass sees (``Snapshot``) and the order it hands jobs over in.

Read inside the pass's transaction (k2e.jobs.dispatch) and by the visibility of a
waiting job (k2e.jobs.placement): each queue's job slots (the live workers' in the
registry, k2e.jobs.workers), the slots each tenant holds there, each tenant's share and
whether it may borrow, and the waiting jobs.

The order among a queue's waiting jobs (``order_key``): jobs of tenants holding less
than their share of the queue first; then the higher priority; then the tenant holding
fewer of the queue's slots; then the tenant whose last job in the queue was handed over
longest ago (so that equal tenants take turns); then the older job.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from k2e.cluster_schemas import Distribution
from k2e.db import aware, utcnow
from k2e.scheduling_settings import DEFAULT_CLASS
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.tables import jobs, tenants, workers
from k2e.tenancy.bodies import DEFAULT_TENANT, Share

IN_FLIGHT = [JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value]
_EPOCH = datetime(1970, 1, 1).astimezone()


@dataclass(frozen=True)
class Policy:
    """The scheduler's settings."""

    classes: dict[str, int]
    inflight_per_tenant: int
    cooldown_s: float
    live_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            classes=settings.priority_values,
            inflight_per_tenant=settings.tenant_inflight_jobs,
            cooldown_s=settings.preempt_cooldown_s,
            live_s=settings.worker_live_s,
        )

    @property
    def normal(self) -> int:
        """The value of rows without one (older than priorities)."""
        return self.classes[DEFAULT_CLASS]

    def name_of(self, value: int | None) -> str:
        """The class of a stored value: the one with that value, else the highest below
        it (classes renumbered since), else the lowest."""
        if value is None:
            return DEFAULT_CLASS
        ranked = sorted(self.classes.items(), key=lambda item: item[1])
        below = [name for name, v in ranked if v <= value]
        return below[-1] if below else ranked[0][0]


@dataclass(frozen=True)
class Waiting:
    id: str
    tenant: str | None
    queue: str
    priority: int
    seq: int
    timeout_s: int | None
    # A cluster job's shape (spec.distribution): it takes ``size`` slots at once.
    cluster: Distribution | None = None
    gang: int | None = None  # set when a cluster's hand-over places its gang

    @property
    def size(self) -> int:
        return self.cluster.size if self.cluster is not None else 1

    request_id: str | None = None
    trace_context: str | None = None


@dataclass(frozen=True)
class Holding:
    """A job that holds a slot: handed over and not ended."""

    id: str
    tenant: str | None
    queue: str
    status: str
    priority: int
    started_at: datetime | None
    preempted_at: datetime | None
    yield_request: str | None
    size: int = 1  # slots held: a cluster's members, else 1


@dataclass
class Snapshot:
    now: datetime
    policy: Policy
    slots: dict[str, int]
    holding: list[Holding]
    waiting: list[Waiting]
    shares: dict[str | None, tuple[Share, bool]] = field(default_factory=dict)
    served: dict[tuple[str, str | None], datetime] = field(default_factory=dict)
    held: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    inflight: Counter[str | None] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for job in self.holding:
            self.held[job.queue, job.tenant] += job.size
            self.inflight[job.tenant] += 1

    def share(self, queue: str, tenant: str | None) -> int:
        return self.shares.get(tenant, (Share(), True))[0].of(queue)

    def borrows(self, tenant: str | None) -> bool:
        return self.shares.get(tenant, (Share(), True))[1]

    def below_share(self, queue: str, tenant: str | None) -> bool:
        return self.held[queue, tenant] < self.share(queue, tenant)

    def may_take(self, queue: str, tenant: str | None) -> bool:
        """Whether a job of the tenant may take a free slot of the queue now: within the
        in-flight limit K, and within its share unless it may borrow."""
        if self.inflight[tenant] >= self.policy.inflight_per_tenant:
            return False
        return self.borrows(tenant) or self.below_share(queue, tenant)

    def order_key(self, job: Waiting) -> tuple[int, int, int, datetime, int]:
        """The order of the queue's waiting jobs (the module's docstring)."""
        queue, tenant = job.queue, job.tenant
        return (
            0 if self.below_share(queue, tenant) else 1,
            -job.priority,
            self.held[queue, tenant],
            self.served.get((queue, tenant), _EPOCH),
            job.seq,
        )

    def take(self, job: Waiting) -> None:
        """Count the job as handed over (within this pass)."""
        self.held[job.queue, job.tenant] += job.size
        self.inflight[job.tenant] += 1
        self.served[job.queue, job.tenant] = self.now


def live_slots(conn: Connection, now: datetime, live_s: float) -> dict[str, int]:
    """Job slots per queue: the sum of the live workers' slots (k2e.jobs.workers)."""
    cutoff = now - timedelta(seconds=live_s)
    slots: Counter[str] = Counter()
    for queues, count in conn.execute(
        select(workers.c.queues, workers.c.slots).where(workers.c.seen_at >= cutoff)
    ).all():
        for queue in str(queues).split():
            slots[queue] += int(count)
    return dict(slots)


def read_snapshot(
    conn: Connection,
    policy: Policy,
    queue: str | None = None,
    per_tenant: int | None = None,
) -> Snapshot:
    """What a pass needs (one ``queue``, or all). ``per_tenant``: only each tenant's
    first so many waiting jobs of each queue in its own order (a pass hands over at most
    K of a tenant's); None: every waiting job."""
    now = utcnow()
    priority = func.coalesce(jobs.c.priority, policy.normal)
    holding_rows = conn.execute(
        select(
            jobs.c.id,
            jobs.c.tenant,
            jobs.c.queue,
            jobs.c.status,
            priority.label("priority"),
            jobs.c.started_at,
            jobs.c.preempted_at,
            jobs.c.yield_request,
            jobs.c.spec,
        ).where(jobs.c.status.in_(IN_FLIGHT), jobs.c.dispatched_at.is_not(None))
    ).all()
    holding = [
        Holding(
            str(r.id),
            r.tenant,
            str(r.queue),
            str(r.status),
            int(r.priority),
            aware(r.started_at),
            aware(r.preempted_at),
            r.yield_request,
            _size(cluster_of(r.spec)),
        )
        for r in holding_rows
    ]
    rank = (
        func.row_number()
        .over(partition_by=(jobs.c.tenant, jobs.c.queue), order_by=(priority.desc(), jobs.c.seq))
        .label("rank")
    )
    waiting_q = select(
        jobs.c.id,
        jobs.c.tenant,
        jobs.c.queue,
        priority.label("priority"),
        jobs.c.seq,
        jobs.c.timeout_s,
        jobs.c.spec,
        jobs.c.request_id,
        jobs.c.trace_context,
        rank,
    ).where(jobs.c.status == JobStatus.queued.value, jobs.c.dispatched_at.is_(None))
    if queue is not None:
        waiting_q = waiting_q.where(jobs.c.queue == queue)
    inner = waiting_q.subquery()
    outer = select(inner)
    if per_tenant is not None:
        outer = outer.where(inner.c.rank <= per_tenant)
    waiting = [
        Waiting(
            str(r.id),
            r.tenant,
            str(r.queue),
            int(r.priority),
            int(r.seq),
            r.timeout_s,
            cluster=cluster_of(r.spec),
            request_id=r.request_id,
            trace_context=r.trace_context,
        )
        for r in conn.execute(outer).all()
    ]
    snapshot = Snapshot(now, policy, live_slots(conn, now, policy.live_s), holding, waiting)
    names = {job.tenant for job in holding} | {job.tenant for job in waiting}
    snapshot.shares = read_shares(conn, names)
    for q, tenant in {(job.queue, job.tenant) for job in waiting}:
        last = conn.execute(
            select(func.max(jobs.c.dispatched_at)).where(
                jobs.c.tenant.is_(None) if tenant is None else jobs.c.tenant == tenant,
                jobs.c.queue == q,
            )
        ).scalar_one_or_none()
        if last is not None:
            snapshot.served[q, tenant] = aware(last)  # type: ignore[assignment]
    return snapshot


def cluster_of(spec: Any) -> Distribution | None:
    """The stored spec's cluster shape, or None for a one-worker job."""
    shape = spec.get("distribution") if isinstance(spec, dict) else None
    return Distribution.model_validate(shape) if shape else None


def _size(cluster: Distribution | None) -> int:
    return cluster.size if cluster is not None else 1


def read_shares(conn: Connection, names: set[str | None]) -> dict[str | None, tuple[Share, bool]]:
    """Each tenant's share and whether it may borrow (jobs without a tenant: the default
    tenant's)."""
    lookup = {DEFAULT_TENANT if name is None else name for name in names}
    if not lookup:
        return {}
    found: dict[str, tuple[Share, bool]] = {}
    for name, quotas in conn.execute(
        select(tenants.c.name, tenants.c.quotas).where(tenants.c.name.in_(lookup))
    ).all():
        quotas = quotas or {}
        found[name] = (Share.model_validate(quotas.get("share") or {}), quotas.get("borrow", True))
    default = (Share(), True)
    return {name: found.get(DEFAULT_TENANT if name is None else name, default) for name in names}
