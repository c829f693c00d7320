"""The API on bucket storage while the bucket does not answer: a clear 503 with
Retry-After, never a 500, and an upload refused then is not counted against its tenant."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client, bearer, new_tenant
from tests.support.s3_server import CREDENTIALS, S3Server


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path_factory.mktemp("s3-outage")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def client(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, server: S3Server
) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("k2e-outage"),
            redis_url=redis_server.url,
            storage_url=f"s3://{server.bucket}/outage",
            s3_endpoint_url=server.endpoint,
        )
        app = create_app(settings)
        with admin_client(app, raise_server_exceptions=False) as test_client:
            yield test_client


def _assert_storage_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"].isdigit()
    assert response.json()["title"] == "Storage unavailable"
    assert "bucket" in response.json()["detail"]


def test_uploads_while_the_bucket_is_down_are_503_and_cost_nothing(
    client: TestClient, server: S3Server, seed_files: dict[str, bytes]
) -> None:
    member = new_tenant(client, f"o-{uuid.uuid4().hex[:10]}")
    data = seed_files["data"]
    kept = client.post("/datasets", files={"file": ("d.npz", data)}, headers=bearer(member))
    assert kept.status_code == 201, kept.text

    server.kill()
    _assert_storage_503(
        client.post("/datasets", files={"file": ("e.npz", data)}, headers=bearer(member))
    )
    _assert_storage_503(
        client.post(
            "/models", files={"file": ("m.h5", seed_files["model"])}, headers=bearer(member)
        )
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text

    server.start()
    usage = client.get("/tenants/me", headers=bearer(member)).json()["usage"]
    assert usage["upload_bytes"] == len(data)  # the refused uploads left no reservation
    listed = client.get("/datasets", headers=bearer(member)).json()["items"]
    assert [item["id"] for item in listed] == [kept.json()["id"]]
    again = client.post("/datasets", files={"file": ("e.npz", data)}, headers=bearer(member))
    assert again.status_code == 201, again.text
