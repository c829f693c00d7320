"""The job event stream's store side (what each write adds) and the API's stream without
Redis pub/sub (the polling fallback), driven by the store's real writes."""

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy
from sqlalchemy import insert, update

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus
from k2e.tables import events, jobs
from k2e.tenancy.scope import ANY_TENANT
from service.event_feeds import EventBroker, event_stream
from tests.support.postgres import postgres_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobLeases]:
    if request.param == "sqlite":
        s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        s = JobLeases(postgres_url())
        try:
            s.ping()
        except sqlalchemy.exc.OperationalError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"PostgreSQL not reachable: {exc}")
    s.create_schema()
    with s.engine.begin() as conn:
        conn.execute(jobs.delete())
        conn.execute(events.delete())
    yield s
    s.engine.dispose()


def _running_job(store: JobLeases) -> str:
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, "t", {"train": {"max_steps": 20}}, "cpu", f"jobs/{job_id}", 20))
    assert store.start(job_id, "w", 30) is not None
    return job_id


def _kinds(store: JobLeases, job_id: str) -> list[str]:
    return [row["kind"] for row in store.stream_events(job_id)]


def test_each_write_adds_its_events_and_the_log_keeps_its_kinds(store: JobLeases) -> None:
    job_id = _running_job(store)
    progress = {"global_step": 10, "max_steps": 20, "steps_per_sec": 50.0, "eta_s": 0.2}
    store.record_progress(job_id, "w", progress, [{"step": 10, "loss": 0.5}])
    # The same curve again (a report at the same step): progress, but no new loss point.
    store.record_progress(job_id, "w", progress, [{"step": 10, "loss": 0.5}])
    store.log_many(job_id, ["a line"])
    final = {**progress, "global_step": 20, "eta_s": 0.0}
    store.finish(job_id, JobStatus.succeeded, "w", eval_metrics={"acc": 0.9}, progress=final)

    assert _kinds(store, job_id) == [
        "queued",
        "running",
        "progress",
        "loss",
        "progress",
        "log",
        "progress",
        "eval",
        "succeeded",
        "end",
    ]
    rows = store.stream_events(job_id)
    assert rows[2]["data"] == progress
    assert rows[3]["data"] == {"step": 10, "loss": 0.5}
    assert rows[7]["data"] == {"metrics": {"acc": 0.9}}
    assert store.end_event(job_id) == rows[-1]["seq"]
    assert [e["kind"] for e in store.events(job_id)] == ["queued", "running", "log", "succeeded"]


def test_every_way_of_ending_writes_the_end(store: JobLeases) -> None:
    queued = str(uuid.uuid4())
    store.create(NewJob(queued, "t", {}, "cpu", f"jobs/{queued}", None))
    store.request_cancel(queued, ANY_TENANT)
    assert _kinds(store, queued)[-2:] == ["cancelled", "end"]
    running = _running_job(store)
    store.request_cancel(running, ANY_TENANT)
    assert store.end_event(running) is None, "cancelling has not ended the job"
    with store.engine.begin() as conn:  # its worker died: the lease ran out
        past = datetime(2000, 1, 1, tzinfo=UTC)
        conn.execute(update(jobs).where(jobs.c.id == running).values(lease_expires_at=past))
    assert store.cancel_expired(running)
    assert _kinds(store, running)[-2:] == ["cancelled", "end"]


def test_jobs_ended_before_the_stream_existed_get_their_end(store: JobLeases) -> None:
    job_id = _running_job(store)
    store.finish(job_id, JobStatus.failed, "w")
    with store.engine.begin() as conn:  # as an older k2e left it: no "end" row
        conn.execute(events.delete().where(events.c.kind == "end"))
        conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))  # from before migrations
    store.create_schema()
    store.create_schema()  # once only
    assert _kinds(store, job_id).count("end") == 1


