"""A job yielding its worker, on the store's side: the worker's fenced release, the
reconciler's when that worker died, and the heartbeat that hands the request to the job.
On SQLite and on the machine's PostgreSQL (a schema of its own)."""

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from k2e.db import utcnow
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases, Lease
from k2e.jobs.queueing import make_celery
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.tables import jobs
from k2e.tenancy.scope import ANY_TENANT
from tests.support.postgres import fresh_postgres_schema
from worker.heartbeat import Heartbeat, RunControl

OWNER = "host:1:abc"


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    with fresh_postgres_schema("k2e_yield") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def store(store_url: str) -> Iterator[JobLeases]:
    leases = JobLeases(store_url)
    leases.create_schema()
    yield leases
    leases.engine.dispose()


def _running(store: JobLeases, request: str | None = None, tenant: str = "t") -> str:
    job_id = str(uuid.uuid4())
    lock = f"{tenant}:{job_id[:8]}"
    spec = {"train": {"max_steps": 20}}
    store.create(NewJob(job_id, tenant, spec, "cpu", f"model_dirs/{job_id[:8]}", 20, dir_lock=lock))
    _set(store, job_id, dispatched_at=utcnow())
    assert store.start(job_id, OWNER, 30) is not None
    if request is not None:
        _set(store, job_id, yield_request=request)
    return job_id


def _set(store: JobLeases, job_id: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))


def _row(store: JobLeases, job_id: str) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())


def _last_status(store: JobLeases, job_id: str) -> tuple[str, str]:
    last = [e for e in store.events(job_id) if e["kind"] != "log"][-1]
    return last["kind"], last["message"]


def _released(row: dict) -> None:
    assert row["lease_owner"] is row["lease_expires_at"] is row["dispatched_at"] is None
    assert row["yield_request"] is None
    assert row["dir_lock"] is not None  # not an end: the model_dir stays the job's
    assert row["finished_at"] is None


def test_a_suspend_releases_the_job_suspended_at_its_step(store: JobLeases) -> None:
    job_id = _running(store, "suspend")
    progress = {"global_step": 12, "max_steps": 20, "steps_per_sec": None, "eta_s": None}
    assert store.release_yielded(job_id, OWNER, 12, progress) is JobStatus.suspended
    row = _row(store, job_id)
    _released(row)
    assert row["status"] == "suspended"
    assert row["progress"]["global_step"] == 12
    assert not row["preemptions"]
    assert _last_status(store, job_id) == ("suspended", "suspended at step 12")
    assert store.end_event(job_id) is None  # the stream stays open: not an end


def test_a_preemption_queues_the_job_again_and_counts_it(store: JobLeases) -> None:
    job_id = _running(store, "preempt")
    assert store.release_yielded(job_id, OWNER, 30) is JobStatus.queued
    row = _row(store, job_id)
    _released(row)
    assert (row["status"], row["preemptions"]) == ("queued", 1)
    assert row["preempted_at"] is not None
    kind, message = _last_status(store, job_id)
    assert kind == "queued"
    assert "preempted" in message
    assert "step 30" in message
    assert store.get(job_id, ANY_TENANT).public().preemptions == 1
    # Again: counted again.
    assert store.start(job_id, OWNER, 30) is not None
    _set(store, job_id, yield_request="preempt")
    assert store.release_yielded(job_id, OWNER, 40) is JobStatus.queued
    assert _row(store, job_id)["preemptions"] == 2


def test_a_withdrawn_suspend_queues_the_job_to_go_on(store: JobLeases) -> None:
    """Resumed while its worker was already stopping: it goes on at its next turn."""
    job_id = _running(store)
    assert store.release_yielded(job_id, OWNER, 5) is JobStatus.queued
    row = _row(store, job_id)
    _released(row)
    assert (row["status"], row["preemptions"]) == ("queued", None)


def test_only_the_lease_holder_of_a_running_job_releases_it(store: JobLeases) -> None:
    job_id = _running(store, "suspend")
    assert store.release_yielded(job_id, "another:2:def", 5) is None
    _set(store, job_id, status=JobStatus.cancelling.value)  # a cancel came first
    assert store.release_yielded(job_id, OWNER, 5) is None
    row = _row(store, job_id)
    assert (row["status"], row["lease_owner"]) == ("cancelling", OWNER)


def test_yields_do_not_use_up_the_attempts(store: JobLeases) -> None:
    """A job preempted more often than max_attempts still runs: a yield is no failed start."""
    job_id = _running(store, "preempt")
    for _ in range(5):
        assert store.release_yielded(job_id, OWNER, 1) is JobStatus.queued
        assert not store.fail_exhausted(job_id, 3)
        assert store.start(job_id, OWNER, 30) is not None
        _set(store, job_id, yield_request="preempt")
    assert _row(store, job_id)["attempts"] == 1


