"""Deleting a tenant (DELETE /tenants/{name}, the client, `k2e admin tenants delete`), on
SQLite and on PostgreSQL (a schema of its own), and the answers that carry secrets
(a new key's, a session's CSRF token) being marked never to be stored."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from k2e.settings import Settings
from k2e.tables import api_keys, events, jobs, sessions, uploads
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer
from tests.support.api_server import running_api
from tests.support.postgres import fresh_postgres_schema

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "application/problem+json"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server
) -> Iterator[Settings]:
    data_dir = tmp_path_factory.mktemp("deletion") / "data"
    if request.param == "sqlite":
        yield Settings(data_dir=data_dir, redis_url=redis_server.url, admin_key=TEST_ADMIN_KEY)
        return
    with fresh_postgres_schema("k2e_deletion") as url:
        yield Settings(
            data_dir=data_dir,
            redis_url=redis_server.url,
            database_url=url,
            admin_key=TEST_ADMIN_KEY,
        )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as client:
        yield client


def _tenant(api: TestClient, role: str = "member") -> tuple[str, str, str]:
    """A new tenant: its name, a key of it and that key's id."""
    name = f"d-{uuid.uuid4().hex[:10]}"
    assert api.post("/tenants", json={"name": name}).status_code == 201
    created = api.post(f"/tenants/{name}/keys", json={"name": "k", "role": role}).json()
    return name, created["key"], created["id"]


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return response.json()


def _rows(settings: Settings, name: str, job_id: str, key_id: str) -> dict[str, int]:
    engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
    counts = {}
    with engine.connect() as conn:
        for label, query in (
            ("keys", sqlalchemy.select(api_keys).where(api_keys.c.tenant == name)),
            ("sessions", sqlalchemy.select(sessions).where(sessions.c.key_id == key_id)),
            ("uploads", sqlalchemy.select(uploads).where(uploads.c.tenant == name)),
            ("jobs", sqlalchemy.select(jobs).where(jobs.c.tenant == name)),
            ("events", sqlalchemy.select(events).where(events.c.job_id == job_id)),
        ):
            counts[label] = len(conn.execute(query).all())
    engine.dispose()
    return counts


