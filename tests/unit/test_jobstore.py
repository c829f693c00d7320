"""The job store (JobStore, and JobLeases: its worker side) on SQLite and on PostgreSQL."""

import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from k2e.errors import Conflict, InvalidInput, NotFound
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases, Lease
from k2e.schemas import ExportCheck, JobStatus
from k2e.tables import events, jobs
from k2e.tenancy.scope import ANY_TENANT
from tests.support.postgres import postgres_url


def _postgres_store() -> JobLeases:
    store = JobLeases(postgres_url())
    try:
        store.ping()
    except sqlalchemy.exc.OperationalError as exc:
        if __import__("os").environ.get("CI"):
            raise  # CI has PostgreSQL: its absence is a failure, not a skip
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobLeases]:
    if request.param == "sqlite":
        s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = _postgres_store()
    s.create_schema()
    with s.engine.begin() as conn:
        conn.execute(jobs.delete())
        conn.execute(events.delete())
    yield s
    s.engine.dispose()


def _create(store: JobLeases, max_steps: int = 10) -> str:
    job_id = str(uuid.uuid4())
    spec = {"train": {"max_steps": max_steps}}
    store.create(NewJob(job_id, "t", spec, "cpu", f"jobs/{job_id}", max_steps))
    return job_id


def test_create_then_get_round_trips(store: JobLeases) -> None:
    job_id = _create(store, max_steps=7)
    job = store.get(job_id, ANY_TENANT)
    assert job.status is JobStatus.queued
    assert job.progress.max_steps == 7
    assert job.progress.global_step == 0
    assert job.spec == {"train": {"max_steps": 7}}
    assert job.attempts == 0
    assert job.created_at.tzinfo is not None


def test_unknown_job_is_not_found(store: JobLeases) -> None:
    with pytest.raises(NotFound):
        store.get("nope", ANY_TENANT)


def test_list_is_newest_first_and_pages_with_a_cursor(store: JobLeases) -> None:
    ids = [_create(store) for _ in range(5)]
    first = store.list_jobs(ANY_TENANT, limit=2)
    assert [j.id for j in first.items] == ids[::-1][:2]
    assert first.next_cursor is not None
    second = store.list_jobs(ANY_TENANT, limit=2, cursor=first.next_cursor)
    assert [j.id for j in second.items] == ids[::-1][2:4]
    last = store.list_jobs(ANY_TENANT, limit=2, cursor=second.next_cursor)
    assert [j.id for j in last.items] == ids[:1]
    assert last.next_cursor is None


def test_list_filters_by_status(store: JobLeases) -> None:
    a, b = _create(store), _create(store)
    store.start(b, "w1", 30)
    assert [j.id for j in store.list_jobs(ANY_TENANT, status=JobStatus.running).items] == [b]
    assert [j.id for j in store.list_jobs(ANY_TENANT, status=JobStatus.queued).items] == [a]


def test_bad_cursor_is_refused(store: JobLeases) -> None:
    with pytest.raises(InvalidInput):
        store.list_jobs(ANY_TENANT, cursor="abc")
    with pytest.raises(InvalidInput):  # an older k2e's cursor: a row number
        store.list_jobs(ANY_TENANT, cursor="12")


def test_start_takes_the_lease_and_a_live_lease_keeps_others_out(store: JobLeases) -> None:
    job_id = _create(store)
    first = store.start(job_id, "w1", 30)
    assert first is not None
    assert first.attempts == 1
    assert store.start(job_id, "w2", 30) is None  # a second delivery while w1 is alive
    assert store.get(job_id, ANY_TENANT).attempts == 1
    assert [e["kind"] for e in store.events(job_id)] == ["queued", "running"]


def test_an_expired_lease_lets_the_next_attempt_in_and_fences_the_old_owner(
    store: JobLeases,
) -> None:
    job_id = _create(store)
    store.start(job_id, "w1", 0.05)
    time.sleep(0.2)
    assert [j.id for j in store.expired()] == [job_id]
    assert store.requeue_expired(job_id)
    assert store.get(job_id, ANY_TENANT).status is JobStatus.queued
    second = store.start(job_id, "w2", 30)
    assert second is not None
    assert second.attempts == 2
    # w1 lost its lease: none of its writes land.
    assert store.renew_lease(job_id, "w1", 30) is None
    assert store.record_progress(job_id, "w1", {"global_step": 99}, []) is None
    assert store.finish(job_id, JobStatus.succeeded, "w1") is None
    assert store.get(job_id, ANY_TENANT).status is JobStatus.running
    assert store.renew_lease(job_id, "w2", 30) == Lease("running")


