"""Every route of the app, walked from its router (a new route is covered the day it is
added): a key is required, a revoked key is refused, and another tenant's id answers
exactly as an unknown id does."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer, new_tenant

PUBLIC = {"/healthz", "/readyz"}
# Ids a tenant owns; admin routes ({name}, {key_id}) answer members 403 instead.
OWNED = {"job_id", "model_id", "dataset_id", "webhook_id"}
UNKNOWN = {"job_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "model_id": "f" * 32}
UNKNOWN["dataset_id"] = "e" * 32
UNKNOWN["webhook_id"] = "wh_" + "d" * 16


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict]:
    from tests.support.keras_models import (
        npz_bytes,
        save_h5,
        seed_multi_io_data,
        seed_multi_io_model,
    )

    root = tmp_path_factory.mktemp("routes")
    settings = Settings(data_dir=root, redis_url=redis_server.url, admin_key=TEST_ADMIN_KEY)
    app = create_app(settings)
    with admin_client(app) as client:
        owner = new_tenant(client, "owner")
        other = new_tenant(client, "other")
        revoked = new_tenant(client, "gone")
        gone_id = next(k["id"] for k in client.get("/keys").json() if k["tenant"] == "gone")
        assert client.delete(f"/keys/{gone_id}").status_code == 204
        h5 = save_h5(seed_multi_io_model(), Path(root) / "seed.h5").read_bytes()
        model = client.post("/models", files={"file": ("m.h5", h5)}, headers=bearer(owner)).json()[
            "id"
        ]
        data = npz_bytes(seed_multi_io_data(32))
        dataset = client.post(
            "/datasets", files={"file": ("d.npz", data)}, headers=bearer(owner)
        ).json()["id"]
        spec = {"keras_model_path": model, "train": {"dataset": dataset, "max_steps": 5}}
        job = client.post("/convert", json=spec, headers=bearer(owner))
        assert job.status_code == 202, job.text
        hook = client.post(
            "/webhooks",
            json={"url": "https://93.184.216.34/in", "events": ["job.succeeded"]},
            headers=bearer(owner),
        )
        assert hook.status_code == 201, hook.text
        owner_key_id = next(k["id"] for k in client.get("/keys").json() if k["tenant"] == "owner")
        yield {
            "app": app,
            "client": client,
            "keys": {"owner": owner, "other": other, "revoked": revoked},
            "ids": {
                "job_id": job.json()["id"],
                "model_id": model,
                "dataset_id": dataset,
                "webhook_id": hook.json()["id"],
                "step": "1",
                "name": "owner",
                "key_id": owner_key_id,
            },
        }


def _api_routes(routes: list) -> Iterator[APIRoute]:
    """The app's API routes, through included routers (k2e's routers have no prefix)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI >= 0.165 keeps included routers
            yield from _api_routes(route.original_router.routes)


def _routes(app) -> list[tuple[str, str]]:
    # The dashboard's own routes (pages, sign-in) are tested in test_dashboard_sessions.py.
    found = [
        (method, route.path_format)
        for route in _api_routes(app.routes)
        for method in sorted(route.methods)
        if not route.path.startswith("/ui")
    ]
    assert len(found) >= 25  # the walk reads the real router, not an empty list
    # ...and every operation the spec documents is in it.
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= set(found)
    return found


def _params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)


