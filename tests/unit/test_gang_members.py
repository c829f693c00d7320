"""The members' side of a cluster job against a real store: TF_CONFIG from the joined
rows, a task of a stale or taken placement refused at once, the member's address, a gang
brought down by its chief, and how many steps a gang trains."""

import ipaddress
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import psutil
import pytest
from sqlalchemy import select, update

from k2e.cluster_schemas import Distribution
from k2e.db import utcnow
from k2e.jobs.gangs import GangStore, Member, place, tf_config
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.settings import Settings
from k2e.tables import job_members, jobs
from k2e.tenancy.scope import ANY_TENANT
from worker.cluster_member import run_member
from worker.gang_watch import GangGone, gang_steps, lost_member, wait_formed
from worker.member_child import worker_address

SHAPE = Distribution(workers=2, parameter_servers=1, evaluator=True)


@pytest.fixture
def store(tmp_path) -> Iterator[JobLeases]:
    s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.create_schema()
    yield s
    s.engine.dispose()


def placed_job(store: JobLeases) -> tuple[str, int]:
    job_id = str(uuid.uuid4())
    spec = {"distribution": SHAPE.model_dump()}
    store.create(NewJob(job_id, "t", spec, "cpu", f"jobs/{job_id}", 10))
    with store.engine.begin() as conn:
        gang = place(conn, job_id, SHAPE)
    return job_id, gang


def join_all(gangs: GangStore, job_id: str, gang: int) -> None:
    for port, (role, index) in enumerate(SHAPE.roles(), start=7000):
        assert gangs.join(job_id, gang, role, index, f"w{port}", "node", f"10.0.0.1:{port}")


def test_tf_config_of_a_joined_gang_names_every_member_but_the_evaluator(store) -> None:
    job_id, gang = placed_job(store)
    gangs = GangStore(store.engine)
    assert gangs.formed(job_id, gang) is None  # nobody has joined yet
    join_all(gangs, job_id, gang)
    members = gangs.formed(job_id, gang)
    assert members is not None
    assert tf_config(members, "worker", 0) == {
        "cluster": {
            "chief": ["10.0.0.1:7000"],
            "ps": ["10.0.0.1:7002"],
            "worker": ["10.0.0.1:7001"],
        },
        "task": {"type": "worker", "index": 0},
    }
    assert tf_config(members, "evaluator", 0)["task"] == {"type": "evaluator", "index": 0}


def member_processes() -> list[psutil.Process]:
    """Member TensorFlow processes this test process started."""
    children = psutil.Process().children(recursive=True)
    return [p for p in children if "worker.member_process" in " ".join(p.cmdline())]


def runner_for(store: JobLeases, **settings: float) -> SimpleNamespace:
    """What run_member reads of a worker process's JobRunner: its store and settings."""
    broker = "redis://127.0.0.1:6379/0"
    return SimpleNamespace(store=store, settings=Settings(redis_url=broker, **settings))


def test_a_member_task_of_an_older_placement_returns_at_once(store) -> None:
    job_id, old = placed_job(store)
    with store.engine.begin() as conn:
        new = place(conn, job_id, SHAPE)  # placed again: the first gang's tasks are stale
    run_member(runner_for(store), job_id, old, "worker", 0)  # type: ignore[arg-type]
    rows = GangStore(store.engine).members(job_id)
    assert {(m.gang, m.state) for m in rows} == {(new, "placed")}
    assert not member_processes()


def test_a_redelivered_member_task_finds_its_row_taken_and_returns(store) -> None:
    job_id, gang = placed_job(store)
    gangs = GangStore(store.engine)
    assert gangs.join(job_id, gang, "ps", 0, "first", "node", "10.0.0.1:7002")
    run_member(runner_for(store), job_id, gang, "ps", 0)  # type: ignore[arg-type]
    ps = next(m for m in gangs.members(job_id) if m.role == "ps")
    assert (ps.owner, ps.address, ps.state) == ("first", "10.0.0.1:7002", "ready")
    assert not member_processes()


def test_a_member_of_an_ended_job_does_not_join(store) -> None:
    job_id, gang = placed_job(store)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(status="cancelled"))
    run_member(runner_for(store), job_id, gang, "worker", 0)  # type: ignore[arg-type]
    assert all(m.state == "placed" for m in GangStore(store.engine).members(job_id))


def test_a_gang_that_does_not_form_in_time_gives_up(store) -> None:
    job_id, gang = placed_job(store)
    gangs = GangStore(store.engine)
    assert gangs.join(job_id, gang, "worker", 0, "me", "node", "10.0.0.1:7001")
    me = Member(job_id, "worker", 0, gang, "ready", None, None, None, None)
    settings = Settings(gang_form_timeout_s=0.3)
    with pytest.raises(GangGone, match="did not form within 0.3 s"):
        wait_formed(gangs, settings, job_id, me, lambda: True)


def test_lost_members_are_the_failed_and_the_silent_others() -> None:
    now = utcnow()

    def member(role, state, beat_s_ago=0.0, gang=1):
        beat = now - timedelta(seconds=beat_s_ago)
        return Member("j", role, 0, gang, state, None, None, None, beat)

    me = member("chief", "running", beat_s_ago=100)  # its own beat does not count
    assert (
        lost_member([me, member("worker", "running", 1), member("ps", "done", 100)], me, 30) is None
    )
    assert lost_member([me, member("ps", "failed")], me, 30) == "ps:0"
    assert lost_member([me, member("worker", "running", 31)], me, 30) == "worker:0"
    assert lost_member([me, member("worker", "failed", gang=0)], me, 30) is None


def test_a_chief_brings_its_gang_down_and_the_job_waits_for_a_new_placement(store) -> None:
    job_id, gang = placed_job(store)
    started = store.start(job_id, "chief-owner", 30)
    assert started is not None
    gangs = GangStore(store.engine)
    join_all(gangs, job_id, gang)
    assert not gangs.bring_down(job_id, gang, "someone-else", "cluster down")
    assert gangs.bring_down(job_id, gang, "chief-owner", "cluster down: worker:0 was lost")
    job = store.get(job_id, ANY_TENANT)
    assert job.status.value == "queued"
    assert job.attempts == started.attempts  # the failed placement used an attempt
    with store.engine.connect() as conn:
        assert (
            conn.execute(select(jobs.c.dispatched_at).where(jobs.c.id == job_id)).scalar() is None
        )
        states = conn.execute(select(job_members.c.state)).scalars().all()
    assert set(states) == {"lost"}
    # A late task of the placement finds its row lost: it cannot join it.
    assert not gangs.join(job_id, gang, "worker", 0, "late", "node", "10.0.0.1:7009")


def test_the_member_address_is_the_setting_else_the_route_to_the_broker() -> None:
    assert worker_address("203.0.113.7", "redis://127.0.0.1:6379/0") == "203.0.113.7"
    assert worker_address(None, "redis://localhost:6379/0") == "127.0.0.1"
    assert worker_address(None, "redis://127.0.0.1:6380/0") == "127.0.0.1"
    routed = worker_address(None, "redis://192.0.2.10:6379/0")  # a remote broker
    assert ipaddress.ip_address(routed).version == 4


def test_a_gang_leaves_the_last_steps_to_its_chief() -> None:
    assert gang_steps(3000, 2) == 2990
    assert gang_steps(8, 2) == 0  # too few steps to share: the chief trains them alone
