"""What GET /metrics reads from the job store at scrape time: jobs by queue and status,
each queue's slots, busy slots, waiting jobs and oldest waiting job, the training speed
of running jobs, each tenant's active jobs against its quota, the worker registry's live
and lost workers, and the tally ledger (k2e.jobs.tallies). Read from the store, every API
process answers the same figures, and they include what the workers did: nothing to add
up across processes. The jobs table is scanned once (one grouped count)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, case, func, select
from sqlalchemy.engine import Connection

from k2e.db import aware, utcnow
from k2e.jobs.queueing import CPU_QUEUE, GPU_QUEUE
from k2e.jobs.scheduling import IN_FLIGHT, live_slots, read_shares
from k2e.jobs.tallies import Tally, read_tallies
from k2e.schemas import JobStatus
from k2e.tables import jobs, tenants, workers
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.tenancy.quota import ACTIVE

OTHER_TENANTS = "other"
QUEUED = JobStatus.queued.value
# (queue, status, tenant, handed over to the broker) -> jobs
JobCounts = Counter[tuple[str, str, str | None, bool]]


@dataclass(frozen=True)
class TenantLoad:
    tenant: str
    active: int
    limit: int | None  # None for the "other" bucket


@dataclass(frozen=True)
class QueueFigures:
    """A queue as GET /queues counts it (k2e.jobs.placement.summary), without the tenants."""

    name: str
    slots: int
    running: int
    waiting: int
    borrowed: int


@dataclass
class StoreFigures:
    jobs: dict[tuple[str, str], int]  # (queue, status) -> jobs
    oldest_wait_s: dict[str, float]  # queue -> seconds its oldest queued job has waited
    steps_per_sec: dict[str, float]  # queue -> the sum over its running jobs
    tenants: list[TenantLoad]
    workers: dict[str, int]  # "live" / "lost" -> registered workers
    queues: list[QueueFigures]
    tallies: list[Tally]


def read_figures(
    engine: Engine, default_max_active: int, live_s: float, tenant_labels: int
) -> StoreFigures:
    """The store's figures; at most ``tenant_labels`` tenants by name, the busiest, the
    rest summed as "other"."""
    with engine.connect() as conn:
        counts = _job_counts(conn)
        by_status: Counter[tuple[str, str]] = Counter()
        for (queue, status, _, _), n in counts.items():
            by_status[queue, status] += n
        return StoreFigures(
            jobs=dict(by_status),
            oldest_wait_s=_oldest_waits(conn),
            steps_per_sec=_training_speed(conn),
            tenants=busiest(_tenant_loads(conn, counts, default_max_active), tenant_labels),
            workers=_workers(conn, live_s),
            queues=_queues(conn, counts, live_s),
            tallies=read_tallies(conn),
        )


def busiest(loads: list[TenantLoad], keep: int) -> list[TenantLoad]:
    """The ``keep`` tenants with the most active jobs (ties by name), and the others'
    jobs summed under "other" (present whenever a tenant was left out)."""
    ranked = sorted(loads, key=lambda load: (-load.active, load.tenant))
    kept, rest = ranked[:keep], ranked[keep:]
    if rest:
        kept.append(TenantLoad(OTHER_TENANTS, sum(load.active for load in rest), None))
    return kept


def _job_counts(conn: Connection) -> JobCounts:
    handed = jobs.c.dispatched_at.is_not(None)
    key = (jobs.c.queue, jobs.c.status, jobs.c.tenant, handed)
    counts: JobCounts = Counter()
    for queue, status, tenant, dispatched, n in conn.execute(
        select(*key, func.count()).group_by(*key)
    ).all():
        counts[str(queue), str(status), tenant, bool(dispatched)] += int(n)
    return counts


def _oldest_waits(conn: Connection) -> dict[str, float]:
    # A preempted job waits since it was preempted, not since it was submitted.
    since = case(
        (jobs.c.preempted_at > jobs.c.created_at, jobs.c.preempted_at), else_=jobs.c.created_at
    )
    query = select(jobs.c.queue, func.min(since)).where(jobs.c.status == QUEUED)
    now = utcnow()
    waits = {}
    for queue, oldest in conn.execute(query.group_by(jobs.c.queue)).all():
        at = aware(oldest)
        if at is not None:
            waits[str(queue)] = max(0.0, (now - at).total_seconds())
    return waits


def _training_speed(conn: Connection) -> dict[str, float]:
    query = select(jobs.c.queue, jobs.c.progress).where(jobs.c.status == JobStatus.running.value)
    speed: dict[str, float] = {}
    for queue, progress in conn.execute(query).all():
        value = (progress or {}).get("steps_per_sec")
        rate = float(value) if isinstance(value, int | float) else 0.0
        speed[str(queue)] = speed.get(str(queue), 0.0) + rate
    return speed


def _tenant_loads(conn: Connection, counts: JobCounts, default_max_active: int) -> list[TenantLoad]:
    active: Counter[str] = Counter()
    for (_, status, tenant, _), n in counts.items():
        if status in ACTIVE:
            active[DEFAULT_TENANT if tenant is None else tenant] += n
    loads = []
    for name, quotas in conn.execute(select(tenants.c.name, tenants.c.quotas)).all():
        limit = (quotas or {}).get("max_active_jobs") or default_max_active
        loads.append(TenantLoad(str(name), active.pop(str(name), 0), int(limit)))
    # Jobs of a tenant without a row (the default tenant before its row existed).
    loads += [TenantLoad(name, n, default_max_active) for name, n in active.items()]
    return loads


def _workers(conn: Connection, live_s: float) -> dict[str, int]:
    cutoff = utcnow() - timedelta(seconds=live_s)
    live = case((workers.c.seen_at >= cutoff, "live"), else_="lost")
    found = {"live": 0, "lost": 0}
    for state, n in conn.execute(select(live, func.count()).group_by(live)).all():
        found[str(state)] = int(n)
    return found


def _queues(conn: Connection, counts: JobCounts, live_s: float) -> list[QueueFigures]:
    """The scheduler's view of each queue (the slots of live workers, the jobs holding them
    and their tenants' shares: k2e.jobs.scheduling), counted rather than read job by job
    as a scheduling pass does."""
    slots = live_slots(conn, utcnow(), live_s)
    held: Counter[tuple[str, str | None]] = Counter()
    waiting: Counter[str] = Counter()
    for (queue, status, tenant, dispatched), n in counts.items():
        if dispatched and status in IN_FLIGHT:
            held[queue, tenant] += n
        elif not dispatched and status == QUEUED:
            waiting[queue] += n
    shares = read_shares(conn, {tenant for _, tenant in held})
    names = {CPU_QUEUE, GPU_QUEUE, *slots, *(q for q, _ in held), *waiting}
    figures = []
    for name in sorted(names):
        mine = {tenant: n for (q, tenant), n in held.items() if q == name}
        borrowed = sum(max(0, n - shares[tenant][0].of(name)) for tenant, n in mine.items())
        figures.append(
            QueueFigures(name, slots.get(name, 0), sum(mine.values()), waiting[name], borrowed)
        )
    return figures
