"""GET /workers (admins): each worker in the registry with its queues, accelerator,
version, current job, memory and last heartbeat, `live` while its heartbeats come and
`lost` once silent past the scheduler's liveness rule (three heartbeats)."""

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import update

from k2e.cli.render import workers_table
from k2e.db import utcnow
from k2e.jobs.workers import WorkerEntry, WorkerLoad, WorkerRegistry
from k2e.queue_schemas import WorkerSummary
from k2e.settings import Settings
from k2e.tables import workers
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer
from worker.registry import tree_rss

PROBLEM = "application/problem+json"


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        yield client


def _registry(api: TestClient) -> WorkerRegistry:
    return WorkerRegistry(api.app.state.backend.store.engine)  # type: ignore[attr-defined]


def test_workers_are_listed_live_with_their_load_then_lost(api: TestClient) -> None:
    registry = _registry(api)
    entry = WorkerEntry("node-a:11", "node-a", ("cpu", "gpu"), 2, "9.9.9", "gpu")
    registry.register(entry)
    registry.beat(entry, WorkerLoad(("job-1", "job-2"), 123_456_789))
    idle = WorkerEntry("node-b:12", "node-b", ("cpu",), 1, "9.9.9")
    registry.register(idle)
    listed = {w["name"]: w for w in api.get("/workers").json()}
    busy = listed["node-a:11"]
    assert busy["node"] == "node-a"
    assert busy["queues"] == ["cpu", "gpu"]
    assert busy["slots"] == 2
    assert busy["accelerator"] == "gpu"
    assert busy["version"] == "9.9.9"
    assert busy["current_job"] == "job-1"
    assert busy["current_jobs"] == ["job-1", "job-2"]
    assert busy["rss_bytes"] == 123_456_789
    assert busy["state"] == "live"
    assert busy["last_heartbeat"]
    assert listed["node-b:12"]["current_job"] is None
    assert listed["node-b:12"]["accelerator"] == "cpu"
    # Silent for longer than three heartbeats (K2E_WORKER_HEARTBEAT_S, 5 s): lost.
    live_s = api.app.state.backend.settings.worker_live_s  # type: ignore[attr-defined]
    with registry.engine.begin() as conn:
        conn.execute(
            update(workers)
            .where(workers.c.name == "node-a:11")
            .values(seen_at=utcnow() - timedelta(seconds=live_s + 1))
        )
    states = {w["name"]: w["state"] for w in api.get("/workers").json()}
    assert states == {"node-a:11": "lost", "node-b:12": "live"}
    # A beat after the silence makes it live again.
    registry.beat(entry)
    assert {w["name"]: w["state"] for w in api.get("/workers").json()}["node-a:11"] == "live"


def test_only_admins_list_workers(api: TestClient) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert api.post("/tenants", json={"name": name}, headers=ADMIN).status_code == 201
    key = api.post(f"/tenants/{name}/keys", json={"name": "m"}, headers=ADMIN).json()["key"]
    member = api.get("/workers", headers=bearer(key))
    assert member.status_code == 403
    assert member.headers["content-type"] == PROBLEM
    anonymous = api.get("/workers", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


def test_the_memory_of_a_process_tree_counts_this_process() -> None:
    rss = tree_rss(os.getpid())
    assert rss is not None
    assert rss > 10 * 1024 * 1024
    assert tree_rss(2**22 + 12345) is None  # no such process


def test_k2e_admin_workers_prints_each_worker_with_its_state_and_job(api: TestClient) -> None:
    registry = _registry(api)
    entry = WorkerEntry("node-c:13", "node-c", ("cpu",), 1, "9.9.9")
    registry.register(entry)
    registry.beat(entry, WorkerLoad(("job-7",), 300 * 1024 * 1024))
    listed = [WorkerSummary.model_validate(w) for w in api.get("/workers").json()]
    console = Console(record=True, width=200)
    console.print(workers_table(listed))
    text = console.export_text()
    header, row = text.splitlines()[:2]
    assert header.split() == [
        "WORKER",
        "STATE",
        "QUEUES",
        "ACCEL",
        "VERSION",
        "JOB",
        "MEMORY",
        "HEARTBEAT",
    ]
    assert row.split()[:7] == ["node-c:13", "live", "cpu", "cpu", "9.9.9", "job-7", "300.0"]
