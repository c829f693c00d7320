"""k2e.blobstore_s3 against a real S3 server (SeaweedFS, tests/support/s3_server.py):
every call of the BlobStore interface round-trips through the bucket."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from k2e.blobstore import blob_store
from k2e.blobstore_s3 import S3BlobStore, unavailable
from k2e.errors import NotFound
from k2e.settings import Settings
from tests.support.s3_server import CREDENTIALS, S3Server, boto_client

PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def store(server: S3Server, monkeypatch: pytest.MonkeyPatch, request: Any) -> S3BlobStore:
    """A store under a prefix of this test's own, built from settings as k2e builds it."""
    env = server.env(prefix=f"t/{request.node.name}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    made = blob_store(Settings(s3_part_bytes=PART))
    assert isinstance(made, S3BlobStore)
    return made


def test_bytes_and_files_round_trip(store: S3BlobStore, tmp_path: Path) -> None:
    store.put_bytes("tenants/a/models/m/info.json", b'{"id": "m"}')
    assert store.get_bytes("tenants/a/models/m/info.json") == b'{"id": "m"}'
    src = tmp_path / "model.h5"
    src.write_bytes(os.urandom(3000))
    store.put_file("tenants/a/models/m/model.h5", src)
    dest = tmp_path / "out" / "model.h5"
    store.get_file("tenants/a/models/m/model.h5", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["model.h5"]  # no temporary left
    assert store.size("tenants/a/models/m/model.h5") == 3000
    with store.open("tenants/a/models/m/model.h5") as f:
        assert f.read(100) + f.read() == src.read_bytes()


def test_objects_live_under_the_prefix(store: S3BlobStore, server: S3Server, request: Any) -> None:
    store.put_bytes("tenants/a/x", b"x")
    client: Any = boto_client(server)
    body = client.get_object(Bucket=server.bucket, Key=f"t/{request.node.name}/tenants/a/x")
    assert body["Body"].read() == b"x"


def test_list_pages_and_delete_prefix(store: S3BlobStore, server: S3Server) -> None:
    # More than one page of ListObjectsV2 (1000 keys) and of DeleteObjects.
    keys = [f"tenants/a/jobs/j/f{i:04d}" for i in range(1105)]
    client: Any = boto_client(server)
    for key in keys:
        client.put_object(Bucket=server.bucket, Key=store.object_key(key), Body=b"ab")
    store.put_bytes("tenants/a/jobs/jj/other", b"o")
    store.put_bytes("tenants/b/jobs/j/kept", b"k")
    listed = list(store.list("tenants/a/jobs/j/"))
    assert sorted(i.key for i in listed) == keys
    assert {i.size for i in listed} == {2}
    # "j/" is a folder: the sibling "jj" is not under it.
    assert store.delete_prefix("tenants/a/jobs/j/") == len(keys)
    assert list(store.list("tenants/a/jobs/j/")) == []
    assert [i.key for i in store.list("tenants/")] == [
        "tenants/a/jobs/jj/other",
        "tenants/b/jobs/j/kept",
    ]
    store.delete("tenants/a/jobs/jj/other")
    store.delete("tenants/a/jobs/jj/other")  # absent: no error
    assert store.size("tenants/a/jobs/jj/other") is None


def test_missing_objects_are_not_found(store: S3BlobStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("tenants/a/none")
    with pytest.raises(NotFound):
        store.open("tenants/a/none")
    with pytest.raises(NotFound):
        store.get_file("tenants/a/none", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert list(tmp_path.iterdir()) == []
    assert store.size("tenants/a/none") is None


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "a\\b", ""])
def test_keys_outside_the_prefix_are_refused(store: S3BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="not a storage key"):
        store.size(key)


def test_presigned_url_reads_the_object(store: S3BlobStore) -> None:
    data = os.urandom(5000)
    store.put_bytes("tenants/a/jobs/j/export/1/saved_model.pb", data)
    url = store.presign("tenants/a/jobs/j/export/1/saved_model.pb", 60)
    assert url is not None
    # No credentials of k2e's: the signature in the URL is all.
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.content == data


def test_large_files_go_up_in_parts(store: S3BlobStore, server: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 * PART + 12345))
    store.put_file("tenants/a/datasets/d/data.npz", src)
    client: Any = boto_client(server)
    head = client.head_object(
        Bucket=server.bucket, Key=store.object_key("tenants/a/datasets/d/data.npz")
    )
    # A multipart object's ETag ends in -<parts>.
    assert head["ETag"].strip('"').endswith("-3")
    dest = tmp_path / "back.bin"
    store.get_file("tenants/a/datasets/d/data.npz", dest)
    assert dest.read_bytes() == src.read_bytes()
    with store.open("tenants/a/datasets/d/data.npz") as f:
        assert b"".join(iter(f)) == src.read_bytes()


def test_ping_fails_without_the_bucket(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    S3BlobStore(server.bucket, "p", endpoint_url=server.endpoint).ping()
    with pytest.raises(ClientError):
        S3BlobStore("no-such-bucket", "p", endpoint_url=server.endpoint).ping()


def test_a_bucket_that_does_not_answer_is_unavailable_a_refusal_is_not(
    store: S3BlobStore, tmp_path: Path
) -> None:
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens
    client = boto3.client(
        "s3",
        endpoint_url=nowhere,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )
    down = S3BlobStore(store.bucket, store.prefix, endpoint_url=nowhere, client=client)
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for call in (lambda: down.put_file("a/f", src), lambda: down.get_bytes("a/f")):
        with pytest.raises((BotoCoreError, S3UploadFailedError)) as caught:
            call()
        assert unavailable(caught.value), caught.value
    with pytest.raises(NotFound) as missing:
        store.get_bytes("no/such/object")
    assert not unavailable(missing.value)
    with pytest.raises(ClientError) as refused:
        store.client.get_object(Bucket="no-such-bucket-here", Key="x")
    assert not unavailable(refused.value)
    assert not unavailable(ValueError("not storage"))
