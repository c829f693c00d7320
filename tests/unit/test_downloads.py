"""Checkpoint and SavedModel downloads: tar.gz by default, the same tar uncompressed on request."""

import gzip
import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import JobStore, NewJob
from k2e.settings import Settings
from k2e.storage import Storage
from service.archive import TarPlan

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def job_id(client: TestClient, settings: Settings) -> str:
    """A job whose model_dir holds a checkpoint (sizes around the 512-byte tar block,
    one above the read chunk) and an export."""
    job_id = str(uuid.uuid4())
    store = JobStore(settings.sqlalchemy_url)
    store.create(NewJob(job_id, "default", {"note": "downloads"}, "cpu", f"jobs/{job_id}", 1))
    model_dir = Storage(settings.storage_root).for_tenant("default").job_model_dir(job_id)
    model_dir.mkdir(parents=True)
    (model_dir / "model.ckpt-7.index").write_bytes(os.urandom(512))
    (model_dir / "model.ckpt-7.data-00000-of-00001").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (model_dir / "model.ckpt-7.meta").write_bytes(b"")
    export = model_dir / "export" / "1700000000"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(os.urandom(1000))
    (export / "variables" / "variables.index").write_bytes(os.urandom(77))
    return job_id


def _members(archive: bytes, mode: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode=mode) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.mark.parametrize("route", ["checkpoints/7", "savedmodel"])
def test_the_tar_variant_holds_the_same_members_and_bytes_as_the_gzip_one(
    client: TestClient, job_id: str, route: str
) -> None:
    default = client.get(f"/jobs/{job_id}/{route}")
    assert default.status_code == 200, default.text
    assert default.headers["content-type"] == "application/gzip"
    assert default.headers["content-disposition"].endswith('.tar.gz"')
    plain = client.get(f"/jobs/{job_id}/{route}", params={"format": "tar"})
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "application/x-tar"
    assert plain.headers["content-disposition"].endswith('.tar"')
    assert int(plain.headers["content-length"]) == len(plain.content)
    # The gzip variant is exactly the plain tar, compressed.
    assert gzip.decompress(default.content) == plain.content
    members = _members(plain.content, "r:")
    assert members == _members(default.content, "r:gz")
    if route == "savedmodel":
        assert set(members) == {"1700000000/saved_model.pb", "1700000000/variables/variables.index"}
    else:
        assert len(members["model.ckpt-7.data-00000-of-00001"]) == 3 * 1024 * 1024 + 5
        assert members["model.ckpt-7.meta"] == b""


def test_accept_asks_for_the_tar_and_the_query_wins(client: TestClient, job_id: str) -> None:
    url = f"/jobs/{job_id}/checkpoints/7"
    by_accept = client.get(url, headers={"Accept": "application/x-tar"})
    assert by_accept.headers["content-type"] == "application/x-tar"
    explicit = client.get(url, params={"format": "tar.gz"}, headers={"Accept": "application/x-tar"})
    assert explicit.headers["content-type"] == "application/gzip"
    assert client.get(url, headers={"Accept": "*/*"}).headers["content-type"] == "application/gzip"


@pytest.mark.parametrize("value", ["zip", "", "TAR"])
def test_a_bad_format_is_a_422_naming_the_parameter(
    client: TestClient, job_id: str, value: str
) -> None:
    response = client.get(f"/jobs/{job_id}/checkpoints/7", params={"format": value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    errors = response.json()["errors"]
    assert errors[0]["loc"] == ["query", "format"]


@pytest.mark.parametrize("route", ["checkpoints/7", "savedmodel"])
def test_redirect_on_the_local_folder_is_a_409_saying_it_needs_a_bucket(
    client: TestClient, job_id: str, settings: Settings, route: str
) -> None:
    response = client.get(
        f"/jobs/{job_id}/{route}", params={"redirect": "true"}, follow_redirects=False
    )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "needs bucket storage" in response.json()["detail"]
    # Nothing was built for it.
    model_dir = Storage(settings.storage_root).for_tenant("default").job_model_dir(job_id)
    assert not (model_dir / "downloads").exists()
    assert client.get(f"/jobs/{job_id}/{route}", params={"redirect": "false"}).status_code == 200


def test_a_file_rotated_away_after_planning_is_still_sent_whole(tmp_path: Path) -> None:
    data = tmp_path / "model.ckpt-1.data-00000-of-00001"
    data.write_bytes(b"x" * 10_000)
    plan = TarPlan([(data, data.name)])
    data.unlink()  # keep_checkpoint_max removes old checkpoints while training runs
    archive = b"".join(plan.blocks(chunk=4096))
    assert len(archive) == plan.length
    assert _members(archive, "r:") == {data.name: b"x" * 10_000}
