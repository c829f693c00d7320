"""The lists' cursors (GET /jobs, /models, /datasets) page through the caller's own list
and nothing else: opaque, different each time they are issued (so that two of them tell
nothing about what other tenants did in between), refused (422 naming `cursor`) when they
come from another tenant or list, were altered, or are an older k2e's row numbers."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from k2e.db import utcnow
from k2e.jobs.job_store import JobStore, NewJob
from k2e.settings import Settings
from k2e.tables import uploads
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer, new_tenant


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("k2e-cursors"), redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        store = JobStore(settings.sqlalchemy_url)
        tenants = {}
        for name in ("cur-a", "cur-b"):
            tenants[name] = bearer(new_tenant(client, name))
        # Interleaved: each tenant's rows sit between the other's.
        for _ in range(5):
            for name in tenants:
                job_id = str(uuid.uuid4())
                store.create(NewJob(job_id, name, {}, "cpu", f"jobs/{job_id}", 1))
                for kind in ("model", "dataset"):
                    with store.engine.begin() as conn:
                        upload_id = uuid.uuid4().hex
                        info = _info(kind, upload_id)
                        conn.execute(
                            insert(uploads).values(
                                id=upload_id,
                                kind=kind,
                                tenant=name,
                                created_at=utcnow(),
                                size=1,
                                info=info,
                            )
                        )
        store.engine.dispose()
        yield {"client": client, "tenants": tenants}


LISTS = ["/jobs", "/models", "/datasets"]


def _info(kind: str, upload_id: str) -> dict:
    if kind == "model":
        return {
            "id": upload_id,
            "format": "h5",
            "inputs": [],
            "outputs": [],
            "compiled": True,
            "metric_names": [],
            "sha256": "0" * 64,
        }
    return {"id": upload_id, "format": "npz", "num_examples": 1, "arrays": {}}


def _problem(response) -> dict:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["errors"][0]["loc"] == ["query", "cursor"]
    return body


def _ids(client: TestClient, path: str, headers: dict, limit: int) -> list[str]:
    """Every item of the list, a page at a time."""
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=params, headers=headers)
        assert page.status_code == 200, page.text
        ids += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.parametrize("path", LISTS)
def test_paging_walks_the_callers_own_list(world: dict, path: str) -> None:
    client, a = world["client"], world["tenants"]["cur-a"]
    whole = client.get(path, params={"limit": 200}, headers=a).json()["items"]
    assert len(whole) == 5
    assert _ids(client, path, a, 2) == [item["id"] for item in whole]


@pytest.mark.parametrize("path", LISTS)
def test_cursors_are_opaque_and_fresh_each_time(world: dict, path: str) -> None:
    client, a = world["client"], world["tenants"]["cur-a"]
    first = client.get(path, params={"limit": 2}, headers=a).json()["next_cursor"]
    again = client.get(path, params={"limit": 2}, headers=a).json()["next_cursor"]
    assert first != again, "the same position gives a different cursor each time"
    assert not first.isdigit()
    pages = [client.get(path, params={"limit": 2, "cursor": c}, headers=a) for c in (first, again)]
    assert pages[0].json()["items"] == pages[1].json()["items"]


@pytest.mark.parametrize("path", LISTS)
def test_foreign_altered_and_old_cursors_are_422(world: dict, path: str) -> None:
    client, tenants = world["client"], world["tenants"]
    a, b = tenants["cur-a"], tenants["cur-b"]
    cursor = client.get(path, params={"limit": 2}, headers=a).json()["next_cursor"]
    everyone = client.get(path, params={"limit": 2, "tenant": "*"}, headers=ADMIN)
    admin_cursor = everyone.json()["next_cursor"]
    other_list = "/models" if path != "/models" else "/jobs"
    other_cursor = client.get(other_list, params={"limit": 2}, headers=a).json()["next_cursor"]
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    for headers, bad in [
        (b, cursor),  # another tenant's
        (a, admin_cursor),  # the admin's list of every tenant
        (a, other_cursor),  # another list's
        (a, flipped),  # altered
        (a, cursor[:-2]),  # cut short
        (a, "12"),  # an older k2e's row number
        (a, "999999999999999999"),
    ]:
        _problem(client.get(path, params={"cursor": bad}, headers=headers))
    # Characters a cursor never has: refused by the parameter's pattern, also naming it.
    _problem(client.get(path, params={"cursor": "a b/c"}, headers=a))
