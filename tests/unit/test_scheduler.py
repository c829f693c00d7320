"""The scheduler (k2e.jobs.dispatch) against a real store, SQLite and PostgreSQL: which
waiting jobs a pass hands over, and which running job it asks to yield."""

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from k2e.db import utcnow
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.jobs.scheduling import Policy
from k2e.jobs.workers import WorkerEntry, WorkerRegistry
from k2e.schemas import JobStatus
from k2e.tables import jobs, workers
from k2e.tenancy.bodies import EffectiveQuotas, Quotas, Share
from k2e.tenancy.scope import ANY_TENANT, Scope
from k2e.tenancy.tenant_store import TenantStore
from tests.support.postgres import fresh_postgres_schema

LOW, NORMAL, HIGH = 100, 200, 300
POLICY = Policy(
    classes={"low": LOW, "normal": NORMAL, "high": HIGH},
    inflight_per_tenant=2,
    cooldown_s=300,
    live_s=15,
)


class RecordingSender:
    """Stands in for the broker: keeps what was handed over, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_train(self, job_id: str, queue: str, timeout_s: int | None, *_: str | None) -> None:
        self.sent.append(job_id)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobLeases]:
    if request.param == "sqlite":
        s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
        s.create_schema()
        yield s
        s.engine.dispose()
    else:
        with fresh_postgres_schema("k2e_sched") as url:
            s = JobLeases(url)
            s.create_schema()
            yield s
            s.engine.dispose()


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def dispatcher(store: JobLeases, sender: RecordingSender) -> Dispatcher:
    return Dispatcher(store.engine, sender, 2, POLICY)  # type: ignore[arg-type]


def submit(store: JobLeases, tenant: str, priority: int = NORMAL, queue: str = "cpu") -> str:
    job_id = str(uuid.uuid4())
    store.create(
        NewJob(job_id, tenant, {}, queue, f"jobs/{job_id}", 10, priority=priority)  # type: ignore[arg-type]
    )
    return job_id


def worker(store: JobLeases, slots: int, queues: tuple[str, ...] = ("cpu",), name: str = "") -> str:
    name = name or f"host:{uuid.uuid4().hex[:6]}"
    WorkerRegistry(store.engine).register(WorkerEntry(name, "host", queues, slots, "1"))
    return name


def tenant(store: JobLeases, name: str, cpu: int, borrow: bool = True) -> None:
    defaults = EffectiveQuotas(max_active_jobs=100, max_bytes=1, max_steps=1, max_run_s=1)
    TenantStore(store.engine, defaults).create_tenant(
        name, Quotas(share=Share(cpu=cpu), borrow=borrow)
    )


def start(store: JobLeases, *job_ids: str) -> None:
    for job_id in job_ids:
        assert store.start(job_id, f"w:{job_id}", 30) is not None


def row(store: JobLeases, job_id: str):  # noqa: ANN201
    with store.engine.connect() as conn:
        return conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()


def asked_to_yield(store: JobLeases) -> set[str]:
    with store.engine.connect() as conn:
        return set(
            conn.execute(select(jobs.c.id).where(jobs.c.yield_request == "preempt")).scalars()
        )


def yielded(store: JobLeases, job_id: str) -> None:
    """What the worker does for a job asked to yield: back to waiting, counted."""
    with store.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                status=JobStatus.queued.value,
                dispatched_at=None,
                yield_request=None,
                preemptions=1,
                preempted_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
            )
        )


def finish(store: JobLeases, job_id: str) -> None:
    assert store.finish(job_id, JobStatus.succeeded, f"w:{job_id}")


def test_a_free_slot_goes_to_the_highest_priority_then_the_oldest(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 1)
    low = submit(store, "acme", LOW)
    first = submit(store, "acme", NORMAL)
    second = submit(store, "acme", NORMAL)
    high = submit(store, "acme", HIGH)
    order = []
    for _ in range(4):
        dispatcher.pump(ANY_TENANT)
        order.append(sender.sent[-1])
        start(store, sender.sent[-1])
        dispatcher.pump(ANY_TENANT)  # the slot is taken: nothing more
        assert len(sender.sent) == len(order)
        finish(store, sender.sent[-1])
    assert order == [high, first, second, low]


def test_equal_tenants_take_turns_whatever_one_has_queued(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 1)
    burst = [submit(store, "burst") for _ in range(5)]
    dispatcher.pump(ANY_TENANT)
    start(store, burst[0])
    calm = submit(store, "calm")
    finish(store, burst[0])
    dispatcher.pump(ANY_TENANT)
    assert sender.sent == [burst[0], calm]


def test_a_tenant_has_at_most_k_jobs_handed_over(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 5)
    ids = [submit(store, "acme") for _ in range(3)]
    other = submit(store, "globex")
    assert dispatcher.pump(Scope.of("acme")) == ids[:2]
    assert dispatcher.pump(Scope.of("acme")) == []  # free slots, but two are in flight
    # The other tenant's job was handed over too, and not named to this tenant.
    assert sorted(sender.sent) == sorted([*ids[:2], other])


def test_without_a_live_worker_the_broker_holds_k_jobs_per_tenant(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    name = worker(store, 1)
    with store.engine.begin() as conn:  # a worker that stopped beating long ago
        old = utcnow() - timedelta(seconds=60)
        conn.execute(update(workers).where(workers.c.name == name).values(seen_at=old))
    ids = [submit(store, "acme") for _ in range(3)]
    gpu = submit(store, "globex", queue="gpu")
    dispatcher.pump(ANY_TENANT)
    assert sender.sent == [*ids[:2], gpu]
    worker(store, 1)  # a live worker: the queue is full (2 handed over, 1 slot)
    start(store, ids[0])
    finish(store, ids[0])
    dispatcher.pump(ANY_TENANT)
    assert sender.sent == [*ids[:2], gpu]


def test_a_waiting_higher_priority_job_preempts_the_lowest_newest_running_one(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 2)
    older_low = submit(store, "acme", LOW)
    newer_low = submit(store, "globex", LOW)
    dispatcher.pump(ANY_TENANT)
    start(store, older_low)
    start(store, newer_low)
    same = submit(store, "initech", LOW)
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == set()  # equal priority: it waits
    high = submit(store, "initech", HIGH)
    for _ in range(3):  # however often it pumps: one victim for one waiting job
        dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == {newer_low}
    yielded(store, newer_low)
    dispatcher.pump(ANY_TENANT)
    assert sender.sent[-1] == high
    assert same not in sender.sent
    assert newer_low not in sender.sent[2:]


def test_a_cancelling_job_and_a_job_in_its_cool_down_are_not_victims(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 2)
    cancelling, cooling = submit(store, "acme", LOW), submit(store, "globex", LOW)
    dispatcher.pump(ANY_TENANT)
    start(store, cancelling, cooling)
    store.request_cancel(cancelling, ANY_TENANT)
    with store.engine.begin() as conn:
        recent = utcnow() - timedelta(seconds=POLICY.cooldown_s - 60)
        conn.execute(update(jobs).where(jobs.c.id == cooling).values(preempted_at=recent))
    submit(store, "initech", HIGH)
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == set()
    with store.engine.begin() as conn:
        past = utcnow() - timedelta(seconds=POLICY.cooldown_s + 60)
        conn.execute(update(jobs).where(jobs.c.id == cooling).values(preempted_at=past))
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == {cooling}


def test_a_tenant_below_its_share_reclaims_the_borrowed_slot_not_the_guaranteed_one(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 2)
    tenant(store, "acme", cpu=1)
    tenant(store, "globex", cpu=1)
    guaranteed = submit(store, "acme", NORMAL)
    borrowed = submit(store, "acme", NORMAL)
    dispatcher.pump(ANY_TENANT)
    start(store, guaranteed)
    start(store, borrowed)  # started last: the newest
    mine = submit(store, "globex", LOW)  # below its share: priority does not matter
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == {borrowed}
    yielded(store, borrowed)
    dispatcher.pump(ANY_TENANT)
    assert sender.sent[-1] == mine
    start(store, mine)
    # Each tenant holds its share now: globex's high job takes no slot of acme's (whose
    # job has a lower priority than it), only its own low job's.
    submit(store, "globex", HIGH)
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == {mine}


def test_a_tenant_that_may_not_borrow_waits_at_its_share(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 3)
    tenant(store, "acme", cpu=1, borrow=False)
    ids = [submit(store, "acme") for _ in range(2)]
    dispatcher.pump(ANY_TENANT)
    assert sender.sent == ids[:1]


def test_suspended_jobs_are_never_handed_over(
    store: JobLeases, dispatcher: Dispatcher, sender: RecordingSender
) -> None:
    worker(store, 2)
    job_id = submit(store, "acme")
    with store.engine.begin() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(status=JobStatus.suspended.value)
        )
    dispatcher.pump(ANY_TENANT)
    assert sender.sent == []
    assert row(store, job_id)["dispatched_at"] is None


def test_a_tenant_at_its_limit_preempts_its_own_lower_priority_job(
    store: JobLeases, sender: RecordingSender
) -> None:
    one_each = Dispatcher(store.engine, sender, 1, POLICY)  # type: ignore[arg-type]
    worker(store, 1)
    low = submit(store, "acme", LOW)
    one_each.pump(ANY_TENANT)
    start(store, low)
    high = submit(store, "acme", HIGH)
    one_each.pump(ANY_TENANT)
    assert asked_to_yield(store) == {low}  # K = 1 is held by the job that yields
    yielded(store, low)
    one_each.pump(ANY_TENANT)
    assert sender.sent == [low, high]
    other_low = submit(store, "acme", LOW)
    one_each.pump(ANY_TENANT)
    assert other_low not in sender.sent  # equal or lower priority waits its turn