def _collect(broker: EventBroker, job_id: str, after: int = 0) -> list[tuple[int, str, dict]]:
    async def run() -> list[tuple[int, str, dict]]:
        out = []
        async for chunk in event_stream(broker, job_id, after, lambda m: m):
            if chunk.startswith(b":"):
                continue
            lines = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
            out.append((int(lines["id"]), lines["event"], json.loads(lines["data"])))
        return out

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_without_redis_a_stream_polls_the_store_until_the_end(store: JobLeases) -> None:
    job_id = _running_job(store)
    broker = EventBroker(store, redis_url=None, poll_s=0.05, keepalive_s=0.1)

    def work() -> None:
        for step in (5, 10, 15):
            time.sleep(0.2)
            progress = {"global_step": step, "max_steps": 20, "steps_per_sec": 25.0, "eta_s": 1}
            store.record_progress(job_id, "w", progress, [{"step": step, "loss": 1.0 / step}])
        time.sleep(0.2)
        store.finish(job_id, JobStatus.succeeded, "w", progress={"global_step": 20})

    writer = threading.Thread(target=work)
    writer.start()
    seen = _collect(broker, job_id)
    writer.join()

    ids = [event_id for event_id, _, _ in seen]
    assert ids == [row["seq"] for row in store.stream_events(job_id)]
    names = [name for _, name, _ in seen]
    assert names[:2] == ["status", "status"]
    assert names.count("loss") == 3
    assert names[-2:] == ["status", "end"]
    assert seen[-1][2] == json.loads(store.get(job_id, ANY_TENANT).public().model_dump_json())
    assert [d["global_step"] for _, n, d in seen if n == "progress"] == [5, 10, 15, 20]
    # Resuming from the middle, after the end: the rest, then the stream closes.
    assert _collect(broker, job_id, after=ids[3]) == seen[4:]
    assert _collect(broker, job_id, after=ids[-1]) == []


def test_rows_from_old_kinds_have_no_payload_surprises(store: JobLeases) -> None:
    job_id = _running_job(store)
    with store.engine.begin() as conn:
        conn.execute(
            insert(events).values(
                job_id=job_id,
                at=store.get(job_id, ANY_TENANT).created_at,
                kind="log",
                message="old",
            )
        )
    row = store.stream_events(job_id)[-1]
    assert row["data"] is None
    assert row["at"].tzinfo is not None


def test_events_are_numbered_within_their_job(store: JobLeases) -> None:
    """Ids count the job's own events only: another job's writes in between (another
    tenant's, say) leave no gap that would tell of them."""
    first, second = _running_job(store), _running_job(store)
    for n in range(3):
        store.log_many(first, [f"a{n}", f"b{n}"])
        store.log_many(second, [f"c{n}"])
    store.finish(first, JobStatus.succeeded, "w")
    for job_id, count in ((first, 2 + 6 + 2), (second, 2 + 3)):
        rows = store.stream_events(job_id)
        assert [row["seq"] for row in rows] == list(range(1, count + 1))
        assert store.last_event(job_id) == count
    assert store.end_event(first) == 10
    assert [e["seq"] for e in store.events(first)] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [e["message"] for e in store.events(first, since=7)] == ["b2", "succeeded"]
    assert store.resume_point(first, 4) == 4


def test_events_from_before_the_numbering_are_numbered_and_old_ids_still_resume(
    store: JobLeases,
) -> None:
    first, second = _running_job(store), _running_job(store)
    with store.engine.begin() as conn:  # as an older k2e left them: global seq only
        conn.execute(events.delete())
        conn.execute(update(jobs).values(events_num=None))
        at = store.get(first, ANY_TENANT).created_at
        # Other jobs' events came before: ids far larger than these jobs' counts (and clear of
        # the numbers PostgreSQL's sequence hands out to the rows written later).
        seq = 2_000_000_000
        for n in range(4):
            for job_id in (first, second):
                seq += 1
                conn.execute(
                    insert(events).values(seq=seq, job_id=job_id, at=at, kind="log", message=f"{n}")
                )
        old_ids = {
            job_id: [
                row.seq
                for row in conn.execute(
                    sqlalchemy.select(events.c.seq)
                    .where(events.c.job_id == job_id)
                    .order_by(events.c.seq)
                )
            ]
            for job_id in (first, second)
        }
        conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))  # from before migrations
    store.create_schema()
    store.create_schema()  # numbers once
    for job_id in (first, second):
        assert [(r["seq"], r["message"]) for r in store.stream_events(job_id)] == [
            (1, "0"),
            (2, "1"),
            (3, "2"),
            (4, "3"),
        ]
        # A Last-Event-ID (or since) a client kept from before: the same place.
        assert [store.resume_point(job_id, old) for old in old_ids[job_id]] == [1, 2, 3, 4]
        assert store.resume_point(job_id, 2**63 - 1) == 4
    store.log_many(second, ["new"])
    assert store.stream_events(second, after=4)[0]["seq"] == 5
