"""Which running jobs a scheduling pass asks to yield their worker (k2e.jobs.dispatch).

For a queue whose slots are all taken while waiting jobs could use one, each such job
(best first, k2e.jobs.scheduling's order) may name one victim among the queue's running
jobs that are not already asked to yield and were not preempted within the cool-down:

1. when the waiting job's tenant holds less than its share of the queue, a job of a
   tenant holding more than its share (a borrowed slot), whatever its priority;
2. else a job of lower priority, of the waiting job's own tenant or of a tenant holding
   more than its share (a guaranteed slot is never taken for priority alone).

A waiting job whose tenant is at its in-flight limit (K) may still take the slot of its
own tenant's lower-priority running job: that job's yield brings the tenant back under
the limit.

A cluster job that ranks first among a queue's waiting jobs stops preemption in that
queue: it waits for its slots to free (k2e.jobs.dispatch), and a job behind it must not
take them. A running cluster yields all its slots.

Among candidates the lowest priority goes first, then the most recently started. Jobs
already asked to yield count first: their slots go to the best waiting jobs, so there
are never more victims than waiting jobs that could use their slots. Cancelling jobs
and jobs still waiting in the broker are never victims.
"""

from __future__ import annotations

from datetime import timedelta

from k2e.jobs.scheduling import Holding, Snapshot, Waiting
from k2e.schemas import JobStatus


def choose_victims(snapshot: Snapshot, handed_over: set[str]) -> list[Holding]:
    """The running jobs to ask to yield, given the pass's hand-overs (already counted in
    ``snapshot``); updates ``snapshot`` as if each victim's slot went to its waiting job."""
    victims: list[Holding] = []
    cooled = snapshot.now - timedelta(seconds=snapshot.policy.cooldown_s)
    for queue, slots in sorted(snapshot.slots.items()):
        if slots <= 0:
            continue
        waiting = [j for j in snapshot.waiting if j.queue == queue and j.id not in handed_over]
        if not waiting or _cluster_first(snapshot, waiting):
            continue
        in_queue = [h for h in snapshot.holding if h.queue == queue]
        pending = [h for h in in_queue if h.yield_request is not None]
        for job in pending:  # its slot is as good as free
            _release(snapshot, job)
        candidates = [
            h
            for h in in_queue
            if h.status == JobStatus.running.value
            and h.yield_request is None
            and (h.preempted_at is None or h.preempted_at <= cooled)
        ]
        freed = len(pending)
        while waiting:
            eligible = [
                j
                for j in waiting
                if snapshot.may_take(queue, j.tenant) or _own_lower(j, candidates) is not None
            ]
            if not eligible:
                break
            best = min(eligible, key=snapshot.order_key)
            waiting.remove(best)
            if not snapshot.may_take(queue, best.tenant):  # at its limit: its own job yields
                own = _own_lower(best, candidates)
                assert own is not None
                candidates.remove(own)
                victims.append(own)
                _release(snapshot, own)
                snapshot.take(best)
                continue
            if freed > 0:  # a pending yield's slot goes to it
                freed -= 1
                snapshot.take(best)
                continue
            victim = victim_for(snapshot, best, candidates)
            if victim is None:
                continue
            candidates.remove(victim)
            victims.append(victim)
            _release(snapshot, victim)
            snapshot.take(best)
    return victims


def victim_for(snapshot: Snapshot, waiting: Waiting, running: list[Holding]) -> Holding | None:
    """The job ``waiting`` may take the slot of (the module's rules), or None."""
    queue = waiting.queue

    def borrowed(job: Holding) -> bool:
        return snapshot.held[queue, job.tenant] > snapshot.share(queue, job.tenant)

    if snapshot.below_share(queue, waiting.tenant):
        reclaim = [j for j in running if j.tenant != waiting.tenant and borrowed(j)]
        if reclaim:
            return min(reclaim, key=_victim_order)
    lower = [
        j
        for j in running
        if j.priority < waiting.priority and (j.tenant == waiting.tenant or borrowed(j))
    ]
    return min(lower, key=_victim_order) if lower else None


def _own_lower(waiting: Waiting, running: list[Holding]) -> Holding | None:
    """The waiting job's own tenant's lower-priority running job to yield to it, if any."""
    own = [j for j in running if j.tenant == waiting.tenant and j.priority < waiting.priority]
    return min(own, key=_victim_order) if own else None


def _victim_order(job: Holding) -> tuple[int, float]:
    """Lowest priority first, then the most recently started."""
    started = job.started_at.timestamp() if job.started_at is not None else float("inf")
    return (job.priority, -started)


def _cluster_first(snapshot: Snapshot, waiting: list[Waiting]) -> bool:
    """Whether the queue's best waiting job is a cluster: it waits for slots to free as
    jobs end (k2e.jobs.dispatch's strict order), and no job behind it preempts one."""
    eligible = [j for j in waiting if snapshot.may_take(j.queue, j.tenant)]
    return bool(eligible) and min(eligible, key=snapshot.order_key).cluster is not None


def _release(snapshot: Snapshot, job: Holding) -> None:
    snapshot.held[job.queue, job.tenant] -= job.size
    snapshot.inflight[job.tenant] -= 1
