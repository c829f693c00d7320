"""The API on bucket storage (K2E_STORAGE_URL=s3://..., a real SeaweedFS): uploads go
into the bucket and nowhere under the local storage root, listing, spec checks, quotas,
deletion and downloads read the bucket, and ``?redirect=true`` hands out a presigned URL
of the same archive bytes."""

import io
import os
import struct
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from k2e.blobstore import blob_store
from k2e.formats.tfrecord import masked_crc
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.jobs.workers import WorkerEntry, WorkerRegistry
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.storage import Storage
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer, new_tenant
from tests.support.s3_server import CREDENTIALS, S3Server, boto_client

PREFIX = "api"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, server: S3Server
) -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        yield Settings(
            data_dir=tmp_path_factory.mktemp("k2e-bucket"),
            redis_url=redis_server.url,
            storage_url=f"s3://{server.bucket}/{PREFIX}",
            s3_endpoint_url=server.endpoint,
        )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def storage(settings: Settings) -> Storage:
    return Storage(settings.storage_root, blobs=blob_store(settings))


def _bucket(server: S3Server, under: str) -> dict[str, int]:
    """The bucket's objects under ``PREFIX/under``, by key below the prefix, with sizes."""
    s3: Any = boto_client(server)
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=f"{PREFIX}/{under}"
    ):
        for entry in page.get("Contents") or []:
            found[entry["Key"][len(PREFIX) + 1 :]] = entry["Size"]
    return found


def _local_files(settings: Settings) -> list[Path]:
    return [p for p in settings.storage_root.rglob("*") if p.is_file()]


