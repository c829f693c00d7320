"""Uploads on bucket storage go on into the bucket while they arrive (a multipart upload
at the upload's final key), and only an accepted upload completes it: a file refused by
inspection, or a client gone mid-body, leaves no object and no multipart upload."""

import hashlib
import io
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient

import service.upload_intake as intake
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer, new_tenant
from tests.support.s3_server import CREDENTIALS, S3Server, boto_client

PREFIX = "stream"
PART = 5 * 1024 * 1024  # S3's smallest part: a few parts from a small upload


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path_factory.mktemp("s3-stream")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, server: S3Server
) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("k2e-stream"),
            redis_url=redis_server.url,
            storage_url=f"s3://{server.bucket}/{PREFIX}",
            s3_endpoint_url=server.endpoint,
            s3_part_bytes=PART,
        )
        with admin_client(create_app(settings)) as test_client:
            yield test_client


def _multipart_keys(s3: Any, bucket: str) -> list[str]:
    answer = s3.list_multipart_uploads(Bucket=bucket, Prefix=f"{PREFIX}/")
    return [u["Key"][len(PREFIX) + 1 :] for u in answer.get("Uploads") or []]


def _objects(s3: Any, bucket: str, under: str) -> list[str]:
    answer = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/{under}")
    return [o["Key"][len(PREFIX) + 1 :] for o in answer.get("Contents") or []]


def _await_multipart(s3: Any, bucket: str) -> list[str]:
    """The multipart uploads in progress, once there is one (its first part is sent on a
    background thread); empty if none appears within a generous wait."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if keys := _multipart_keys(s3, bucket):
            return keys
        time.sleep(0.05)
    return []


def _npz(examples: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(7)
    np.savez(buffer, x=rng.standard_normal((examples, 1024), dtype=np.float32))
    return buffer.getvalue()


def _watching_inspection(
    monkeypatch: pytest.MonkeyPatch, s3: Any, bucket: str, under: str
) -> dict[str, list[str]]:
    """Record, when the dataset's inspection starts, the multipart uploads in progress and
    the objects under ``under`` (then inspect as usual)."""
    seen: dict[str, list[str]] = {}
    inspect: Callable[..., Any] = intake.inspect_dataset_file

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen["multipart"] = _await_multipart(s3, bucket)
        seen["objects"] = _objects(s3, bucket, under)
        return inspect(*args, **kwargs)

    monkeypatch.setattr(intake, "inspect_dataset_file", watched)
    return seen


def test_an_accepted_upload_is_sent_in_parts_and_appears_whole(
    client: TestClient, server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3: Any = boto_client(server)
    data = _npz(3 * PART // 4096 + 100)  # four parts, the last a short one
    assert len(data) > 3 * PART
    seen = _watching_inspection(monkeypatch, s3, server.bucket, "tenants/default/datasets/")

    kept = client.post("/datasets", files={"file": ("big.npz", data)})
    assert kept.status_code == 201, kept.text
    info = kept.json()
    key = f"tenants/default/datasets/{info['id']}/data.npz"
    # While the file was inspected it was a multipart upload at its key, not an object.
    assert seen["multipart"] == [key]
    assert seen["objects"] == []

    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["size"] == len(data)
    stored = s3.get_object(Bucket=server.bucket, Key=f"{PREFIX}/{key}")["Body"].read()
    assert stored == data
    assert _multipart_keys(s3, server.bucket) == []
    assert client.delete(f"/datasets/{info['id']}").status_code == 204


def test_an_upload_refused_by_inspection_leaves_nothing_in_the_bucket(
    client: TestClient, server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3: Any = boto_client(server)
    tenant = f"s-{uuid.uuid4().hex[:10]}"
    member = bearer(new_tenant(client, tenant))
    under = f"tenants/{tenant}/"
    seen = _watching_inspection(monkeypatch, s3, server.bucket, under)
    hostile = b"PK\x03\x04" + bytes(2 * PART + 12345)  # a zip's magic, then no zip

    refused = client.post("/datasets", files={"file": ("x.npz", hostile)}, headers=member)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert len(seen["multipart"]) == 1
    assert seen["multipart"][0].startswith(f"{under}datasets/")

    assert _multipart_keys(s3, server.bucket) == []
    assert _objects(s3, server.bucket, under) == []
    usage = client.get("/tenants/me", headers=member).json()["usage"]
    assert usage["upload_bytes"] == 0
    assert client.get("/datasets", headers=member).json()["items"] == []


def _multipart_body(boundary: bytes, filename: str, content: bytes) -> bytes:
    head = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    return head + content + b"\r\n--" + boundary + b"--\r\n"


def test_a_client_gone_mid_upload_aborts_the_multipart_upload(
    client: TestClient, server: S3Server
) -> None:
    s3: Any = boto_client(server)
    boundary = b"k2e-stream-boundary"
    body = _multipart_body(boundary, "gone.npz", _npz(4 * PART // 4096))
    sent_before_leaving = 3 * PART + 100
    seen: dict[str, list[str]] = {}
    chunks = [body[i : i + 1024 * 1024] for i in range(0, sent_before_leaving, 1024 * 1024)]

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": True}
        if "multipart" not in seen:
            seen["multipart"] = await anyio.to_thread.run_sync(_await_multipart, s3, server.bucket)
        return {"type": "http.disconnect"}

    answers: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/datasets",
        "raw_path": b"/datasets",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {TEST_ADMIN_KEY}".encode()),
            (b"content-type", b"multipart/form-data; boundary=" + boundary),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)

    assert seen["multipart"], "the upload was not under way in the bucket when the client left"
    assert _multipart_keys(s3, server.bucket) == []
    assert _objects(s3, server.bucket, "tenants/default/datasets/") == []
