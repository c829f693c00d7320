"""A worker's entry in the registry (worker/registry.py): registered with its queues and
slots, which takes waiting jobs at once, and removed when the worker stops cleanly."""

import time
import uuid
from pathlib import Path

from sqlalchemy import select

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.jobs.queueing import make_celery
from k2e.settings import Settings
from k2e.tables import jobs, workers
from k2e.tenancy.scope import ANY_TENANT
from worker.registry import RegistryHeartbeat


def test_a_worker_registers_its_slots_takes_waiting_jobs_and_leaves(
    tmp_path: Path, redis_server
) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(data_dir=data, redis_url=redis_server.url, worker_heartbeat_s=0.2)
    store = JobLeases(settings.sqlalchemy_url)
    store.create_schema()
    job_id = str(uuid.uuid4())
    store.create(
        NewJob(job_id, "acme", {}, "cpu", f"jobs/{job_id}", 10)
    )  # recorded, not handed over
    beat = RegistryHeartbeat(settings, make_celery(settings), ["cpu", "gpu"], 3)
    beat.start()
    try:
        deadline = time.monotonic() + 60
        while store.get(job_id, ANY_TENANT).status.value == "queued":
            with store.engine.connect() as conn:
                handed = conn.execute(
                    select(jobs.c.dispatched_at).where(jobs.c.id == job_id)
                ).scalar_one()
            if handed is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        with store.engine.connect() as conn:
            rows = conn.execute(select(workers)).mappings().all()
            handed = conn.execute(
                select(jobs.c.dispatched_at).where(jobs.c.id == job_id)
            ).scalar_one()
        assert [(r["queues"], r["slots"], r["name"]) for r in rows] == [
            ("cpu gpu", 3, beat.entry.name)
        ]
        assert handed is not None  # the new worker's arrival handed the waiting job over
    finally:
        beat.stop()
    with store.engine.connect() as conn:
        assert conn.execute(select(workers)).all() == []
    store.engine.dispose()