def test_an_export_is_recorded_only_by_the_worker_holding_the_lease(store: JobLeases) -> None:
    """record_export is fenced like record_progress: a worker whose lease went to another
    attempt records no export path, no check and no "exported" line."""
    job_id = _create(store)
    store.start(job_id, "w1", 0.05)
    time.sleep(0.2)
    assert store.requeue_expired(job_id)
    assert store.start(job_id, "w2", 30) is not None
    check = ExportCheck(
        verified=True, examples=4, max_abs_diff=0.0, examples_from="eval", signatures=["s"]
    ).model_dump()
    assert store.record_export(job_id, "w1", f"jobs/{job_id}/export/1", check) is False
    assert store.export_path(job_id) is None
    assert store.get(job_id, ANY_TENANT).export is None
    assert not [e for e in store.events(job_id) if e["message"].startswith("exported")]
    assert store.record_export(job_id, "w2", f"jobs/{job_id}/export/2", check) is True
    assert store.export_path(job_id) == f"jobs/{job_id}/export/2"
    assert store.get(job_id, ANY_TENANT).export == ExportCheck.model_validate(check)
    exported = [e["message"] for e in store.events(job_id) if e["message"].startswith("exported")]
    assert exported == [f"exported jobs/{job_id}/export/2"]


def test_start_counts_attempts_and_refuses_finished_jobs(store: JobLeases) -> None:
    job_id = _create(store)
    assert store.start(job_id, "w1", 30).attempts == 1
    store.finish(job_id, JobStatus.succeeded, "w1", eval_metrics={"loss": 0.5})
    assert store.start(job_id, "w2", 30) is None
    job = store.get(job_id, ANY_TENANT)
    assert job.status is JobStatus.succeeded
    assert job.metrics.eval == {"loss": 0.5}
    assert job.finished_at is not None


def test_exhausted_attempts_end_the_job(store: JobLeases) -> None:
    job_id = _create(store)
    store.start(job_id, "w1", 0.01)
    time.sleep(0.05)
    assert not store.fail_exhausted(job_id, max_attempts=2)
    store.start(job_id, "w2", 0.01)
    time.sleep(0.05)
    assert store.fail_exhausted(job_id, max_attempts=2)
    job = store.get(job_id, ANY_TENANT)
    assert job.status is JobStatus.failed
    assert job.error.reason == "max_attempts"


def test_progress_is_recorded_and_reports_status(store: JobLeases) -> None:
    job_id = _create(store)
    store.start(job_id, "w1", 30)
    status = store.record_progress(
        job_id, "w1", {"global_step": 5, "max_steps": 10}, [{"step": 5, "loss": 1.25}]
    )
    assert status == "running"
    job = store.get(job_id, ANY_TENANT)
    assert job.progress.global_step == 5
    assert [(p.step, p.loss) for p in job.metrics.train] == [(5, 1.25)]


def test_cancel_queued_ends_it_and_running_asks_the_worker(store: JobLeases) -> None:
    queued, running = _create(store), _create(store)
    store.start(running, "w1", 30)
    assert store.request_cancel(queued, ANY_TENANT).status is JobStatus.cancelled
    assert store.request_cancel(running, ANY_TENANT).status is JobStatus.cancelling
    assert store.renew_lease(running, "w1", 30) == Lease("cancelling")
    assert store.start(queued, "w1", 30) is None


def test_a_cancelling_job_whose_worker_died_ends_cancelled(store: JobLeases) -> None:
    job_id = _create(store)
    store.start(job_id, "w1", 0.05)
    store.request_cancel(job_id, ANY_TENANT)
    time.sleep(0.2)
    assert not store.requeue_expired(job_id)
    assert store.cancel_expired(job_id)
    assert store.get(job_id, ANY_TENANT).status is JobStatus.cancelled


def test_idempotency_keys_are_unique(store: JobLeases) -> None:
    job_id, key = str(uuid.uuid4()), f"t:{uuid.uuid4().hex}"
    store.create(NewJob(job_id, "t", {}, "cpu", "m", 1, idempotency_key=key, request_hash="h"))
    found = store.by_idempotency_key(key)
    assert found is not None
    assert found.id == job_id
    assert found.request_hash == "h"
    with pytest.raises(Conflict):
        store.create(NewJob(str(uuid.uuid4()), "t", {}, "cpu", "m", 1, idempotency_key=key))
    assert store.by_idempotency_key(f"t:{uuid.uuid4().hex}") is None


def test_events_follow_with_since(store: JobLeases) -> None:
    job_id = _create(store)
    store.log_many(job_id, ["one", "two"])
    everything = store.events(job_id)
    assert [e["message"] for e in everything][-2:] == ["one", "two"]
    after = store.events(job_id, since=everything[-2]["seq"])
    assert [e["message"] for e in after] == ["two"]


def test_finish_refuses_a_non_terminal_status(store: JobLeases) -> None:
    job_id = _create(store)
    with pytest.raises(ValueError, match="terminal"):
        store.finish(job_id, JobStatus.running)
