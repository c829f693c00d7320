"""GET /jobs/{id} served from memory answers exactly as the route does, and only when the
route would answer 200 with the same body."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import JobStore, NewJob
from k2e.settings import Settings
from k2e.tenancy.scope import Scope
from service import fastpath
from service.main import create_app
from tests.support.api_keys import ADMIN, bearer, new_tenant


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Settings:
    # The jobs here are queued (live): with the default 0.05 s, whether a read comes from
    # memory would depend on how fast this machine runs the requests between two reads.
    return Settings(
        data_dir=tmp_path_factory.mktemp("k2e-fastpath"),
        redis_url=redis_server.url,
        live_job_cache_s=5,
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def from_memory(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each request, whether the fast path answered it (True) or passed it on."""
    seen: list[bool] = []
    real = fastpath.cached_answer

    def recording(scope):  # type: ignore[no-untyped-def]
        body = real(scope)
        seen.append(body is not None)
        return body

    monkeypatch.setattr(fastpath, "cached_answer", recording)
    return seen


def _job(settings: Settings, tenant: str) -> str:
    job_id = str(uuid.uuid4())
    JobStore(settings.sqlalchemy_url).create(
        NewJob(job_id, tenant, {"note": "fast path"}, "cpu", f"jobs/{job_id}", 1)
    )
    return job_id


def _same(first: object, second: object) -> None:
    a, b = first, second
    assert (a.status_code, a.content) == (b.status_code, b.content)  # type: ignore[attr-defined]
    # Every header: one the route gains later must be sent by the fast path too.
    assert dict(a.headers) == dict(b.headers)  # type: ignore[attr-defined]


def test_a_cached_read_is_the_routes_answer(
    client: TestClient, settings: Settings, from_memory: list[bool]
) -> None:
    job_id = _job(settings, "default")
    # One request id for the three: each answer echoes it, the fast path's too.
    same_id = {"X-Request-ID": "read-1"}
    first = client.get(f"/jobs/{job_id}", headers={**ADMIN, **same_id})  # fills both caches
    assert first.status_code == 200
    assert first.json()["id"] == job_id
    assert first.headers["x-request-id"] == "read-1"
    cached = client.get(f"/jobs/{job_id}", headers={**ADMIN, **same_id})
    _same(first, cached)
    spaced = client.get(
        f"/jobs/{job_id}",
        headers={"Authorization": f"bearer  {ADMIN['Authorization'][7:]} ", **same_id},
    )
    _same(first, spaced)
    assert from_memory == [False, True, True]


def test_what_the_route_refuses_stays_refused(
    client: TestClient, settings: Settings, from_memory: list[bool]
) -> None:
    job_id = _job(settings, "default")
    assert client.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 200  # now cached
    assert client.get(f"/jobs/{job_id}").status_code == 401
    assert (
        client.get(f"/jobs/{job_id}", headers=bearer("k2e_not-a-key-0123456789")).status_code == 401
    )
    assert client.get(f"/jobs/{job_id}", headers={"Authorization": "Basic abc"}).status_code == 401
    member = new_tenant(client, f"fp-{uuid.uuid4().hex[:8]}")
    other = client.get(f"/jobs/{job_id}", headers=bearer(member))
    assert other.status_code == 404  # another tenant's job answers as an unknown one
    assert other.headers["content-type"] == "application/problem+json"
    assert client.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 200
    assert from_memory[1:] == [False, False, False, False, True]


def test_a_revoked_key_is_refused_at_once(client: TestClient, settings: Settings) -> None:
    name = f"fp-{uuid.uuid4().hex[:8]}"
    member = new_tenant(client, name)
    job_id = _job(settings, name)
    assert client.get(f"/jobs/{job_id}", headers=bearer(member)).status_code == 200
    assert client.get(f"/jobs/{job_id}", headers=bearer(member)).status_code == 200
    keys = client.get("/keys", headers=ADMIN).json()
    key_id = next(k["id"] for k in keys if k["tenant"] == name)
    assert client.delete(f"/keys/{key_id}", headers=ADMIN).status_code == 204
    assert client.get(f"/jobs/{job_id}", headers=bearer(member)).status_code == 401


def test_a_deleted_job_is_not_served_from_memory(client: TestClient, settings: Settings) -> None:
    job_id = _job(settings, "default")
    assert client.post(f"/jobs/{job_id}/cancel", headers=ADMIN).status_code == 202
    ended = client.get(f"/jobs/{job_id}", headers=ADMIN)
    assert ended.json()["status"] == "cancelled"
    assert client.get(f"/jobs/{job_id}", headers=ADMIN).json() == ended.json()
    assert client.delete(f"/jobs/{job_id}", headers=ADMIN).status_code == 204
    assert client.get(f"/jobs/{job_id}", headers=ADMIN).status_code == 404


def test_another_tenants_job_takes_the_path_of_an_unknown_id(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held in memory for its owner or not, another tenant's job is looked up as an unknown
    id is: the same store query (with the member's tenant), the same 404. An answer from
    memory would be measurably faster, telling that the job exists
    (bench/tenant_probe.py measures both)."""
    owner = f"fp-{uuid.uuid4().hex[:8]}"
    owner_key = new_tenant(client, owner)
    prober = f"fp-{uuid.uuid4().hex[:8]}"
    prober_key = new_tenant(client, prober)
    job_id = _job(settings, owner)
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    reads: list[tuple[object, ...]] = []
    real_get = store.get

    def recording_get(*args: object) -> object:
        reads.append(args)
        return real_get(*args)

    monkeypatch.setattr(store, "get", recording_get)
    for _ in range(2):  # the owner's reads: the job is now held in memory
        assert client.get(f"/jobs/{job_id}", headers=bearer(owner_key)).status_code == 200
    assert len(reads) == 1
    unknown_id = str(uuid.uuid4())
    answers = []
    for probe in (job_id, unknown_id, job_id):
        reads.clear()
        answer = client.get(f"/jobs/{probe}", headers=bearer(prober_key))
        answers.append((answer.status_code, answer.json()["detail"].replace(probe, "ID")))
        assert reads == [(probe, Scope.of(prober))], "one store read, scoped to the prober's tenant"
    assert answers == [(404, "no job with id 'ID'")] * 3
