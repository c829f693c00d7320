"""Priorities, a queued job's place and GET /queues through the real API (no worker:
the registry gets a worker row of the test's own where a test needs live slots)."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.workers import WorkerEntry, WorkerRegistry
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer

PROBLEM = "application/problem+json"


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        yield client


def _tenant(api: TestClient, prefix: str, **quotas: object) -> dict[str, str]:
    """A tenant with a member key, its uploads, and its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    body: dict[str, object] = {"name": name, **({"quotas": quotas} if quotas else {})}
    assert api.post("/tenants", json=body, headers=ADMIN).status_code == 201
    key = api.post(f"/tenants/{name}/keys", json={"name": "m"}, headers=ADMIN).json()["key"]
    return {"name": name, "key": key}


@pytest.fixture
def uploads(api: TestClient, seed_files: dict[str, bytes]):  # noqa: ANN201
    def upload(tenant: dict[str, str]) -> None:
        for field, path, name in (("model", "/models", "m.h5"), ("data", "/datasets", "d.npz")):
            response = api.post(
                path, files={"file": (name, seed_files[field])}, headers=bearer(tenant["key"])
            )
            assert response.status_code == 201, response.text
            tenant[field] = response.json()["id"]

    return upload


def _submit(api: TestClient, tenant: dict[str, str], **extra: object):  # noqa: ANN202
    spec = {
        "keras_model_path": tenant["model"],
        "train": {"dataset": tenant["data"], "max_steps": 5},
        **extra,
    }
    return api.post("/convert", json=spec, headers=bearer(tenant["key"]))


def _live_worker(api: TestClient, slots: int) -> None:
    engine = api.app.state.backend.store.engine  # type: ignore[attr-defined]
    WorkerRegistry(engine).register(WorkerEntry("test-host:1", "test-host", ("cpu",), slots, "1"))


def test_a_priority_must_be_a_class_and_at_most_the_tenants_maximum(
    api: TestClient, uploads
) -> None:  # noqa: ANN001
    capped = _tenant(api, "capped", max_priority="low")
    uploads(capped)
    unknown = _submit(api, capped, priority="urgent")
    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == PROBLEM
    error = unknown.json()["errors"][0]
    assert error["loc"] == ["priority"]
    assert "not a priority class" in error["msg"]
    above = _submit(api, capped, priority="normal")
    assert above.status_code == 422
    error = above.json()["errors"][0]
    assert error["loc"] == ["priority"]
    assert "max_priority 'low'" in error["msg"]
    accepted = _submit(api, capped, priority="low")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["spec"]["priority"] == "low"
    # By default a tenant may ask for "high", not for a class an admin adds above it.
    plain = _tenant(api, "plain")
    uploads(plain)
    assert _submit(api, plain, priority="high").status_code == 202
    refused = api.post(
        "/tenants", json={"name": "bad-max", "quotas": {"max_priority": "top"}}, headers=ADMIN
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["quotas", "max_priority"]


def test_the_quotas_show_the_share_and_borrowing(api: TestClient) -> None:
    t = _tenant(api, "shared", share={"gpu": 2}, borrow=False)
    quotas = api.get("/tenants/me", headers=bearer(t["key"])).json()["quotas"]
    assert quotas["share"] == {"cpu": 0, "gpu": 2}
    assert quotas["borrow"] is False
    assert quotas["max_priority"] == "high"
    bad = api.post("/tenants", json={"name": "neg", "quotas": {"share": {"cpu": -1}}})
    assert bad.status_code == 422


def test_a_queued_job_shows_its_place_and_never_another_tenants_job(
    api: TestClient, uploads
) -> None:  # noqa: ANN001
    first, other = _tenant(api, "first"), _tenant(api, "other")
    uploads(first)
    uploads(other)
    # No live worker: the broker holds K (2) of a tenant's jobs; the third waits its turn.
    held = [_submit(api, first).json() for _ in range(3)]
    assert [j["scheduling"]["waiting_for"] for j in held] == ["worker", "worker", "tenant_limit"]
    assert [j["scheduling"]["position"] for j in held] == [None, None, 1]
    assert held[2]["scheduling"]["priority"] == "normal"
    assert held[2]["preemptions"] == 0
    _live_worker(api, 1)  # one slot, taken by the jobs handed over already
    urgent = _submit(api, other, priority="high").json()
    assert urgent["scheduling"] == {"position": 1, "priority": "high", "waiting_for": "slot"}
    mine = api.get(f"/jobs/{held[2]['id']}", headers=bearer(first["key"]))
    assert mine.json()["scheduling"]["position"] == 2
    assert urgent["id"] not in mine.text
    listed = api.get("/jobs", headers=bearer(first["key"])).json()["items"]
    assert {j["id"]: j["scheduling"]["position"] for j in listed} == {
        held[0]["id"]: None,
        held[1]["id"]: None,
        held[2]["id"]: 2,
    }
    assert api.get(f"/jobs/{urgent['id']}", headers=bearer(first["key"])).status_code == 404

    queues = api.get("/queues", headers=ADMIN)
    assert queues.status_code == 200, queues.text
    cpu = next(q for q in queues.json() if q["name"] == "cpu")
    assert (cpu["slots"], cpu["running"], cpu["waiting"], cpu["borrowed"]) == (1, 2, 2, 2)
    by_tenant = {t["tenant"]: (t["running"], t["waiting"]) for t in cpu["tenants"]}
    assert by_tenant == {first["name"]: (2, 1), other["name"]: (0, 1)}
    member = api.get("/queues", headers=bearer(first["key"]))
    assert member.status_code == 403
    assert member.headers["content-type"] == PROBLEM
