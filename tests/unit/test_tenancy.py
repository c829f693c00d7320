"""Identity and tenancy through the real API (no worker): keys, bootstrap, revocation,
quotas, named model_dir locks, per-tenant idempotency keys, deletion, retention.

The store parts run on SQLite and on the machine's PostgreSQL.
"""

import os
import stat
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from k2e.db import utcnow
from k2e.jobs.leases import JobLeases
from k2e.jobs.queueing import make_celery
from k2e.settings import Settings
from k2e.tables import jobs
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer, new_tenant
from tests.support.postgres import postgres_url

PROBLEM = "application/problem+json"


def _store_url(kind: str, tmp_path: Path) -> str | None:
    if kind == "sqlite":
        return None
    url = postgres_url()
    try:
        sqlalchemy.create_engine(url).connect().close()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, redis_server) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        database_url=_store_url(request.param, tmp_path),
        admin_key=TEST_ADMIN_KEY,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as client:
        yield client


def _name(prefix: str) -> str:
    """Tenant names are unique per test: the PostgreSQL store is shared by the suite."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return response.json()


def _upload(api: TestClient, key: str, path: str, name: str, data: bytes) -> str:
    response = api.post(path, files={"file": (name, data)}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _uploads(api: TestClient, key: str, seed_files: dict[str, bytes]) -> tuple[str, str]:
    model = _upload(api, key, "/models", "seed.h5", seed_files["model"])
    data = _upload(api, key, "/datasets", "train.npz", seed_files["data"])
    return model, data


def _spec(model: str, data: str, **extra) -> dict:
    spec = {"keras_model_path": model, "train": {"dataset": data, "max_steps": 5}}
    spec.update(extra)
    return spec


# --- keys -------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401_with_www_authenticate(api: TestClient) -> None:
    for headers in ({"Authorization": ""}, bearer("k2e_" + "x" * 40), {"Authorization": "Basic x"}):
        response = api.get("/jobs", headers=headers)
        body = _problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in body["detail"]
    assert api.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert api.get("/readyz", headers={"Authorization": ""}).status_code == 200


def test_a_member_cannot_use_admin_routes(api: TestClient) -> None:
    member = new_tenant(api, _name("m"))
    for method, path in (("GET", "/tenants"), ("GET", "/keys"), ("POST", "/tenants")):
        response = api.request(method, path, headers=bearer(member), json={"name": "x"})
        assert "admin" in _problem(response, 403)["detail"]
    assert api.get("/tenants/me", headers=bearer(member)).status_code == 200


def test_keys_are_stored_as_hashes_and_listed_without_secrets(
    api: TestClient, settings: Settings
) -> None:
    name = _name("h")
    member = new_tenant(api, name)
    assert member.startswith("k2e_")
    assert len(member) >= 40
    listed = [k for k in api.get("/keys").json() if k["tenant"] == name]
    assert len(listed) == 1
    assert "key" not in listed[0]
    assert member not in api.get("/keys").text
    engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
    with engine.connect() as conn:
        stored = conn.execute(sqlalchemy.text("SELECT key_hash FROM k2e_api_keys")).scalars()
        assert member not in list(stored)


def test_a_revoked_key_stops_working_at_once_here_and_within_the_cache_time_elsewhere(
    settings: Settings,
) -> None:
    other_settings = settings.model_copy(update={"key_cache_s": 0.5})
    with (
        admin_client(create_app(settings)) as here,
        admin_client(create_app(other_settings)) as there,
    ):
        name = _name("r")
        member = new_tenant(here, name)
        assert there.get("/jobs", headers=bearer(member)).status_code == 200  # now cached
        key_id = next(k["id"] for k in here.get("/keys").json() if k["tenant"] == name)
        [key] = [k for k in here.get("/keys").json() if k["id"] == key_id]
        assert key["last_used_at"] is not None
        assert here.delete(f"/keys/{key_id}").status_code == 204
        _problem(here.get("/jobs", headers=bearer(member)), 401)
        time.sleep(0.6)
        _problem(there.get("/jobs", headers=bearer(member)), 401)
        revoked = [k for k in here.get("/keys").json() if k["id"] == key_id]
        assert revoked[0]["revoked_at"] is not None


def test_the_first_start_creates_an_admin_key_once(
    tmp_path: Path, redis_server, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "d", redis_url=redis_server.url, admin_key=None)
    create_app(settings)
    key_file = settings.admin_key_file
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key.startswith("k2e_")
    assert capsys.readouterr().out.count(key) == 1
    with TestClient(create_app(settings), headers=bearer(key)) as client:
        assert client.get("/tenants").status_code == 200
        assert client.get("/tenants/me").json()["name"] == "default"
    assert key_file.read_text().strip() == key  # the second start made no new key
    assert key not in capsys.readouterr().out


def test_k2e_admin_key_provisions_the_admin_key(tmp_path: Path, redis_server) -> None:
    given = "k2e_operator-chosen-key-0123456789"
    settings = Settings(data_dir=tmp_path / "d", redis_url=redis_server.url, admin_key=given)
    with TestClient(create_app(settings), headers=bearer(given)) as client:
        assert client.get("/keys").status_code == 200
    assert not settings.admin_key_file.exists()  # the operator holds it already


# --- tenants see their own ----------------------------------------------------


def test_lists_show_the_callers_own_and_admins_filter_across(
    api: TestClient, seed_files: dict[str, bytes]
) -> None:
    a_name, b_name = _name("a"), _name("b")
    a, b = new_tenant(api, a_name), new_tenant(api, b_name)
    model_a, data_a = _uploads(api, a, seed_files)
    job_a = api.post("/convert", json=_spec(model_a, data_a), headers=bearer(a)).json()["id"]
    for path in ("/jobs", "/models", "/datasets"):
        assert api.get(path, headers=bearer(b)).json()["items"] == []
        mine = [item["id"] for item in api.get(path, headers=bearer(a)).json()["items"]]
        assert mine == [{"/jobs": job_a, "/models": model_a, "/datasets": data_a}[path]]
        _problem(api.get(path, params={"tenant": a_name}, headers=bearer(b)), 403)
        filtered = api.get(path, params={"tenant": a_name}).json()["items"]
        assert [item["id"] for item in filtered] == mine
        everyone = [item["id"] for item in api.get(path, params={"tenant": "*"}).json()["items"]]
        assert set(mine) <= set(everyone)
    # The spec of another tenant's upload is refused as unknown.
    response = api.post("/convert", json=_spec(model_a, data_a), headers=bearer(b))
    body = _problem(response, 422)
    assert body["errors"][0]["loc"] == ["keras_model_path"]
    assert "no model" in body["detail"]


def test_member_answers_carry_no_server_paths(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    member = new_tenant(api, _name("p"))
    model, data = _uploads(api, member, seed_files)
    job = api.post("/convert", json=_spec(model, data), headers=bearer(member)).json()
    assert job["model_dir"] == f"jobs/{job['id']}"
    root = str(settings.data_dir.resolve())
    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/logs", "/jobs", f"/models/{model}"):
        assert root not in api.get(path, headers=bearer(member)).text


# --- quotas -------------------------------------------------------------------


def test_the_job_past_the_quota_is_429_and_nothing_is_kept(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    member = new_tenant(api, _name("q"), max_active_jobs=2)
    model, data = _uploads(api, member, seed_files)
    for _ in range(2):
        assert api.post("/convert", json=_spec(model, data), headers=bearer(member)).is_success
    response = api.post("/convert", json=_spec(model, data), headers=bearer(member))
    body = _problem(response, 429)
    assert int(response.headers["retry-after"]) == settings.quota_retry_after_s
    assert "max_active_jobs" in body["detail"]
    assert len(api.get("/jobs", headers=bearer(member)).json()["items"]) == 2
    # A one-shot multipart submission past the quota keeps none of its files either.
    files = {"model": ("m.h5", seed_files["model"]), "train_data": ("d.npz", seed_files["data"])}
    spec = '{"train": {"max_steps": 5}}'
    response = api.post("/convert", data={"spec": spec}, files=files, headers=bearer(member))
    _problem(response, 429)
    assert len(api.get("/models", headers=bearer(member)).json()["items"]) == 1
    usage = api.get("/tenants/me", headers=bearer(member)).json()["usage"]
    assert usage["queued_jobs"] == 2


def test_an_upload_past_the_storage_quota_is_413_and_leaves_no_file(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    size = len(seed_files["data"])
    member = new_tenant(api, _name("s"), max_bytes=size + 100)
    _upload(api, member, "/datasets", "one.npz", seed_files["data"])
    response = api.post(
        "/datasets", files={"file": ("two.npz", seed_files["data"])}, headers=bearer(member)
    )
    assert "quota" in _problem(response, 413)["detail"]
    assert len(api.get("/datasets", headers=bearer(member)).json()["items"]) == 1
    assert list((settings.storage_root / "tmp").iterdir()) == []
    usage = api.get("/tenants/me", headers=bearer(member)).json()["usage"]
    assert usage["upload_bytes"] == size


def test_max_steps_ceiling_and_run_time_cap(api: TestClient, seed_files: dict[str, bytes]) -> None:
    member = new_tenant(api, _name("c"), max_steps=100, max_run_s=60)
    model, data = _uploads(api, member, seed_files)
    spec = _spec(model, data)
    spec["train"]["max_steps"] = 101
    body = _problem(api.post("/convert", json=spec, headers=bearer(member)), 422)
    assert body["errors"][0]["loc"] == ["train", "max_steps"]
    assert "100" in body["detail"]
    spec["train"]["max_steps"] = 100
    assert api.post("/convert", json=spec, headers=bearer(member)).json()["timeout_s"] == 60
    longer = api.post("/convert", json={**spec, "timeout_s": 600}, headers=bearer(member))
    assert longer.json()["timeout_s"] == 60
    shorter = api.post("/convert", json={**spec, "timeout_s": 5}, headers=bearer(member))
    assert shorter.json()["timeout_s"] == 5


# --- named model_dirs and idempotency keys --------------------------------------


def test_a_named_model_dir_is_held_by_one_job_at_a_time_per_tenant(
    api: TestClient, seed_files: dict[str, bytes]
) -> None:
    a, b = new_tenant(api, _name("a")), new_tenant(api, _name("b"))
    model_a, data_a = _uploads(api, a, seed_files)
    model_b, data_b = _uploads(api, b, seed_files)
    first = api.post("/convert", json=_spec(model_a, data_a, model_dir="shared"), headers=bearer(a))
    assert first.status_code == 202
    holder = first.json()["id"]
    second = api.post(
        "/convert", json=_spec(model_a, data_a, model_dir="shared"), headers=bearer(a)
    )
    assert holder in _problem(second, 409)["detail"]
    # Another tenant's "shared" is another folder.
    other = api.post("/convert", json=_spec(model_b, data_b, model_dir="shared"), headers=bearer(b))
    assert other.status_code == 202
    assert api.post(f"/jobs/{holder}/cancel", headers=bearer(a)).json()["status"] == "cancelled"
    again = api.post("/convert", json=_spec(model_a, data_a, model_dir="shared"), headers=bearer(a))
    assert again.status_code == 202, again.text


def test_idempotency_keys_are_per_tenant(api: TestClient, seed_files: dict[str, bytes]) -> None:
    a, b = new_tenant(api, _name("a")), new_tenant(api, _name("b"))
    model_a, data_a = _uploads(api, a, seed_files)
    model_b, data_b = _uploads(api, b, seed_files)
    key = {"Idempotency-Key": "same-key"}
    job_a = api.post("/convert", json=_spec(model_a, data_a), headers={**bearer(a), **key})
    job_b = api.post("/convert", json=_spec(model_b, data_b), headers={**bearer(b), **key})
    assert job_a.status_code == job_b.status_code == 202
    assert job_a.json()["id"] != job_b.json()["id"]
    # A replay in A answers A's job; another body under the key is a 409 that names no job of B.
    replay = api.post("/convert", json=_spec(model_a, data_a), headers={**bearer(a), **key})
    assert replay.json()["id"] == job_a.json()["id"]
    clash = api.post("/convert", json=_spec(model_b, data_b), headers={**bearer(a), **key})
    assert job_b.json()["id"] not in _problem(clash, 409)["detail"]


# --- deletion and retention ---------------------------------------------------


def test_uploads_in_use_cannot_be_deleted_until_the_job_ends(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    name = _name("d")
    member = new_tenant(api, name)
    model, data = _uploads(api, member, seed_files)
    _r = api.post("/convert", json=_spec(model, data), headers=bearer(member))
    assert _r.status_code == 202, _r.text
    job = _r.json()["id"]
    for path in (f"/models/{model}", f"/datasets/{data}"):
        assert job in _problem(api.delete(path, headers=bearer(member)), 409)["detail"]
    _problem(api.delete(f"/jobs/{job}", headers=bearer(member)), 409)
    api.post(f"/jobs/{job}/cancel", headers=bearer(member))
    tenant_root = settings.storage_root / "tenants" / name
    assert (tenant_root / "models" / model).is_dir()
    for path in (f"/models/{model}", f"/datasets/{data}", f"/jobs/{job}"):
        assert api.delete(path, headers=bearer(member)).status_code == 204
        _problem(api.get(path, headers=bearer(member)), 404)
    assert not (tenant_root / "models" / model).exists()
    assert not (tenant_root / "datasets" / data).exists()
    usage = api.get("/tenants/me", headers=bearer(member)).json()["usage"]
    assert usage["upload_bytes"] == 0


def test_a_deleted_finished_job_frees_its_files(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    name = _name("f")
    member = new_tenant(api, name)
    model, data = _uploads(api, member, seed_files)
    _r = api.post("/convert", json=_spec(model, data), headers=bearer(member))
    assert _r.status_code == 202, _r.text
    job = _r.json()["id"]
    api.post(f"/jobs/{job}/cancel", headers=bearer(member))
    model_dir = settings.storage_root / "tenants" / name / "jobs" / job
    (model_dir / "export" / "1").mkdir(parents=True)
    (model_dir / "export" / "1" / "saved_model.pb").write_bytes(b"x" * 100)
    assert api.delete(f"/jobs/{job}", headers=bearer(member)).status_code == 204
    assert not model_dir.exists()


def test_retention_removes_the_files_of_jobs_finished_long_ago(
    api: TestClient, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    from worker.reconciler import Reconciler

    name = _name("t")
    member = new_tenant(api, name)
    model, data = _uploads(api, member, seed_files)
    old, recent = (
        api.post("/convert", json=_spec(model, data), headers=bearer(member)).json()["id"]
        for _ in range(2)
    )
    store = JobLeases(settings.sqlalchemy_url)
    for job_id in (old, recent):
        api.post(f"/jobs/{job_id}/cancel", headers=bearer(member))
        folder = settings.storage_root / "tenants" / name / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.ckpt-1.index").write_bytes(b"x")
    with store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(jobs)
            .where(jobs.c.id == old)
            .values(finished_at=utcnow() - timedelta(days=3))
        )
    retained = settings.model_copy(update={"retention_days": 2.0})
    reconciler = Reconciler(retained, make_celery(retained))
    assert reconciler.apply_retention() >= 1
    assert not (settings.storage_root / "tenants" / name / "jobs" / old).exists()
    assert (settings.storage_root / "tenants" / name / "jobs" / recent).is_dir()
    log = api.get(f"/jobs/{old}/logs", headers=bearer(member)).json()["items"]
    assert "retention" in log[-1]["message"]


def test_upload_files_left_by_a_crash_are_removed_on_start(settings: Settings) -> None:
    tmp = settings.storage_root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    stale, fresh = tmp / "stale.npz", tmp / "fresh.npz"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    hour_ago = time.time() - 7200
    os.utime(stale, (hour_ago, hour_ago))
    create_app(settings)
    assert not stale.exists()
    assert fresh.exists()  # possibly another API process's upload in progress


def test_usage_counts_uploads(api: TestClient, seed_files: dict[str, bytes]) -> None:
    member = new_tenant(api, _name("u"))
    before = api.get("/tenants/me", headers=bearer(member)).json()
    assert before["usage"] == {
        "queued_jobs": 0,
        "running_jobs": 0,
        "upload_bytes": 0,
        "model_dir_bytes": 0,
    }
    _uploads(api, member, seed_files)
    after = api.get("/tenants/me", headers=bearer(member)).json()["usage"]
    assert after["upload_bytes"] == len(seed_files["model"]) + len(seed_files["data"])
