"""Multipart uploads an API process left unfinished (it died mid-upload, or the bucket did
not answer its abort) are aborted by the next start's sweep, once they are old enough."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k2e.blob_upload import abort_stale
from k2e.blobstore_s3 import S3BlobStore
from tests.support.s3_server import CREDENTIALS, S3Server, boto_client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    s3 = S3Server(tmp_path / "s3").start()
    try:
        yield s3
    finally:
        s3.stop()


def test_unfinished_uploads_under_the_prefix_are_aborted_once_old(
    server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3: Any = boto_client(server)
    for key in ("mine/tenants/t/datasets/a/data.npz", "other/x"):
        s3.create_multipart_upload(Bucket=server.bucket, Key=key)
    store = S3BlobStore(server.bucket, "mine", endpoint_url=server.endpoint)

    assert abort_stale(store, older_than_s=3600) == 0  # maybe still being received
    assert abort_stale(store, older_than_s=-60) == 1

    left = s3.list_multipart_uploads(Bucket=server.bucket).get("Uploads") or []
    assert [u["Key"] for u in left] == ["other/x"]  # another prefix is not ours
