"""The job memory bound on a cluster, against a real store: a member whose worker and
TensorFlow processes grow past it stops its TensorFlow process and marks its row
`out_of_memory`; the chief, seeing that row, stops its own process and the job ends
failed `out_of_memory` (never placed again), as a single-node job does."""

import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from k2e.cluster_schemas import Distribution
from k2e.jobs.gangs import GangStore, Member, place
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.settings import Settings
from worker import cluster_member
from worker.cluster_chief import ChiefCluster
from worker.gang_watch import ClusterDown, MemberLogs, lost_member
from worker.heartbeat import RunControl, job_rss_bytes
from worker.training import JobRunner

SHAPE = Distribution(workers=2, parameter_servers=1)
BROKER = "redis://127.0.0.1:6379/0"


@pytest.fixture
def store(tmp_path) -> Iterator[JobLeases]:
    s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.create_schema()
    yield s
    s.engine.dispose()


def formed_gang(store: JobLeases) -> tuple[str, int, GangStore]:
    job_id = str(uuid.uuid4())
    store.create(
        NewJob(job_id, "t", {"distribution": SHAPE.model_dump()}, "cpu", f"jobs/{job_id}", 10)
    )
    with store.engine.begin() as conn:
        gang = place(conn, job_id, SHAPE)
    assert store.start(job_id, "chief-owner", 30) is not None
    gangs = GangStore(store.engine)
    for port, (role, index) in enumerate(SHAPE.roles(), start=7000):
        assert gangs.join(job_id, gang, role, index, f"w{port}", "node", f"10.0.0.1:{port}")
        gangs.beat(job_id, gang, role, index, "running")
    return job_id, gang, gangs


class Child:
    """A member's TensorFlow process as the watch loops see it: it runs until it is asked
    to stop (SIGTERM: it ends 0 after its checkpoint) or killed."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.terminated = False

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terminated = True
        self.code = 0

    def overdue(self, grace_s: float) -> bool:
        return False

    def kill(self) -> int | None:
        self.code = -9 if self.code is None else self.code
        return self.code

    def join_readers(self) -> None:
        pass


def test_a_member_past_the_bound_stops_and_marks_its_row(store) -> None:
    job_id, gang, gangs = formed_gang(store)
    rss = job_rss_bytes()
    assert rss is not None
    settings = Settings(redis_url=BROKER, job_memory_bytes=max(64 * 1024**2, rss // 2))
    runner = SimpleNamespace(store=store, settings=settings)
    me = Member(job_id, "worker", 0, gang, "running", None, None, None, None)
    logs = MemberLogs(store, job_id, "worker:0")
    child = Child()
    state = cluster_member._watch(gangs, runner, me, child, logs)  # type: ignore[arg-type]
    assert state == "out_of_memory"
    logs.flush()
    [line] = [e["message"] for e in store.events(job_id) if "memory bound" in e["message"]]
    assert line.startswith("[worker:0] memory ")
    assert "K2E_JOB_MEMORY_BYTES" in line

    roomy = Settings(redis_url=BROKER, job_memory_bytes=64 * rss)
    runner = SimpleNamespace(store=store, settings=roomy)
    gangs.beat(job_id, gang, "ps", 0, "failed")  # under its bound, only the gang matters
    state = cluster_member._watch(gangs, runner, me, child, logs)  # type: ignore[arg-type]
    assert state == "lost"


def test_the_chief_ends_the_job_out_of_memory_when_a_member_went_past(store) -> None:
    job_id, gang, gangs = formed_gang(store)
    gangs.beat(job_id, gang, "worker", 0, "out_of_memory")
    me = Member(job_id, "chief", 0, gang, "running", None, None, None, None)
    assert lost_member(gangs.members(job_id), me, 30) == "worker:0"

    settings = Settings(redis_url=BROKER)
    chief = ChiefCluster.__new__(ChiefCluster)
    chief.runner = SimpleNamespace(store=store, settings=settings)  # type: ignore[assignment]
    chief.control = RunControl()
    chief.gangs = gangs
    child = Child()
    chief._watch(me, child, MemberLogs(store, job_id, "chief:0"))  # type: ignore[arg-type]
    assert child.terminated, "the chief's process asked to stop at its next step"
    assert chief.control.out_of_memory.is_set()
    assert chief.control.out_of_memory_in == "worker:0"

    runner = JobRunner.__new__(JobRunner)
    runner.settings = settings
    error = runner._out_of_memory(0, chief.control.out_of_memory_in)
    assert error.reason == "out_of_memory"
    assert error.message.startswith("cluster member worker:0 grew past the job memory bound")


def test_a_failed_member_without_the_memory_row_still_brings_the_gang_down(store) -> None:
    job_id, gang, gangs = formed_gang(store)
    gangs.beat(job_id, gang, "worker", 0, "failed")
    me = Member(job_id, "chief", 0, gang, "running", None, None, None, None)
    chief = ChiefCluster.__new__(ChiefCluster)
    chief.runner = SimpleNamespace(store=store, settings=Settings(redis_url=BROKER))  # type: ignore[assignment]
    chief.control = RunControl()
    chief.gangs = gangs
    with pytest.raises(ClusterDown, match="worker:0 was lost"):
        chief._watch(me, Child(), MemberLogs(store, job_id, "chief:0"))  # type: ignore[arg-type]
    assert not chief.control.out_of_memory.is_set()