def test_a_started_job_carries_its_pending_yield(store: JobLeases) -> None:
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, "t", {}, "cpu", f"jobs/{job_id}", 20))
    _set(store, job_id, yield_request="suspend")
    started = store.start(job_id, OWNER, 30)
    assert started is not None
    assert started.yield_request == "suspend"
    # Started from a redelivered message while it waited for its turn: in flight now.
    assert _row(store, job_id)["dispatched_at"] is not None
    lease = store.renew_lease(job_id, OWNER, 30)
    assert lease == Lease("running", "suspend")


def test_finishing_clears_a_yield_that_came_too_late(store: JobLeases) -> None:
    job_id = _running(store, "preempt")
    store.finish(job_id, JobStatus.succeeded, OWNER)
    assert _row(store, job_id)["yield_request"] is None


@pytest.mark.parametrize(
    ("request_", "status", "note"),
    [
        ("suspend", "suspended", "suspended: worker_lost"),
        ("preempt", "queued", "preempted: queued again (worker_lost)"),
    ],
)
def test_the_reconciler_releases_a_job_whose_worker_died_yielding(
    store: JobLeases, store_url: str, redis_server, tmp_path, request_: str, status: str, note: str
) -> None:
    from worker.reconciler import Reconciler

    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url,
        redis_url=redis_server.url,
        reconcile_interval_s=1,
    )
    reconciler = Reconciler(settings, make_celery(settings))
    job_id = _running(store, request_, tenant=f"r{uuid.uuid4().hex[:6]}")
    reconciler.reconcile_once()
    assert _row(store, job_id)["status"] == "running"  # its lease runs: its worker lives
    _set(store, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    sent = reconciler.reconcile_once()
    row = _row(store, job_id)
    assert row["status"] == status
    assert row["lease_owner"] is None
    assert row["yield_request"] is None
    assert row["dir_lock"] is not None
    assert row["attempts"] == 1  # a lost worker's attempt counts
    assert note in [e["message"] for e in store.events(job_id)]
    if status == "queued":
        # Waiting for its turn, and handed over by the same round's pump: once.
        assert sent == [job_id]
        assert row["dispatched_at"] is not None
        assert row["preemptions"] == 1
    else:
        assert sent == []
        assert row["dispatched_at"] is None
    reconciler.store.engine.dispose()
    reconciler.dispatcher.engine.dispose()


class _AskingLease:
    def __init__(self, request: str | None) -> None:
        self.request = request

    def renew_lease(self, job_id: str, owner: str, lease_s: float) -> Lease:
        return Lease("running", self.request)


@pytest.mark.parametrize("request_", ["suspend", "preempt"])
def test_the_heartbeat_hands_a_yield_request_to_the_job(request_: str) -> None:
    control = RunControl()
    with Heartbeat(_AskingLease(request_), "job", "o", 30, 0.01, control):  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not control.yield_requested.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert control.yield_reason == request_
    assert control.must_stop()
    assert control.should_stop()
    assert not control.cancel_requested.is_set()


def test_no_yield_request_leaves_the_job_running() -> None:
    control = RunControl()
    with Heartbeat(_AskingLease(None), "job", "o", 30, 0.01, control):  # type: ignore[arg-type]
        time.sleep(0.1)
    assert not control.yield_requested.is_set()
    assert not control.must_stop()


class _QuietRenewals:
    """Renewals show nothing; the row, read between them, shows a yield request."""

    def __init__(self) -> None:
        self.renewals = 0

    def renew_lease(self, job_id: str, owner: str, lease_s: float) -> Lease:
        self.renewals += 1
        return Lease("running")

    def control(self, job_id: str, owner: str) -> Lease:
        return Lease("running", "preempt")


def test_a_yield_request_is_heard_between_lease_renewals() -> None:
    control = RunControl()
    store = _QuietRenewals()
    beat = Heartbeat(store, "job", "o", 60, 30, control, poll_s=0.01)  # type: ignore[arg-type]
    with beat:
        control.yield_requested.wait(10)
    assert control.yield_reason == "preempt"
    assert store.renewals == 0  # heard long before the first renewal (30 s)


def test_the_control_read_shows_the_holders_job_only(store: JobLeases) -> None:
    job_id = _running(store, "suspend")
    expires = _row(store, job_id)["lease_expires_at"]
    assert store.control(job_id, OWNER) == Lease("running", "suspend")
    assert store.control(job_id, "someone-else") is None
    assert _row(store, job_id)["lease_expires_at"] == expires  # a read, not a renewal
