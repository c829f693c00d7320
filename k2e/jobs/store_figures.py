"""What GET /metrics reads from the job store at scrape time: jobs by queue and status,
each queue's oldest waiting job, the training speed of running jobs, each tenant's active
jobs against its quota, the worker registry's live and lost workers, and the tally ledger
(k2e.jobs.tallies). Read from the store, every API process answers the same figures, and
they include what the workers did: nothing to add up across processes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, case, func, select
from sqlalchemy.engine import Connection

from k2e.db import aware, utcnow
from k2e.jobs.tallies import Tally, read_tallies
from k2e.schemas import JobStatus
from k2e.tables import jobs, tenants, workers
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.tenancy.quota import ACTIVE

OTHER_TENANTS = "other"


@dataclass(frozen=True)
class TenantLoad:
    tenant: str
    active: int
    limit: int | None  # None for the "other" bucket


@dataclass
class StoreFigures:
    jobs: dict[tuple[str, str], int]  # (queue, status) -> jobs
    oldest_wait_s: dict[str, float]  # queue -> seconds its oldest queued job has waited
    steps_per_sec: dict[str, float]  # queue -> the sum over its running jobs
    tenants: list[TenantLoad]
    workers: dict[str, int]  # "live" / "lost" -> registered workers
    tallies: list[Tally]


def read_figures(
    engine: Engine, default_max_active: int, live_s: float, tenant_labels: int
) -> StoreFigures:
    """The store's figures; at most ``tenant_labels`` tenants by name, the busiest, the
    rest summed as "other"."""
    with engine.connect() as conn:
        return StoreFigures(
            jobs=_jobs_by_status(conn),
            oldest_wait_s=_oldest_waits(conn),
            steps_per_sec=_training_speed(conn),
            tenants=busiest(_tenant_loads(conn, default_max_active), tenant_labels),
            workers=_workers(conn, live_s),
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


def _jobs_by_status(conn: Connection) -> dict[tuple[str, str], int]:
    query = select(jobs.c.queue, jobs.c.status, func.count()).group_by(jobs.c.queue, jobs.c.status)
    return {(str(q), str(s)): int(n) for q, s, n in conn.execute(query).all()}


def _oldest_waits(conn: Connection) -> dict[str, float]:
    # A preempted job waits since it was preempted, not since it was submitted.
    since = case(
        (jobs.c.preempted_at > jobs.c.created_at, jobs.c.preempted_at), else_=jobs.c.created_at
    )
    query = (
        select(jobs.c.queue, func.min(since))
        .where(jobs.c.status == JobStatus.queued.value)
        .group_by(jobs.c.queue)
    )
    now = utcnow()
    waits = {}
    for queue, oldest in conn.execute(query).all():
        at = aware(oldest)
        if at is not None:
            waits[str(queue)] = max(0.0, (now - at).total_seconds())
    return waits


def _training_speed(conn: Connection) -> dict[str, float]:
    query = select(jobs.c.queue, jobs.c.progress).where(jobs.c.status == JobStatus.running.value)
    speed: Counter[str] = Counter()
    for queue, progress in conn.execute(query).all():
        value = (progress or {}).get("steps_per_sec")
        speed[str(queue)] += float(value) if isinstance(value, int | float) else 0.0
    return dict(speed)


def _tenant_loads(conn: Connection, default_max_active: int) -> list[TenantLoad]:
    active = {
        (DEFAULT_TENANT if tenant is None else str(tenant)): int(n)
        for tenant, n in conn.execute(
            select(jobs.c.tenant, func.count())
            .where(jobs.c.status.in_(ACTIVE))
            .group_by(jobs.c.tenant)
        ).all()
    }
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
    counts = {"live": 0, "lost": 0}
    for state, n in conn.execute(select(live, func.count()).group_by(live)).all():
        counts[str(state)] = int(n)
    return counts
