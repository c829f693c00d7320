"""What a failed job shows: its member sees the error's type, message and reason, no
traceback and no server path, wherever the job appears (GET /jobs/{id}, the list, the
log, the event stream); an admin sees what the worker wrote, tracebacks included."""

import json
import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobError, JobStatus
from k2e.settings import Settings
from k2e.storage import Storage
from service.main import create_app
from service.submission import request_hash, tenant_key
from tests.support.api_keys import ADMIN, admin_client, bearer, new_tenant
from worker.joblog import JobLogCapture

TENANT = "views"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("k2e-views"), redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        member = bearer(new_tenant(client, TENANT))
        yield {"client": client, "settings": settings, "member": member}


REPLAYED_BODY = {"train": {"max_steps": 10}}


def _failed_job(settings: Settings) -> tuple[str, str]:
    """A job failed as the worker fails one: the exception logged with its traceback
    (JobLogCapture, the worker's log capture) and its str() as the error message; this one
    names a file of the tenant's and carries a stack the way TensorFlow's errors do.
    Returns the job id and the storage path in the message."""
    store = JobLeases(settings.sqlalchemy_url)
    job_id = str(uuid.uuid4())
    # Submitted with an Idempotency-Key ("again"), as POST /convert records one.
    key, body_hash = tenant_key(TENANT, f"again-{job_id}"), request_hash(REPLAYED_BODY)
    store.create(
        NewJob(
            job_id,
            TENANT,
            {},
            "cpu",
            f"jobs/{job_id}",
            10,
            idempotency_key=key,
            request_hash=body_hash,
        )
    )
    assert store.start(job_id, "host:123:abc", 30) is not None
    path = Storage(settings.storage_root, TENANT).root / "jobs" / job_id / "model.ckpt-0.index"
    stack = "".join(traceback.format_stack())
    message = (
        f"Graph execution error:\n\nDetected at node 'loss/mul' defined at (most recent "
        f"call last):\n{stack}Node: 'loss/mul'\nincompatible shapes reading {path}"
    )
    log = logging.getLogger("k2e.worker.training")
    with JobLogCapture(store, job_id):
        try:
            raise ValueError(message)
        except ValueError as exc:
            log.exception("job %s failed", job_id)
            error = JobError(type=type(exc).__name__, message=str(exc), reason="error")
    store.finish(job_id, JobStatus.failed, "host:123:abc", error=error)
    store.engine.dispose()
    return job_id, str(path)


def _texts(
    client: TestClient, job_id: str, headers: dict[str, str], replay: bool = False
) -> dict[str, str]:
    """Everything the job shows the caller, by where it shows it (``replay``: also what
    POST /convert answers when the job's Idempotency-Key comes again)."""
    job = client.get(f"/jobs/{job_id}", headers=headers)
    assert job.status_code == 200, job.text
    again = client.get(f"/jobs/{job_id}", headers=headers)  # from memory this time
    assert again.content == job.content
    listed = client.get("/jobs", params={"tenant": TENANT}, headers=headers).json()["items"]
    (in_list,) = [j for j in listed if j["id"] == job_id]
    log = client.get(f"/jobs/{job_id}/logs", headers=headers).json()["items"]
    stream = client.get(f"/jobs/{job_id}/events", headers=headers)
    texts = {}
    if replay:
        again = {**headers, "Idempotency-Key": f"again-{job_id}"}
        replayed = client.post("/convert", json=REPLAYED_BODY, headers=again)
        assert replayed.status_code == 202, replayed.text
        texts["replayed"] = json.dumps(replayed.json()["error"])
    events = [
        dict(line.split(": ", 1) for line in block.split("\n"))
        for block in stream.text.strip().split("\n\n")
    ]
    assert events[-1]["event"] == "end"
    return texts | {
        "error": json.dumps(job.json()["error"]),
        "list": json.dumps(in_list["error"]),
        "log": "\n".join(item["message"] for item in log),
        "stream": "\n".join(e["data"] for e in events),
        "end": json.dumps(json.loads(events[-1]["data"])["error"]),
    }


def test_a_member_sees_the_error_without_traceback_or_server_paths(world: dict) -> None:
    client, settings = world["client"], world["settings"]
    job_id, path = _failed_job(settings)
    member = _texts(client, job_id, world["member"], replay=True)
    admin = _texts(client, job_id, ADMIN)
    here = str(Path(__file__).resolve())
    for where, text in member.items():
        assert "Traceback" not in text, where
        assert 'File "' not in text, where
        assert 'File \\"' not in text, where  # as JSON writes it
        assert here not in text, where
        assert str(settings.storage_root) not in text, where
        assert "host:123" not in text, where
    error = client.get(f"/jobs/{job_id}", headers=world["member"]).json()["error"]
    assert error["type"] == "ValueError"
    assert error["reason"] == "error"
    assert error["message"].startswith("Graph execution error:")
    assert f"incompatible shapes reading jobs/{job_id}/model.ckpt-0.index" in error["message"]
    assert "ValueError: Graph execution error:" in member["log"]
    # The admin sees what the worker wrote.
    assert "Traceback (most recent call last)" in admin["log"]
    for where in ("error", "list", "end"):
        assert here in admin[where], where
    assert path in client.get(f"/jobs/{job_id}", headers=ADMIN).json()["error"]["message"]
