"""Quotas under concurrent requests, against a real API process on SQLite and on
PostgreSQL: exactly what a quota allows is accepted, however many requests race, and
what a refused or failed request held is given back.

The PostgreSQL runs use a schema of their own, dropped afterwards, so that nothing
another test module stores is counted or touched.
"""

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from k2e.db import utcnow
from k2e.launcher.embedded_redis import free_port
from k2e.settings import Settings
from k2e.tables import jobs
from service.main import create_app
from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY, admin_client, bearer
from tests.support.api_server import running_api
from tests.support.postgres import fresh_postgres_schema

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    """A URL of the machine's PostgreSQL whose tables live in a fresh schema."""
    with fresh_postgres_schema("k2e_quota") as url:
        yield url


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'k2e.db'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture(scope="module")
def api(
    store_url: str, tmp_path_factory: pytest.TempPathFactory, redis_server
) -> Iterator[tuple[str, Path]]:
    """A real API process on ``store_url``: its base URL and its storage root."""
    root = tmp_path_factory.mktemp("api")
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(root / "data"),
        DATABASE_URL=store_url,
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        PYTHONUNBUFFERED="1",
    )
    with running_api(env, root / "api.log") as (base, _):
        yield base, root / "data" / "storage"


def _tenant(base: str, **quotas: int) -> tuple[str, str]:
    name = f"r-{uuid.uuid4().hex[:10]}"
    created = httpx.post(f"{base}/tenants", json={"name": name, "quotas": quotas}, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = httpx.post(f"{base}/tenants/{name}/keys", json={"name": "m"}, headers=ADMIN)
    assert key.status_code == 201, key.text
    return name, key.json()["key"]


def _at_once(count: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """``count`` calls released together from as many threads."""
    start = threading.Barrier(count)

    def one(_: int) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _upload(base: str, key: str, name: str, data: bytes) -> httpx.Response:
    return httpx.post(
        f"{base}/datasets", files={"file": (name, data)}, headers=bearer(key), timeout=120
    )


def _usage(base: str, key: str) -> dict[str, int]:
    return httpx.get(f"{base}/tenants/me", headers=bearer(key)).json()["usage"]


def test_concurrent_uploads_take_exactly_what_the_storage_quota_holds(
    api: tuple[str, Path], seed_files: dict[str, bytes]
) -> None:
    base, storage = api
    data = seed_files["data"]
    # Room for three of the ten files, and half of a fourth.
    _, key = _tenant(base, max_bytes=3 * len(data) + len(data) // 2)
    answers = _at_once(10, lambda: _upload(base, key, "d.npz", data))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [413] * 7, [
        a.text for a in answers
    ]
    for refused in (a for a in answers if a.status_code == 413):
        assert refused.headers["content-type"] == PROBLEM
        assert "storage quota" in refused.json()["detail"]
    assert _usage(base, key)["upload_bytes"] == 3 * len(data)
    listed = httpx.get(f"{base}/datasets", headers=bearer(key)).json()["items"]
    assert len(listed) == 3
    assert list((storage / "tmp").iterdir()) == []


def test_concurrent_submissions_take_exactly_max_active_jobs(
    api: tuple[str, Path], seed_files: dict[str, bytes]
) -> None:
    base, _ = api
    _, key = _tenant(base, max_active_jobs=2)
    model = httpx.post(
        f"{base}/models", files={"file": ("m.h5", seed_files["model"])}, headers=bearer(key)
    )
    data = _upload(base, key, "d.npz", seed_files["data"])
    spec = {
        "keras_model_path": model.json()["id"],
        "train": {"dataset": data.json()["id"], "max_steps": 5},
    }
    answers = _at_once(
        16, lambda: httpx.post(f"{base}/convert", json=spec, headers=bearer(key), timeout=120)
    )
    assert sorted(a.status_code for a in answers) == [202] * 2 + [429] * 14, [
        a.text for a in answers
    ]
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.headers["content-type"] == PROBLEM
        assert int(refused.headers["retry-after"]) > 0
        assert "max_active_jobs" in refused.json()["detail"]
    listed = httpx.get(f"{base}/jobs", headers=bearer(key)).json()["items"]
    assert len(listed) == 2
    assert _usage(base, key)["queued_jobs"] == 2


def test_a_refused_upload_gives_its_bytes_back(
    api: tuple[str, Path], seed_files: dict[str, bytes]
) -> None:
    base, _ = api
    data = seed_files["data"]
    _, key = _tenant(base, max_bytes=len(data) + 100)
    # As large as the good file, but not an npz archive: refused by the inspection.
    broken = _upload(base, key, "broken.npz", b"\x00" * len(data))
    assert broken.status_code == 422, broken.text
    # And one whose name no reader takes: refused before it is inspected.
    unknown = _upload(base, key, "data.bin", data)
    assert unknown.status_code == 422, unknown.text
    assert _upload(base, key, "good.npz", data).status_code == 201
    assert _usage(base, key)["upload_bytes"] == len(data)


def test_an_upload_cut_off_midway_holds_nothing(
    api: tuple[str, Path], seed_files: dict[str, bytes]
) -> None:
    base, _ = api
    data = seed_files["data"]
    _, key = _tenant(base, max_bytes=len(data) + 100)
    boundary = "k2e-cut"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    length = len(head) + len(data) + len(f"\r\n--{boundary}--\r\n")
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            (
                f"POST /datasets HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
            + head
            + data[: len(data) // 2]
        )
    # The API notices the cut when it next reads; a fitting upload then gets the room.
    assert _upload(base, key, "d.npz", data).status_code == 201
    assert _usage(base, key)["upload_bytes"] == len(data)


# --- through the app: broker failure, deletes, retention, older stores --------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path, redis_server) -> Settings:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema")
    return Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        database_url=url,
        admin_key=TEST_ADMIN_KEY,
    )


def _client_tenant(client: TestClient, **quotas: Any) -> tuple[str, str]:
    name = f"c-{uuid.uuid4().hex[:10]}"
    assert client.post("/tenants", json={"name": name, "quotas": quotas}).status_code == 201
    key = client.post(f"/tenants/{name}/keys", json={"name": "m"}).json()["key"]
    return name, key


def test_a_submission_the_broker_refuses_holds_no_job_slot_and_no_bytes(
    tmp_path: Path, seed_files: dict[str, bytes]
) -> None:
    dead = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with admin_client(create_app(dead)) as client:
        _, key = _client_tenant(client, max_active_jobs=1, max_bytes=10**9)
        files = {
            "model": ("m.h5", seed_files["model"]),
            "train_data": ("d.npz", seed_files["data"]),
        }
        spec = '{"train": {"max_steps": 5}}'
        for _ in range(2):  # the second is not refused for the first one's slot
            response = client.post(
                "/convert", data={"spec": spec}, files=files, headers=bearer(key)
            )
            assert response.status_code == 503, response.text
        usage = client.get("/tenants/me", headers=bearer(key)).json()["usage"]
        assert usage["upload_bytes"] == 0
        assert usage["queued_jobs"] == 0


def test_deletes_and_retention_give_bytes_back(
    settings: Settings, seed_files: dict[str, bytes]
) -> None:
    from k2e.jobs.queueing import make_celery
    from worker.reconciler import Reconciler

    data = seed_files["data"]
    with admin_client(create_app(settings)) as client:
        name, key = _client_tenant(client, max_bytes=len(seed_files["model"]) + 2 * len(data))
        model = client.post(
            "/models", files={"file": ("m.h5", seed_files["model"])}, headers=bearer(key)
        ).json()["id"]
        first = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert client.post(
            "/datasets", files={"file": ("d.npz", data)}, headers=bearer(key)
        ).is_success
        full = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert full.status_code == 413, full.text
        # A deleted upload's bytes are free at once.
        assert client.delete(f"/datasets/{first.json()['id']}", headers=bearer(key)).is_success
        again = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert again.status_code == 201, again.text
        # An ended job's model_dir counts (as measured when it ended) until retention.
        spec = {"keras_model_path": model, "train": {"dataset": again.json()["id"], "max_steps": 5}}
        job = client.post("/convert", json=spec, headers=bearer(key)).json()["id"]
        client.post(f"/jobs/{job}/cancel", headers=bearer(key))
        assert client.delete(f"/datasets/{again.json()['id']}", headers=bearer(key)).is_success
        engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.update(jobs)
                .where(jobs.c.id == job)
                .values(disk_bytes=len(data), finished_at=utcnow() - timedelta(days=3))
            )
        full = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert full.status_code == 413, full.text
        retained = settings.model_copy(update={"retention_days": 2.0})
        assert Reconciler(retained, make_celery(retained)).apply_retention() >= 1
        freed = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert freed.status_code == 201, freed.text
        engine.dispose()
        assert not (settings.storage_root / "tenants" / name / "jobs" / job).exists()


def test_a_store_from_before_reservations_keeps_counting_its_uploads(
    tmp_path: Path, redis_server, seed_files: dict[str, bytes]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    data = seed_files["data"]
    with admin_client(create_app(settings)) as client:
        _, key = _client_tenant(client, max_bytes=len(data) + 100)
        kept = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(key))
        assert kept.status_code == 201
    # An older k2e's store: no reservation table.
    engine = sqlalchemy.create_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP TABLE k2e_upload_reservations"))
        conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))  # from before migrations
    engine.dispose()
    with admin_client(create_app(settings)) as client:
        assert client.get("/tenants/me", headers=bearer(key)).json()["usage"][
            "upload_bytes"
        ] == len(data)
        full = client.post("/datasets", files={"file": ("e.npz", data)}, headers=bearer(key))
        assert full.status_code == 413, full.text
        assert client.delete(f"/datasets/{kept.json()['id']}", headers=bearer(key)).is_success
        again = client.post("/datasets", files={"file": ("e.npz", data)}, headers=bearer(key))
        assert again.status_code == 201, again.text