def test_every_route_but_health_needs_a_valid_key(world: dict) -> None:
    client: TestClient = world["client"]
    for method, path in _routes(world["app"]):
        url = _fill(path, world["ids"])
        if path in PUBLIC:
            assert client.request(method, url, headers={"Authorization": ""}).status_code == 200
            continue
        for headers in ({"Authorization": ""}, bearer(world["keys"]["revoked"])):
            response = client.request(method, url, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_another_tenants_ids_answer_as_unknown_ids(world: dict) -> None:
    client: TestClient = world["client"]
    other = bearer(world["keys"]["other"])
    checked = 0
    for method, path in _routes(world["app"]):
        params = _params(path)
        if path in PUBLIC or not params:
            continue
        theirs = client.request(method, _fill(path, world["ids"]), headers=other)
        if not set(params) & OWNED:
            assert theirs.status_code == 403, (method, path, theirs.text)
            continue
        unknown_ids = {**world["ids"], **UNKNOWN}
        unknown = client.request(method, _fill(path, unknown_ids), headers=other)
        assert theirs.status_code == unknown.status_code == 404, (method, path, theirs.text)
        body = theirs.text
        for name in OWNED & set(params):
            body = body.replace(world["ids"][name], UNKNOWN[name])
        assert body == unknown.text, (method, path)
        checked += 1
    assert checked >= 12
    # The owner itself reaches the same resources.
    owner = bearer(world["keys"]["owner"])
    assert client.get(f"/jobs/{world['ids']['job_id']}", headers=owner).status_code == 200
    assert client.get(f"/models/{world['ids']['model_id']}", headers=owner).status_code == 200


def test_lists_show_nothing_of_another_tenant(world: dict) -> None:
    client: TestClient = world["client"]
    other = bearer(world["keys"]["other"])
    for method, path in _routes(world["app"]):
        if method != "GET" or path in PUBLIC or _params(path):
            continue
        response = client.get(path, headers=other)
        if response.status_code == 403:  # admin lists
            continue
        if path == "/metrics":  # the contract: an admin key or the metrics token, else 401
            assert response.status_code == 401, response.text
            continue
        assert response.status_code == 200, (path, response.text)
        for name in OWNED:
            assert world["ids"][name] not in response.text, (path, name)


def _cookie_client(app, key: str) -> tuple[TestClient, str]:
    """A client with no bearer key, signed in to the dashboard with ``key``."""
    client = TestClient(app)
    signed_in = client.post("/ui/session", json={"key": key})
    assert signed_in.status_code == 200, signed_in.text
    return client, signed_in.json()["csrf_token"]


def test_a_session_cookie_needs_the_csrf_token_on_every_state_changing_route(world: dict) -> None:
    client, token = _cookie_client(world["app"], world["keys"]["owner"])
    checked = 0
    for method, path in _routes(world["app"]):
        if path in PUBLIC or method in ("GET", "HEAD", "OPTIONS"):
            continue
        url = _fill(path, world["ids"])
        for headers in ({}, {"X-CSRF-Token": "not-the-token"}, {"X-CSRF-Token": ""}):
            response = client.request(method, url, headers=headers)
            assert response.status_code == 403, (method, path, headers, response.text)
            assert "X-CSRF-Token" in response.json()["detail"]
        # With the token the request is the key's own (unknown ids: nothing changes).
        unknown = _fill(path, {**world["ids"], **UNKNOWN})
        with_token = client.request(method, unknown, headers={"X-CSRF-Token": token})
        assert with_token.status_code not in (401, 403) or "admin keys" in with_token.text, (
            method,
            path,
            with_token.text,
        )
        checked += 1
    assert checked >= 8


def test_a_session_sees_what_its_key_sees(world: dict) -> None:
    client, _ = _cookie_client(world["app"], world["keys"]["other"])
    owner, _ = _cookie_client(world["app"], world["keys"]["owner"])
    checked = 0
    for method, path in _routes(world["app"]):
        if method != "GET" or not OWNED & set(_params(path)):
            continue
        url = _fill(path, world["ids"])
        unknown = client.get(_fill(path, {**world["ids"], **UNKNOWN}))
        response = client.get(url)
        assert response.status_code == 404 == unknown.status_code, (path, response.text)
        if path.endswith("/events"):
            # The owner's stream stays open while the job lives; tests/integration/test_events.py
            # reads it from a real API process.
            checked += 1
            continue
        assert owner.get(url).status_code != 404 or "checkpoint" in path or "savedmodel" in path
        checked += 1
    assert checked >= 6
    assert client.get("/jobs").json()["items"] == []
    assert [j["id"] for j in owner.get("/jobs").json()["items"]] == [world["ids"]["job_id"]]
