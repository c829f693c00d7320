"""A BlobStore on an S3 bucket through boto3, for the worker's bucket tests (the shipped
implementation is k2e.blobstore_s3.S3BlobStore), and a wrapper that records every call
that moves bytes, in order."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from k2e.blobstore import BlobStore, ObjectInfo, check_key
from k2e.errors import NotFound
from k2e.settings import Settings
from tests.support.s3_server import CREDENTIALS, S3Server


class BotoBlobStore:
    """The objects under ``prefix/`` of ``bucket`` at ``endpoint``."""

    local = False

    def __init__(self, endpoint: str, bucket: str, prefix: str) -> None:
        import boto3

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def of(cls, server: S3Server, prefix: str) -> BotoBlobStore:
        return cls(server.endpoint, server.bucket, prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> BotoBlobStore:
        """The store ``K2E_STORAGE_URL`` and ``K2E_S3_ENDPOINT_URL`` name."""
        assert settings.storage_url is not None
        assert settings.s3_endpoint_url is not None
        bucket, _, prefix = settings.storage_url.removeprefix("s3://").partition("/")
        return cls(settings.s3_endpoint_url, bucket, prefix)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}"

    def put_file(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".get-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(key), tmp)
            os.replace(tmp, dest)
        except Exception as exc:
            Path(tmp).unlink(missing_ok=True)
            if _missing(exc):
                raise NotFound(f"no stored object {key}") from None
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except Exception as exc:
            if _missing(exc):
                raise NotFound(f"no stored object {key}") from None
            raise

    def open(self, key: str) -> BinaryIO:
        return BytesIO(self.get_bytes(key))

    def size(self, key: str) -> int | None:
        try:
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
            )
        except Exception as exc:
            if _missing(exc):
                return None
            raise

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}"):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"][len(self.prefix) + 1 :], int(item["Size"]))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def presign(self, key: str, expires_s: int) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_s,
            )
        )


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class RecordingStore:
    """``store``, with every put, get and delete appended to ``calls`` as (call, key)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.local = store.local
        self.url = store.url
        self.calls: list[tuple[str, str]] = []

    def put_file(self, key: str, src: Path) -> None:
        self.calls.append(("put", key))
        self.store.put_file(key, src)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.calls.append(("put", key))
        self.store.put_bytes(key, data)

    def get_file(self, key: str, dest: Path) -> None:
        self.calls.append(("get", key))
        self.store.get_file(key, dest)

    def get_bytes(self, key: str) -> bytes:
        self.calls.append(("get", key))
        return self.store.get_bytes(key)

    def open(self, key: str) -> BinaryIO:
        self.calls.append(("get", key))
        return self.store.open(key)

    def size(self, key: str) -> int | None:
        return self.store.size(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.store.list(prefix)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.store.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        self.calls.append(("delete", prefix))
        return self.store.delete_prefix(prefix)

    def presign(self, key: str, expires_s: int) -> str | None:
        return self.store.presign(key, expires_s)

    def keys(self, call: str) -> list[str]:
        return [key for made, key in self.calls if made == call]
