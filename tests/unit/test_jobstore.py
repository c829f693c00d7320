"""JobStore against SQLite and the real PostgreSQL server."""

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy

from k2e.errors import InvalidSpec, NotFound
from k2e.jobstore import JobStore, jobs
from k2e.schemas import JobStatus
from tests.conftest import postgres_url


def _postgres_store() -> JobStore:
    store = JobStore(postgres_url())
    try:
        store.ping()
    except sqlalchemy.exc.OperationalError as exc:
        if __import__("os").environ.get("CI"):
            raise  # CI has PostgreSQL: its absence is a failure, not a skip
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = _postgres_store()
    s.create_schema()
    with s.engine.begin() as conn:
        conn.execute(jobs.delete())
    yield s
    s.engine.dispose()


def _create(store: JobStore, max_steps: int = 10) -> str:
    job_id = str(uuid.uuid4())
    store.create(job_id, {"train": {"max_steps": max_steps}}, "cpu", f"/m/{job_id}", max_steps)
    return job_id


def test_create_then_get_round_trips(store: JobStore) -> None:
    job_id = _create(store, max_steps=7)
    job = store.get(job_id)
    assert job.status is JobStatus.queued
    assert job.progress.max_steps == 7
    assert job.progress.global_step == 0
    assert job.spec == {"train": {"max_steps": 7}}
    assert job.attempts == 0
    assert job.created_at.tzinfo is not None


def test_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        store.get("nope")


def test_list_is_newest_first_and_pages_with_a_cursor(store: JobStore) -> None:
    ids = [_create(store) for _ in range(5)]
    first = store.list_jobs(limit=2)
    assert [j.id for j in first.items] == ids[::-1][:2]
    assert first.next_cursor is not None
    second = store.list_jobs(limit=2, cursor=first.next_cursor)
    assert [j.id for j in second.items] == ids[::-1][2:4]
    last = store.list_jobs(limit=2, cursor=second.next_cursor)
    assert [j.id for j in last.items] == ids[:1]
    assert last.next_cursor is None


def test_list_filters_by_status(store: JobStore) -> None:
    a, b = _create(store), _create(store)
    store.start(b)
    assert [j.id for j in store.list_jobs(status=JobStatus.running).items] == [b]
    assert [j.id for j in store.list_jobs(status=JobStatus.queued).items] == [a]


def test_bad_cursor_is_refused(store: JobStore) -> None:
    with pytest.raises(InvalidSpec):
        store.list_jobs(cursor="abc")


def test_start_counts_attempts_and_refuses_finished_jobs(store: JobStore) -> None:
    job_id = _create(store)
    assert store.start(job_id).attempts == 1
    assert store.start(job_id).attempts == 2  # a redelivery of a running job
    store.finish(job_id, JobStatus.succeeded, eval_metrics={"loss": 0.5})
    assert store.start(job_id) is None
    job = store.get(job_id)
    assert job.status is JobStatus.succeeded
    assert job.metrics.eval == {"loss": 0.5}
    assert job.finished_at is not None


def test_progress_is_recorded_and_reports_status(store: JobStore) -> None:
    job_id = _create(store)
    store.start(job_id)
    status = store.record_progress(
        job_id, {"global_step": 5, "max_steps": 10}, [{"step": 5, "loss": 1.25}]
    )
    assert status == "running"
    job = store.get(job_id)
    assert job.progress.global_step == 5
    assert [(p.step, p.loss) for p in job.metrics.train] == [(5, 1.25)]


def test_cancel_queued_ends_it_and_running_asks_the_worker(store: JobStore) -> None:
    queued, running = _create(store), _create(store)
    store.start(running)
    assert store.request_cancel(queued).status is JobStatus.cancelled
    assert store.request_cancel(running).status is JobStatus.cancelling
    assert store.record_progress(running, {"global_step": 1}, []) == "cancelling"
    assert store.start(queued) is None


def test_finish_refuses_a_non_terminal_status(store: JobStore) -> None:
    job_id = _create(store)
    with pytest.raises(ValueError, match="terminal"):
        store.finish(job_id, JobStatus.running)