def test_readyz_checks_the_bucket(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["storage"] == "ok"


def test_readyz_is_503_when_the_bucket_does_not_answer(
    tmp_path: Path, redis_server: Any, settings: Settings
) -> None:
    from tests.support.s3_server import free_port_pair

    down = Settings(
        data_dir=tmp_path,
        redis_url=redis_server.url,
        storage_url=f"s3://k2e/{PREFIX}",
        s3_endpoint_url=f"http://127.0.0.1:{free_port_pair()}",
    )
    with admin_client(create_app(down)) as down_client:
        ready = down_client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert "storage:" in ready.json()["detail"]


def test_uploads_go_into_the_bucket_and_are_read_from_it(
    client: TestClient, server: S3Server, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    model = client.post("/models", files={"file": ("seed.h5", seed_files["model"])})
    assert model.status_code == 201, model.text
    data = client.post("/datasets", files={"file": ("seed.npz", seed_files["data"])})
    assert data.status_code == 201, data.text
    model_id, data_id = model.json()["id"], data.json()["id"]
    folder = f"tenants/default/models/{model_id}/"
    in_bucket = _bucket(server, folder)
    assert set(in_bucket) == {f"{folder}model.h5", f"{folder}summary.json", f"{folder}info.json"}
    assert in_bucket[f"{folder}model.h5"] == len(seed_files["model"])
    dataset_folder = f"tenants/default/datasets/{data_id}/"
    assert set(_bucket(server, dataset_folder)) == {
        f"{dataset_folder}data.npz",
        f"{dataset_folder}info.json",
    }
    assert _local_files(settings) == []

    assert [m["id"] for m in client.get("/models").json()["items"]] == [model_id]
    assert client.get(f"/models/{model_id}").json()["sha256"] == model.json()["sha256"]

    # The spec checks read the upload's info and inspection from the bucket.
    spec = {"keras_model_path": model_id, "train": {"dataset": data_id, "max_steps": 5}}
    job = client.post("/convert", json=spec)
    assert job.status_code in (201, 202), job.text
    job_id = job.json()["id"]
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 202

    # A path into the upload's folder is found in the bucket too.
    by_path = {**spec, "keras_model_path": f"models/{model_id}/model.h5"}
    assert client.post("/convert", json=by_path).status_code in (201, 202)
    missing = {**spec, "keras_model_path": "models/nothing/model.h5"}
    body = client.post("/convert", json=missing).json()
    assert body["errors"][0]["loc"] == ["keras_model_path"]

    for job_item in client.get("/jobs").json()["items"]:
        client.post(f"/jobs/{job_item['id']}/cancel")


def test_deleting_an_upload_removes_its_objects(
    client: TestClient, server: S3Server, seed_files: dict[str, bytes]
) -> None:
    data = client.post("/datasets", files={"file": ("d.npz", seed_files["data"])})
    data_id = data.json()["id"]
    folder = f"tenants/default/datasets/{data_id}/"
    assert _bucket(server, folder)
    assert client.delete(f"/datasets/{data_id}").status_code == 204
    assert _bucket(server, folder) == {}
    assert client.get(f"/datasets/{data_id}").status_code == 404


def test_the_quota_counts_the_bytes_in_the_bucket(
    client: TestClient, server: S3Server, seed_files: dict[str, bytes]
) -> None:
    size = len(seed_files["data"])
    key = new_tenant(client, "bucketq", max_bytes=size + size // 2)
    member = bearer(key)
    first = client.post("/datasets", files={"file": ("d.npz", seed_files["data"])}, headers=member)
    assert first.status_code == 201, first.text
    stored = _bucket(server, "tenants/bucketq/datasets/")
    assert sum(v for k, v in stored.items() if k.endswith(".npz")) == size
    usage = client.get("/tenants/me", headers=member).json()["usage"]
    assert usage["upload_bytes"] == size
    second = client.post("/datasets", files={"file": ("d.npz", seed_files["data"])}, headers=member)
    assert second.status_code == 413, second.text


def _job_in_bucket(settings: Settings, storage: Storage, tenant: str = "default") -> str:
    """A succeeded job whose model_dir (a checkpoint and an export) is in the bucket, its
    bytes recorded as the bucket holds them."""
    job_id = str(uuid.uuid4())
    view = storage.for_tenant(tenant)
    model_dir = view.job_model_dir(job_id)
    leases = JobLeases(settings.sqlalchemy_url)
    leases.create(NewJob(job_id, tenant, {"note": "bucket"}, "cpu", view.relative(model_dir), 1))
    files = {
        "model.ckpt-7.data-00000-of-00001": os.urandom(3 * 1024 * 1024 + 5),
        "model.ckpt-7.index": os.urandom(512),
        "model.ckpt-70.index": os.urandom(10),
        "export/1700000000/variables/variables.index": os.urandom(77),
        "export/1700000000/saved_model.pb": os.urandom(1000),
        # A newer version without its saved_model.pb is not complete yet.
        "export/1800000000/variables/variables.index": os.urandom(5),
    }
    for name, content in files.items():
        storage.blobs.put_bytes(storage.key(model_dir / name), content)
    assert leases.start(job_id, "w", 30) is not None
    bytes_ = view.stored_bytes(model_dir)
    assert bytes_ == sum(len(c) for c in files.values())
    leases.finish(job_id, JobStatus.succeeded, "w", disk_bytes=bytes_)
    return job_id


def _members(archive: bytes, mode: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode=mode) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_downloads_stream_from_the_bucket(
    client: TestClient, settings: Settings, storage: Storage
) -> None:
    job_id = _job_in_bucket(settings, storage)
    model_dir = storage.for_tenant("default").job_model_dir(job_id)
    assert client.get(f"/jobs/{job_id}/checkpoints").json() == [
        {"step": 7, "name": "model.ckpt-7"},
        {"step": 70, "name": "model.ckpt-70"},
    ]
    tar = client.get(f"/jobs/{job_id}/checkpoints/7", params={"format": "tar"})
    assert tar.status_code == 200, tar.text
    assert tar.headers["content-length"] == str(len(tar.content))
    members = _members(tar.content, "r:")
    assert sorted(members) == ["model.ckpt-7.data-00000-of-00001", "model.ckpt-7.index"]
    for name, content in members.items():
        assert content == storage.read_bytes(model_dir / name)
    gz = client.get(f"/jobs/{job_id}/checkpoints/7")
    assert gz.headers["content-type"] == "application/gzip"
    assert _members(gz.content, "r:gz") == members

    saved = client.get(f"/jobs/{job_id}/savedmodel")
    assert saved.status_code == 200, saved.text
    assert (
        'filename="' + f"{job_id}-savedmodel-1700000000.tar.gz"
        in saved.headers["content-disposition"]
    )
    assert _members(saved.content, "r:gz") == {
        "1700000000/saved_model.pb": storage.read_bytes(
            model_dir / "export/1700000000/saved_model.pb"
        ),
        "1700000000/variables/variables.index": storage.read_bytes(
            model_dir / "export/1700000000/variables/variables.index"
        ),
    }
    assert client.get(f"/jobs/{job_id}/checkpoints/8").status_code == 404


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("savedmodel", {}),
        ("savedmodel", {"format": "tar"}),
        ("checkpoints/7", {}),
        ("checkpoints/7", {"format": "tar"}),
    ],
)
def test_redirect_gives_a_presigned_url_of_the_same_bytes(
    client: TestClient, settings: Settings, storage: Storage, route: str, params: dict
) -> None:
    job_id = _job_in_bucket(settings, storage)
    streamed = client.get(f"/jobs/{job_id}/{route}", params=params)
    assert streamed.status_code == 200
    for _ in range(2):  # built once, then reused
        moved = client.get(
            f"/jobs/{job_id}/{route}",
            params={**params, "redirect": "true"},
            follow_redirects=False,
        )
        assert moved.status_code == 307, moved.text
        fetched = httpx.get(moved.headers["location"])  # no k2e key: the URL is signed
        assert fetched.status_code == 200
        assert fetched.content == streamed.content


def test_a_built_archive_counts_in_the_tenants_bytes(
    client: TestClient, server: S3Server, settings: Settings, storage: Storage
) -> None:
    key = new_tenant(client, "archives")
    member = bearer(key)
    job_id = _job_in_bucket(settings, storage, tenant="archives")

    def used() -> int:
        return int(client.get("/tenants/me", headers=member).json()["usage"]["model_dir_bytes"])

    def in_bucket() -> int:
        return sum(_bucket(server, f"tenants/archives/jobs/{job_id}/").values())

    assert used() == in_bucket()
    for _ in range(2):
        moved = client.get(
            f"/jobs/{job_id}/savedmodel",
            params={"redirect": "true"},
            headers=member,
            follow_redirects=False,
        )
        assert moved.status_code == 307
        assert used() == in_bucket()


def test_deleting_a_job_removes_its_objects(
    client: TestClient, server: S3Server, settings: Settings, storage: Storage
) -> None:
    job_id = _job_in_bucket(settings, storage)
    other = _job_in_bucket(settings, storage)
    client.get(f"/jobs/{job_id}/savedmodel", params={"redirect": "true"}, follow_redirects=False)
    assert _bucket(server, f"tenants/default/jobs/{job_id}/")
    assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert _bucket(server, f"tenants/default/jobs/{job_id}/") == {}
    assert _bucket(server, f"tenants/default/jobs/{other}/")
    assert client.get(f"/jobs/{job_id}/savedmodel").status_code == 404


def test_deleting_a_tenant_removes_its_objects(
    client: TestClient,
    server: S3Server,
    settings: Settings,
    storage: Storage,
    seed_files: dict[str, bytes],
) -> None:
    key = new_tenant(client, "gone")
    upload = client.post(
        "/datasets", files={"file": ("d.npz", seed_files["data"])}, headers=bearer(key)
    )
    assert upload.status_code == 201
    _job_in_bucket(settings, storage, tenant="gone")
    assert len(_bucket(server, "tenants/gone/")) > 2
    assert client.delete("/tenants/gone", headers=ADMIN).status_code == 204
    assert _bucket(server, "tenants/gone/") == {}
    assert _bucket(server, "tenants/default/")


def _event(step: int, tag: str, value: float) -> bytes:
    """One TFRecord-framed Event holding a scalar summary (event.proto, summary.proto)."""
    name = tag.encode()
    summary_value = b"\x0a" + bytes([len(name)]) + name + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + bytes([len(summary_value)]) + summary_value
    event = (
        b"\x09"
        + struct.pack("<d", 1700000000.0 + step)
        + b"\x10"
        + bytes([step])
        + b"\x2a"
        + bytes([len(summary)])
        + summary
    )
    length = struct.pack("<Q", len(event))
    return (
        length
        + struct.pack("<I", masked_crc(length))
        + event
        + struct.pack("<I", masked_crc(event))
    )


def test_metrics_read_the_event_files_in_the_bucket(
    client: TestClient, settings: Settings, storage: Storage
) -> None:
    job_id = _job_in_bucket(settings, storage)
    model_dir = storage.for_tenant("default").job_model_dir(job_id)
    train = _event(1, "loss", 0.5) + _event(2, "loss", 0.25)
    storage.blobs.put_bytes(storage.key(model_dir / "events.out.tfevents.1.host"), train)
    storage.blobs.put_bytes(
        storage.key(model_dir / "eval" / "events.out.tfevents.2.host"), _event(2, "loss", 0.75)
    )
    runs = client.get(f"/jobs/{job_id}/metrics").json()["runs"]
    assert [p["value"] for p in runs["train"]["loss"]] == [0.5, 0.25]
    assert [p["step"] for p in runs["eval"]["loss"]] == [2]
    # The fetched copies are gone again.
    assert _local_files(settings) == []


def test_files_sent_with_the_submission_go_into_the_bucket(
    client: TestClient, server: S3Server, settings: Settings, seed_files: dict[str, bytes]
) -> None:
    spec = '{"train": {"max_steps": 5}}'
    job = client.post(
        "/convert",
        data={"spec": spec},
        files={
            "model": ("seed.h5", seed_files["model"]),
            "train_data": ("seed.npz", seed_files["data"]),
        },
    )
    assert job.status_code in (201, 202), job.text
    model_id = job.json()["spec"]["keras_model_path"]
    assert f"tenants/default/models/{model_id}/info.json" in _bucket(server, "tenants/default/")
    assert _local_files(settings) == []
    client.post(f"/jobs/{job.json()['id']}/cancel")


def test_a_cluster_and_its_evaluator_are_accepted_on_a_bucket(
    client: TestClient, seed_files: dict[str, bytes]
) -> None:
    """Every member of a cluster reads the bucket (worker/cluster_member.py)."""
    engine = client.app.state.backend.store.engine  # type: ignore[attr-defined]
    WorkerRegistry(engine).register(WorkerEntry("test-host:1", "test-host", ("cpu",), 4, "1"))
    model = client.post("/models", files={"file": ("seed.h5", seed_files["model"])}).json()
    data = client.post("/datasets", files={"file": ("seed.npz", seed_files["data"])}).json()
    shape = {"workers": 2, "parameter_servers": 1, "evaluator": True}
    train = {"dataset": data["id"], "max_steps": 5}
    spec = {"keras_model_path": model["id"], "train": train, "distribution": shape}
    accepted = client.post("/convert", json=spec)
    assert accepted.status_code == 202, accepted.text
    assert client.post(f"/jobs/{accepted.json()['id']}/cancel").status_code == 202
