"""POST /jobs/{id}/suspend, /resume and /cancel from every state a job can be in, through
the real API on its store (no worker: the states are made with the worker's own store
writes), with tenancy, quotas and the model_dir lock."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.tables import jobs
from k2e.tenancy.scope import ANY_TENANT
from service.main import create_app
from tests.support.api_keys import admin_client, bearer, new_tenant

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("k2e-data"), redis_url=redis_server.url)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def store(settings: Settings, api: TestClient) -> Iterator[JobLeases]:
    leases = JobLeases(settings.sqlalchemy_url)
    yield leases
    leases.engine.dispose()


@pytest.fixture
def member(api: TestClient) -> tuple[str, dict[str, str]]:
    """A tenant of the test's own: its jobs in flight are the test's only."""
    name = f"sr-{uuid.uuid4().hex[:8]}"
    return name, bearer(new_tenant(api, name))


def _row(store: JobLeases, job_id: str) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one())


def _set(store: JobLeases, job_id: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))


def _job_in(store: JobLeases, tenant: str, state: str) -> str:
    """A job of ``tenant`` in ``state``, made by the writes that make it so."""
    job_id = str(uuid.uuid4())
    lock = f"{tenant}:{job_id[:8]}"
    spec = {"train": {"dataset": "d", "max_steps": 20}}
    new = NewJob(job_id, tenant, spec, "cpu", f"model_dirs/{job_id[:8]}", 20, dir_lock=lock)
    store.create(new)
    if state == "waiting":
        return job_id
    _set(store, job_id, dispatched_at=store.get(job_id, ANY_TENANT).created_at)
    if state == "dispatched":
        return job_id
    assert store.start(job_id, "host:1:w", 30) is not None
    if state == "running":
        return job_id
    if state in ("suspend pending", "preempt pending"):
        _set(store, job_id, yield_request=state.split()[0])
    elif state == "suspended":
        _set(store, job_id, yield_request="suspend")
        assert store.release_yielded(job_id, "host:1:w", 7) is JobStatus.suspended
    elif state == "cancelling":
        _set(store, job_id, status=JobStatus.cancelling.value)
    else:
        store.finish(job_id, JobStatus(state), "host:1:w")
    return job_id


# state → (status, yield_request) after suspend; 409 for a job that may not be suspended
SUSPEND = {
    "waiting": ("suspended", None),
    "dispatched": ("queued", "suspend"),
    "running": ("running", "suspend"),
    "suspend pending": ("running", "suspend"),
    "preempt pending": ("running", "suspend"),
    "suspended": ("suspended", None),
    "cancelling": 409,
    "succeeded": 409,
    "failed": 409,
    "cancelled": 409,
}
RESUME = {
    "waiting": 409,
    "dispatched": 409,
    "running": 409,
    "suspend pending": ("running", None),
    "preempt pending": 409,
    # queued again, and handed to the broker at once (its tenant's turn allows it)
    "suspended": ("queued", None),
    "cancelling": 409,
    "succeeded": 409,
    "failed": 409,
    "cancelled": 409,
}
CANCEL = {
    "waiting": "cancelled",
    "dispatched": "cancelled",
    "running": "cancelling",
    "suspend pending": "cancelling",
    "preempt pending": "cancelling",
    "suspended": "cancelled",
    "cancelling": "cancelling",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


@pytest.mark.parametrize("state", list(SUSPEND))
def test_suspend_from_each_state(api: TestClient, store: JobLeases, member, state: str) -> None:
    tenant, headers = member
    job_id = _job_in(store, tenant, state)
    response = api.post(f"/jobs/{job_id}/suspend", headers=headers)
    expected = SUSPEND[state]
    row = _row(store, job_id)
    if expected == 409:
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == PROBLEM
        assert "suspend" in response.json()["detail"]
        assert row["yield_request"] is None
        return
    assert response.status_code == 202, response.text
    assert response.json()["status"] == expected[0]
    assert (row["status"], row["yield_request"]) == expected
    assert row["dir_lock"] is not None  # a suspended job keeps its model_dir
    if state == "waiting":
        kinds = [(e["kind"], e["message"]) for e in store.events(job_id)]
        assert kinds[-1] == ("suspended", "suspended while queued")
        assert row["dispatched_at"] is None


@pytest.mark.parametrize("state", list(RESUME))
def test_resume_from_each_state(api: TestClient, store: JobLeases, member, state: str) -> None:
    tenant, headers = member
    job_id = _job_in(store, tenant, state)
    before = _row(store, job_id)
    response = api.post(f"/jobs/{job_id}/resume", headers=headers)
    expected = RESUME[state]
    row = _row(store, job_id)
    if expected == 409:
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == PROBLEM
        assert "resume" in response.json()["detail"]
        assert (row["status"], row["yield_request"]) == (before["status"], before["yield_request"])
        return
    assert response.status_code == 202, response.text
    assert (row["status"], row["yield_request"]) == expected
    if state == "suspended":
        assert row["dispatched_at"] is not None  # pumped: in the broker again
        assert row["dir_lock"] == before["dir_lock"]
        assert [e["kind"] for e in store.events(job_id)][-1] == "queued"


def test_cancel_from_each_state(api: TestClient, store: JobLeases, member) -> None:
    """One test over every state: the rows that were there before suspend came keep
    their answers, a suspended job is cancelled at once, a pending yield is dropped."""
    tenant, headers = member
    for state, expected in CANCEL.items():
        job_id = _job_in(store, tenant, state)
        response = api.post(f"/jobs/{job_id}/cancel", headers=headers)
        assert response.status_code == 202, (state, response.text)
        row = _row(store, job_id)
        assert row["status"] == expected, state
        assert row["yield_request"] is None, state
        if state == "suspended":
            assert row["dir_lock"] is None  # the model_dir is free again
            messages = [e["message"] for e in store.events(job_id)]
            assert "cancelled while suspended" in messages


def test_suspending_twice_answers_the_same_and_adds_nothing(
    api: TestClient, store: JobLeases, member
) -> None:
    tenant, headers = member
    for state in ("running", "waiting"):
        job_id = _job_in(store, tenant, state)
        first = api.post(f"/jobs/{job_id}/suspend", headers=headers)
        events = len(store.events(job_id))
        again = api.post(f"/jobs/{job_id}/suspend", headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json()["status"] == first.json()["status"]
        assert len(store.events(job_id)) == events


def test_another_tenants_job_is_not_found_and_untouched(
    api: TestClient, store: JobLeases, member
) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    new_tenant(api, other)
    _, headers = member
    for action, state in (("suspend", "running"), ("resume", "suspended"), ("cancel", "suspended")):
        job_id = _job_in(store, other, state)
        before = _row(store, job_id)
        response = api.post(f"/jobs/{job_id}/{action}", headers=headers)
        assert response.status_code == 404, response.text
        row = _row(store, job_id)
        assert (row["status"], row["yield_request"]) == (before["status"], before["yield_request"])
    unknown = api.post(f"/jobs/{uuid.uuid4()}/suspend", headers=headers)
    assert unknown.status_code == 404
    # An admin acts on any tenant's job.
    job_id = _job_in(store, other, "waiting")
    assert api.post(f"/jobs/{job_id}/suspend").json()["status"] == "suspended"


def test_a_suspended_job_holds_no_job_quota_but_keeps_its_model_dir(
    api: TestClient, store: JobLeases, seed_files: dict[str, bytes]
) -> None:
    name = f"q-{uuid.uuid4().hex[:8]}"
    headers = bearer(new_tenant(api, name, max_active_jobs=1))
    ids = []
    for path, file in (
        ("/models", ("m.h5", seed_files["model"])),
        ("/datasets", ("d.npz", seed_files["data"])),
    ):
        created = api.post(path, files={"file": file}, headers=headers)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    spec = {"keras_model_path": ids[0], "train": {"dataset": ids[1], "max_steps": 5}}
    first = api.post("/convert", json={**spec, "model_dir": "kept"}, headers=headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    assert api.post("/convert", json=spec, headers=headers).status_code == 429
    # In the broker: the suspend is pending; the worker would suspend it. Here its row is
    # released as the worker releases it.
    assert api.post(f"/jobs/{job_id}/suspend", headers=headers).status_code == 202
    assert store.start(job_id, "host:1:w", 30) is not None
    assert store.release_yielded(job_id, "host:1:w", 0) is JobStatus.suspended
    assert api.get(f"/jobs/{job_id}", headers=headers).json()["status"] == "suspended"
    usage = api.get("/tenants/me", headers=headers).json()["usage"]
    assert usage["queued_jobs"] == usage["running_jobs"] == 0
    # Its model_dir stays its own, and so do its uploads.
    taken = api.post("/convert", json={**spec, "model_dir": "kept"}, headers=headers)
    assert taken.status_code == 409
    assert job_id in taken.json()["detail"]
    for path in (f"/models/{ids[0]}", f"/datasets/{ids[1]}"):
        refused = api.delete(path, headers=headers)
        assert refused.status_code == 409
        assert job_id in refused.json()["detail"]
    assert api.post("/convert", json=spec, headers=headers).status_code == 202


def test_resume_queues_the_job_again_and_it_takes_its_turn(
    api: TestClient, store: JobLeases, settings: Settings
) -> None:
    """A tenant's K in-flight jobs: a resumed job waits for its turn like any other."""
    name = f"k-{uuid.uuid4().hex[:8]}"
    headers = bearer(new_tenant(api, name))
    suspended = _job_in(store, name, "suspended")
    busy = [_job_in(store, name, "running") for _ in range(settings.tenant_inflight_jobs)]
    assert api.post(f"/jobs/{suspended}/resume", headers=headers).status_code == 202
    row = _row(store, suspended)
    assert (row["status"], row["dispatched_at"]) == ("queued", None)
    store.finish(busy[0], JobStatus.succeeded, "host:1:w")
    api.post(f"/jobs/{busy[1]}/cancel", headers=headers)  # pumps the tenant's turn
    assert _row(store, suspended)["dispatched_at"] is not None
