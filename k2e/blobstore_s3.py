"""The S3-compatible bucket (``K2E_STORAGE_URL=s3://bucket/prefix``): every object of the
storage layout at ``<prefix>/<key>`` in one bucket, through boto3 (chosen by measurement:
bench/STORAGE_CLIENT.md).

Large files go up in parts (``K2E_S3_PART_BYTES`` each, several at once) and are visible
only once the last part is in, so a reader never sees part of an object. Reads stream:
``open`` hands out the response body without buffering it, ``get_file`` fetches ranges in
parallel into a temporary name beside ``dest``.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlparse

from k2e.blobkeys import CHUNK, ObjectInfo, check_key, written_whole
from k2e.errors import NotFound

if TYPE_CHECKING:
    from k2e.settings import Settings

DEFAULT_PART_BYTES = 16 * 1024 * 1024
# S3's DeleteObjects takes at most this many keys per request.
_DELETE_BATCH = 1000
_MISSING = {"404", "NoSuchKey", "NotFound"}
# Answers that say the bucket is there but cannot serve now (besides any 5xx status).
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


class S3BlobStore:
    """Objects under ``prefix`` in ``bucket``; keys are the storage layout's."""

    local = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        part_bytes: int = DEFAULT_PART_BYTES,
        client: Any = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.part_bytes = part_bytes
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                # An unreachable endpoint fails a call (and /readyz) in seconds, not minutes.
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=32,
                s3={"addressing_style": "path"} if endpoint_url else None,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=part_bytes,
            multipart_chunksize=part_bytes,
            max_concurrency=8,
            io_chunksize=CHUNK,
        )

    @classmethod
    def from_settings(cls, settings: "Settings") -> "S3BlobStore":
        url = urlparse(settings.storage_url or "")
        if url.scheme != "s3" or not url.netloc:
            raise ValueError(f"K2E_STORAGE_URL must be s3://bucket/prefix, not {url.geturl()!r}")
        return cls(
            url.netloc,
            url.path,
            endpoint_url=settings.s3_endpoint_url,
            part_bytes=settings.s3_part_bytes,
        )

    def object_key(self, key: str) -> str:
        """The bucket's key of a storage key (checked: never outside the prefix)."""
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_prefix(self, prefix: str) -> str:
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        # A folder ("models/") keeps its slash; check_key drops it.
        checked = check_key(prefix) + ("/" if prefix.endswith("/") else "")
        return f"{self.prefix}/{checked}" if self.prefix else checked

    def _storage_key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    # writes ---------------------------------------------------------------

    def put_file(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self.object_key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix: str) -> int:
        removed = 0
        batch: list[dict[str, str]] = []
        # Listed in full first: deleting while paging may shift the pages.
        for info in list(self.list(prefix)):
            batch.append({"Key": self.object_key(info.key)})
            if len(batch) == _DELETE_BATCH:
                removed += self._delete_batch(batch)
                batch = []
        if batch:
            removed += self._delete_batch(batch)
        return removed

    def _delete_batch(self, batch: list[dict[str, str]]) -> int:
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(f"deleting {first.get('Key')}: {first.get('Message')}")
        return len(batch)

    # reads ----------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> None:
        try:
            with written_whole(dest, ".get-") as tmp:
                self.client.download_file(
                    self.bucket, self.object_key(key), str(tmp), Config=self.transfer
                )
        except Exception as exc:
            if _missing(exc):
                raise NotFound(f"no stored object {key}") from None
            raise

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if _missing(exc):
                raise NotFound(f"no stored object {key}") from None
            raise
        return cast(BinaryIO, _Body(answer["Body"], int(answer["ContentLength"])))

    def size(self, key: str) -> int | None:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return int(answer["ContentLength"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key_prefix(prefix)
        )
        for page in pages:
            for entry in page.get("Contents") or []:
                modified = entry.get("LastModified")
                yield ObjectInfo(
                    self._storage_key(entry["Key"]),
                    int(entry["Size"]),
                    modified.timestamp() if modified is not None else None,
                )

    def presign(self, key: str, expires_s: int) -> str | None:
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                ExpiresIn=expires_s,
            )
        )

    def ping(self) -> None:
        """Raise unless the bucket answers (the API's readiness)."""
        self.client.head_bucket(Bucket=self.bucket)


class _Body:
    """A GET's response body as a read-only file object (read, iteration, context)."""

    def __init__(self, body: Any, length: int) -> None:
        self._body = body
        self.size = length
        self.name = "s3-object"

    def read(self, size: int = -1) -> bytes:
        return bytes(self._body.read() if size is None or size < 0 else self._body.read(size))

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body.iter_chunks(CHUNK))

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> "_Body":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in _MISSING
    return False


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception that led to it, says the bucket did not answer: no
    connection, a timeout, a connection closed mid-answer, a 5xx or throttling answer
    (boto3 has retried those already). A refusal (403, 404) is not."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as NoConnection

    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        if isinstance(found, NoConnection | HTTPClientError):
            return True
        if isinstance(found, ClientError):
            error = found.response.get("Error", {})
            status = int(found.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return status >= 500 or str(error.get("Code", "")) in _BUSY
        found = found.__cause__ or found.__context__
    return False
