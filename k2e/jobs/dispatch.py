"""Hands waiting jobs to the broker by the scheduling rules, and asks running jobs to
yield their worker to a waiting job that ranks above them.

One pass (``Dispatcher.pump``) looks at every tenant and every queue, inside one
transaction that first updates the ``k2e_scheduler`` row: passes from any process
(the API after a submission or a cancel, a worker after a job ends or yields, the
reconciler every round, a worker registering) take turns, so each sees what the one
before it handed over.

Per queue, the job slots are those of its live workers (k2e.jobs.workers):

- No live worker known for the queue: jobs are handed to the broker, which holds them
  until a worker starts: each tenant's waiting jobs up to its in-flight limit K.
- Otherwise jobs are handed over only while the queue's jobs handed over and not ended
  (queued in the broker, running, cancelling) are fewer than its slots, best first in the
  order of k2e.jobs.scheduling (tenants below their share, then priority, then the
  tenant holding fewer slots, then turns, then age). A tenant never has more than K jobs
  handed over, and takes a slot beyond its share only if it may borrow.

A cluster job (spec.distribution) takes as many slots as it has members, all at once:
it is handed over only while that many are free, and never through the broker alone
(with no live worker known, it waits for one). Its hand-over places a new gang
(k2e.jobs.gangs): the chief's task is the job's own, one more task goes out per other
member. The rule that keeps gangs from deadlocking and large ones from starving: slots
are reserved for a whole gang before any member is sent (so two gangs never each hold
half of what they need), and a queue hands over strictly in its order: when the best
waiting job needs more slots than are free, nothing behind it takes them, and no job is
preempted for the jobs behind it; slots free as running jobs end, until it fits.

Then, for a queue that is full while a waiting job could use a slot, a running job is
asked to yield (k2e.jobs.preemption): ``yield_request`` = "preempt". Its worker
checkpoints, stops, puts it back in the queue and pumps again; the slot goes to the best
waiting job then.

Claiming a job is a conditional UPDATE, so a job is handed over once however many pump
at once.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from sqlalchemy import Engine, insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from k2e.db import utcnow
from k2e.errors import Unavailable
from k2e.jobs import gangs
from k2e.jobs.preemption import choose_victims
from k2e.jobs.queueing import TaskSender
from k2e.jobs.scheduling import Policy, Snapshot, Waiting, read_snapshot
from k2e.schemas import JobStatus
from k2e.settings import Settings, get_settings
from k2e.tables import jobs, scheduler
from k2e.tenancy.scope import Scope, tenant_of

log = logging.getLogger("k2e.dispatch")
PREEMPT = "preempt"


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        sender: TaskSender,
        inflight_per_tenant: int,
        policy: Policy | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        base = policy if policy is not None else Policy.from_settings(get_settings())
        self.policy = replace(base, inflight_per_tenant=inflight_per_tenant)

    @classmethod
    def from_settings(cls, engine: Engine, sender: TaskSender, settings: Settings) -> Dispatcher:
        policy = Policy.from_settings(settings)
        return cls(engine, sender, policy.inflight_per_tenant, policy)

    @property
    def limit(self) -> int:
        return self.policy.inflight_per_tenant

    def pump(self, scope: Scope) -> list[str]:
        """One pass over every tenant and queue; returns the ids of the jobs it handed
        over that are in ``scope`` (the caller's tenant, or every tenant's with
        ``ANY_TENANT``): a caller never learns another tenant's job.

        Raises Unavailable when the broker does not answer while a job in ``scope`` was
        being handed over; that job and those after it go back to waiting.
        """
        tenant = tenant_of(scope)
        claimed = self._pass()
        sent: list[str] = []
        for index, job in enumerate(claimed):
            try:
                self._send(job)
            except Unavailable:
                unsent = claimed[index:]
                self.unclaim([j.id for j in unsent])
                if any(tenant is None or j.tenant == tenant for j in unsent):
                    raise
                log.warning(
                    "the broker does not answer: %d jobs wait for the next pass", len(unsent)
                )
                break
            if tenant is None or job.tenant == tenant:
                sent.append(job.id)
        return sent

    def _send(self, job: Waiting) -> None:
        """The job's task; for a cluster, the chief's (the job's own) and each member's."""
        self.sender.send_train(job.id, job.queue, job.timeout_s, job.request_id, job.trace_context)
        if job.cluster is not None and job.gang is not None:
            for role, index in job.cluster.roles()[1:]:
                self.sender.send_member(job.id, job.queue, job.gang, role, index)

    def _pass(self) -> list[Waiting]:
        """Claim what the rules hand over and ask for the yields they call for, in one
        transaction behind the scheduler's row; returns the claimed jobs."""
        with self.engine.begin() as conn:
            take_turn(conn)
            snapshot = read_snapshot(conn, self.policy, per_tenant=self.limit)
            claimed = [
                placed
                for job in choose_handovers(snapshot)
                if (placed := _claim(conn, job, snapshot)) is not None
            ]
            for victim in choose_victims(snapshot, {job.id for job in claimed}):
                asked = conn.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == victim.id,
                        jobs.c.status == JobStatus.running.value,
                        jobs.c.yield_request.is_(None),
                    )
                    .values(yield_request=PREEMPT)
                ).rowcount
                if asked:
                    log.info("job %s: asked to yield its %s slot", victim.id, victim.queue)
        return claimed

    def unclaim(self, job_ids: list[str]) -> None:
        """Put handed-over jobs that are still queued back among the waiting ones."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(job_ids), jobs.c.status == JobStatus.queued.value)
                .values(dispatched_at=None)
            )


def take_turn(conn: Connection) -> None:
    """Update the scheduler's one row (created when missing): a pass in another process
    waits here until this transaction ends."""
    now = utcnow()
    turn = update(scheduler).where(scheduler.c.id == 1).values(passed_at=now)
    if conn.execute(turn).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(scheduler).values(id=1, passed_at=now))
    except IntegrityError:  # another pass created it first: wait for its turn
        conn.execute(turn)


def choose_handovers(snapshot: Snapshot) -> list[Waiting]:
    """The waiting jobs to hand over now, in order; counted in ``snapshot`` as taken."""
    picks: list[Waiting] = []
    queues = sorted({job.queue for job in snapshot.waiting})
    for queue in queues:
        waiting = [job for job in snapshot.waiting if job.queue == queue]
        slots = snapshot.slots.get(queue, 0)
        if slots <= 0:
            # No live worker known: the broker holds them until one starts. A cluster
            # waits for live workers (its gang needs their slots counted).
            for job in sorted(waiting, key=lambda j: (-j.priority, j.seq)):
                if job.cluster is not None:
                    continue
                if snapshot.inflight[job.tenant] < snapshot.policy.inflight_per_tenant:
                    snapshot.take(job)
                    picks.append(job)
            continue
        free = slots - sum(n for (q, _), n in snapshot.held.items() if q == queue)
        while free > 0:
            eligible = [job for job in waiting if snapshot.may_take(queue, job.tenant)]
            if not eligible:
                break
            best = min(eligible, key=snapshot.order_key)
            if best.size > free:
                break  # strict order: the slots that free up are kept for it
            waiting.remove(best)
            snapshot.take(best)
            picks.append(best)
            free -= best.size
    return picks


def _claim(conn: Connection, job: Waiting, snapshot: Snapshot) -> Waiting | None:
    """Mark the job handed over (once); a cluster's hand-over also places its gang."""
    taken = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job.id,
            jobs.c.status == JobStatus.queued.value,
            jobs.c.dispatched_at.is_(None),
        )
        .values(dispatched_at=snapshot.now, updated_at=snapshot.now)
    ).rowcount
    if not taken:
        return None
    if job.cluster is None:
        return job
    return replace(job, gang=gangs.place(conn, job.id, job.cluster))
