"""Cluster jobs in the scheduler (k2e.jobs.dispatch) against a real store: a gang is
handed over only when all its slots are free, places its members' rows, sends one task
per member, and holds the queue's order (no deadlock between gangs, no starvation)."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from k2e.cluster_schemas import Distribution
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.gangs import GangStore, tf_config
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.tables import jobs
from k2e.tenancy.scope import ANY_TENANT
from tests.support.postgres import fresh_postgres_schema
from tests.unit.test_scheduler import (
    HIGH,
    LOW,
    POLICY,
    asked_to_yield,
    finish,
    row,
    start,
    submit,
    worker,
)


class GangSender:
    """Stands in for the broker: keeps every task handed over, in order."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, ...]] = []

    def send_train(self, job_id: str, queue: str, timeout_s: int | None, *context: object) -> None:
        self.tasks.append(("train", job_id))

    def send_member(self, job_id: str, queue: str, gang: int, role: str, index: int) -> None:
        self.tasks.append(("member", job_id, str(gang), f"{role}:{index}"))

    def jobs(self) -> list[str]:
        return [task[1] for task in self.tasks if task[0] == "train"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobLeases]:
    if request.param == "sqlite":
        s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
        s.create_schema()
        yield s
        s.engine.dispose()
    else:
        with fresh_postgres_schema("k2e_gangs") as url:
            s = JobLeases(url)
            s.create_schema()
            yield s
            s.engine.dispose()


@pytest.fixture
def sender() -> GangSender:
    return GangSender()


@pytest.fixture
def dispatcher(store: JobLeases, sender: GangSender) -> Dispatcher:
    return Dispatcher(store.engine, sender, 4, POLICY)  # type: ignore[arg-type]


def submit_cluster(
    store: JobLeases, tenant: str, workers: int, ps: int, evaluator: bool = False, priority=200
) -> str:
    job_id = str(uuid.uuid4())
    shape = Distribution(workers=workers, parameter_servers=ps, evaluator=evaluator)
    spec = {"distribution": shape.model_dump()}
    store.create(NewJob(job_id, tenant, spec, "cpu", f"jobs/{job_id}", 10, priority=priority))
    return job_id


def test_a_gang_is_handed_over_whole_with_one_task_per_member(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    worker(store, 4)
    job = submit_cluster(store, "acme", workers=2, ps=1, evaluator=True)
    dispatcher.pump(ANY_TENANT)
    assert sender.tasks == [
        ("train", job),
        ("member", job, "1", "worker:0"),
        ("member", job, "1", "ps:0"),
        ("member", job, "1", "evaluator:0"),
    ]
    gangs = GangStore(store.engine)
    assert gangs.gang_of(job) == 1
    members = gangs.members(job)
    assert [(m.name, m.state, m.gang) for m in members] == [
        ("chief:0", "placed", 1),
        ("worker:0", "placed", 1),
        ("ps:0", "placed", 1),
        ("evaluator:0", "placed", 1),
    ]


def test_a_member_joins_once_and_only_its_newest_gang(store: JobLeases) -> None:
    worker(store, 3)
    job = submit_cluster(store, "acme", workers=2, ps=1)
    Dispatcher(store.engine, GangSender(), 4, POLICY).pump(ANY_TENANT)  # type: ignore[arg-type]
    gangs = GangStore(store.engine)
    assert gangs.join(job, 1, "ps", 0, "w1", "node-a", "10.0.0.5:2222")
    assert not gangs.join(job, 1, "ps", 0, "w2", "node-b", "10.0.0.6:2222")  # held
    assert not gangs.join(job, 2, "worker", 0, "w3", "node-c", "10.0.0.7:2222")  # stale
    gangs.join(job, 1, "chief", 0, "w4", "node-d", "10.0.0.8:2222")
    gangs.join(job, 1, "worker", 0, "w5", "node-e", "10.0.0.9:2222")
    config = tf_config(gangs.members(job), "worker", 0)
    assert config == {
        "cluster": {
            "chief": ["10.0.0.8:2222"],
            "worker": ["10.0.0.9:2222"],
            "ps": ["10.0.0.5:2222"],
        },
        "task": {"type": "worker", "index": 0},
    }


def test_two_gangs_that_need_two_of_three_slots_never_split_them(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    worker(store, 3)
    first = submit_cluster(store, "acme", workers=1, ps=1)
    second = submit_cluster(store, "globex", workers=1, ps=1)
    dispatcher.pump(ANY_TENANT)
    dispatcher.pump(ANY_TENANT)
    assert sender.jobs() == [first]  # one slot stays free: half a gang is never sent
    assert GangStore(store.engine).gang_of(second) is None
    start(store, first)
    finish(store, first)
    dispatcher.pump(ANY_TENANT)
    assert sender.jobs() == [first, second]


def test_a_waiting_gang_keeps_freed_slots_from_the_jobs_behind_it(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    worker(store, 3)
    running = [submit(store, "acme"), submit(store, "acme")]
    dispatcher.pump(ANY_TENANT)
    start(store, *running)
    big = submit_cluster(store, "globex", workers=2, ps=1, priority=HIGH)
    small = submit(store, "initech")
    dispatcher.pump(ANY_TENANT)
    assert big not in sender.jobs()
    assert small not in sender.jobs()  # the free slot is kept for the gang ahead of it
    finish(store, running[0])
    dispatcher.pump(ANY_TENANT)
    assert small not in sender.jobs()
    finish(store, running[1])
    dispatcher.pump(ANY_TENANT)
    assert sender.jobs()[-1] == big
    assert small not in sender.jobs()


def test_a_gang_first_in_line_preempts_nothing_for_the_jobs_behind_it(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    worker(store, 2)
    low = [submit(store, "acme", LOW), submit(store, "acme", LOW)]
    dispatcher.pump(ANY_TENANT)
    start(store, *low)
    submit_cluster(store, "globex", workers=1, ps=1, priority=HIGH)
    submit(store, "initech", HIGH)
    dispatcher.pump(ANY_TENANT)
    assert asked_to_yield(store) == set()


def test_without_a_live_worker_a_gang_is_not_handed_to_the_broker(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    job = submit_cluster(store, "acme", workers=2, ps=1)
    single = submit(store, "acme")
    dispatcher.pump(ANY_TENANT)
    assert sender.jobs() == [single]
    assert row(store, job)["dispatched_at"] is None


def test_a_gang_placed_again_gets_a_new_number_and_fresh_rows(
    store: JobLeases, dispatcher: Dispatcher, sender: GangSender
) -> None:
    worker(store, 3)
    job = submit_cluster(store, "acme", workers=2, ps=1)
    dispatcher.pump(ANY_TENANT)
    gangs = GangStore(store.engine)
    gangs.join(job, 1, "ps", 0, "w1", "node-a", "10.0.0.5:2222")
    with store.engine.begin() as conn:  # what a yield or an expired lease does
        conn.execute(update(jobs).where(jobs.c.id == job).values(dispatched_at=None))
    dispatcher.pump(ANY_TENANT)
    assert gangs.gang_of(job) == 2
    assert {(m.gang, m.state) for m in gangs.members(job)} == {(2, "placed")}
    assert ("member", job, "2", "ps:0") in sender.tasks