def test_deleting_a_tenant_removes_its_keys_sessions_files_and_rows(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    name, key, key_id = _tenant(api)
    member = bearer(key)
    model = api.post("/models", files={"file": ("m.h5", seed_files["model"])}, headers=member)
    data = api.post("/datasets", files={"file": ("d.npz", seed_files["data"])}, headers=member)
    spec = {
        "keras_model_path": model.json()["id"],
        "train": {"dataset": data.json()["id"], "max_steps": 5},
        "model_dir": "named",
    }
    job = api.post("/convert", json=spec, headers=member).json()["id"]
    assert api.post(f"/jobs/{job}/cancel", headers=member).json()["status"] == "cancelled"
    folder = settings.storage_root / "tenants" / name
    (folder / "model_dirs" / "named" / "export" / "1").mkdir(parents=True)
    (folder / "model_dirs" / "named" / "export" / "1" / "saved_model.pb").write_bytes(b"x")
    dashboard = TestClient(api.app)
    assert dashboard.post("/ui/session", json={"key": key}).status_code == 200
    assert dashboard.get("/tenants/me").json()["name"] == name  # cached in this process
    assert _rows(settings, name, job, key_id) == {
        "keys": 1,
        "sessions": 1,
        "uploads": 2,
        "jobs": 1,
        "events": 3,  # queued, cancelled, end
    }

    response = api.delete(f"/tenants/{name}")
    assert response.status_code == 204, response.text

    assert not folder.exists()
    assert _rows(settings, name, job, key_id) == dict.fromkeys(
        ("keys", "sessions", "uploads", "jobs", "events"), 0
    )
    # Its key and its dashboard session end at once, though both were just cached.
    _problem(api.get("/tenants/me", headers=member), 401)
    _problem(dashboard.get("/tenants/me"), 401)
    _problem(dashboard.get("/ui/session"), 401)
    # Nothing of it answers, even to an admin.
    _problem(api.get(f"/jobs/{job}"), 404)
    _problem(api.get(f"/models/{model.json()['id']}"), 404)
    _problem(api.get(f"/datasets/{data.json()['id']}"), 404)
    assert name not in {t["name"] for t in api.get("/tenants").json()}
    assert all(k["tenant"] != name for k in api.get("/keys").json())
    _problem(api.delete(f"/tenants/{name}"), 404)
    # The name can be used again, from nothing.
    assert api.post("/tenants", json={"name": name}).status_code == 201
    fresh = api.get("/tenants").json()
    assert next(t for t in fresh if t["name"] == name)["usage"] == {
        "queued_jobs": 0,
        "running_jobs": 0,
        "upload_bytes": 0,
        "model_dir_bytes": 0,
    }


def test_a_tenant_with_a_queued_or_running_job_is_409(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    name, key, _ = _tenant(api)
    member = bearer(key)
    model = api.post("/models", files={"file": ("m.h5", seed_files["model"])}, headers=member)
    data = api.post("/datasets", files={"file": ("d.npz", seed_files["data"])}, headers=member)
    spec = {
        "keras_model_path": model.json()["id"],
        "train": {"dataset": data.json()["id"], "max_steps": 5},
    }
    job = api.post("/convert", json=spec, headers=member).json()["id"]
    body = _problem(api.delete(f"/tenants/{name}"), 409)
    assert "queued or running" in body["detail"]
    engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.update(jobs).where(jobs.c.id == job).values(status="running"))
    _problem(api.delete(f"/tenants/{name}"), 409)
    # Nothing was removed: the key, the job and the files are all there.
    assert api.get(f"/jobs/{job}", headers=member).json()["status"] == "running"
    assert (settings.storage_root / "tenants" / name / "models").is_dir()
    with engine.begin() as conn:
        conn.execute(sqlalchemy.update(jobs).where(jobs.c.id == job).values(status="failed"))
    engine.dispose()
    assert api.delete(f"/tenants/{name}").status_code == 204


def test_the_calling_keys_own_tenant_unknown_names_and_members(api: TestClient) -> None:
    body = _problem(api.delete("/tenants/default"), 409)
    assert "calling key's own" in body["detail"]
    assert any(t["name"] == "default" for t in api.get("/tenants").json())
    # An admin key of another tenant may not delete its own tenant either.
    name, admin_key, _ = _tenant(api, role="admin")
    _problem(api.delete(f"/tenants/{name}", headers=bearer(admin_key)), 409)
    # /tenants/me is the caller's own tenant (GET), not a tenant named "me" to delete.
    assert _problem(api.delete("/tenants/me"), 405)
    for unknown in ("no-such-tenant", "UPPER", "..", "a" * 70):
        _problem(api.delete(f"/tenants/{unknown}"), 404)
    other, member_key, _ = _tenant(api)
    _problem(api.delete(f"/tenants/{name}", headers=bearer(member_key)), 403)
    _problem(api.delete(f"/tenants/{other}", headers=bearer(member_key)), 403)
    assert api.delete(f"/tenants/{name}").status_code == 204
    assert api.delete(f"/tenants/{other}").status_code == 204


def test_answers_that_carry_secrets_are_never_stored(api: TestClient) -> None:
    name, key, _ = _tenant(api)
    created = api.post(f"/tenants/{name}/keys", json={"name": "another"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    dashboard = TestClient(api.app)
    signed_in = dashboard.post("/ui/session", json={"key": key})
    assert "csrf_token" in signed_in.json()
    assert signed_in.headers["cache-control"] == "no-store"
    session = dashboard.get("/ui/session")
    assert session.status_code == 200
    assert session.headers["cache-control"] == "no-store"
    # A signed-in page has the token written into it; a signed-out one has none.
    page = dashboard.get("/ui/jobs")
    assert signed_in.json()["csrf_token"] in page.text
    assert page.headers["cache-control"] == "no-store"
    signed_out = TestClient(api.app).get("/ui/jobs")
    assert signed_out.headers["cache-control"] == "no-cache"
    assert api.delete(f"/tenants/{name}").status_code == 204


def test_the_client_and_the_cli_delete_a_tenant(tmp_path: Path, redis_server) -> None:
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(tmp_path / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
    )
    with running_api(env, tmp_path / "api.log") as (base, _):
        from k2e.client import Client
        from k2e.client.exceptions import ProblemError

        with Client(base, TEST_ADMIN_KEY) as client:
            client.create_tenant("by-client")
            client.delete_tenant("by-client")
            assert "by-client" not in {t.name for t in client.list_tenants()}
            with pytest.raises(ProblemError) as refused:
                client.delete_tenant("default")
            assert refused.value.status == 409
            client.create_tenant("by-cli")

        def k2e(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
            cli_env = {
                **env,
                "K2E_URL": base,
                "K2E_API_KEY": TEST_ADMIN_KEY,
                "K2E_CONFIG": str(tmp_path / "no-config.toml"),
                "PYTHONPATH": str(ROOT),
            }
            return subprocess.run(
                [sys.executable, "-m", "k2e.cli", *args],
                env=cli_env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
            )

        declined = k2e("admin", "tenants", "delete", "by-cli", stdin="n\n")
        assert declined.returncode != 0
        deleted = k2e("admin", "tenants", "delete", "by-cli", "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert "deleted tenant by-cli" in deleted.stdout
        listed = k2e("admin", "tenants", "list", "--json")
        assert "by-cli" not in listed.stdout
        refused = k2e("admin", "tenants", "delete", "default", "--yes")
        assert refused.returncode == 1
        assert "own" in refused.stdout + refused.stderr
