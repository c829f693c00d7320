"""An upload sent on into the bucket while it arrives (bucket storage only).

The API receives an upload into a local file (the sandbox inspects that file). With
``StreamedPut`` each whole part of it (``K2E_S3_PART_BYTES``) goes into an S3 multipart
upload at its final key as soon as it is written, several parts at once on a pool of
threads, so by the time the inspection has decided, most of the file is in the bucket.
Nothing is visible under the key until ``commit`` (CompleteMultipartUpload), which the API
calls only for an accepted upload; ``abort`` (a refused upload, a client gone, any error)
drops the parts, so the bucket keeps nothing of it.

A file smaller than one part never starts a multipart upload (``started`` stays False):
the caller puts it whole after acceptance, as before.
"""

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from k2e.blobstore_s3 import S3BlobStore

log = logging.getLogger(__name__)

# Parts in flight at once in this process, all uploads together (each holds one part in
# memory while it is sent): the same concurrency as the store's own multipart uploads.
PART_THREADS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _part_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(PART_THREADS, thread_name_prefix="k2e-part")
        return _pool


class StreamedPut:
    """The bytes of ``path`` (written by the caller, who reports how many with ``wrote``)
    sent as parts of a multipart upload to ``key`` in ``store``."""

    def __init__(self, store: S3BlobStore, key: str, path: Path) -> None:
        self.store = store
        self.object_key = store.object_key(key)
        self.path = path
        self.part_bytes = store.part_bytes
        self.sent = 0  # bytes handed to part uploads so far
        self.failure: BaseException | None = None
        self._parts: list[Future[dict[str, Any] | None]] = []
        self._lock = threading.Lock()
        self._upload_id: str | None = None
        self._ended = False  # committed or aborted: no part starts any more

    @property
    def started(self) -> bool:
        return bool(self._parts)

    def wrote(self, total: int) -> None:
        """``path`` now holds ``total`` bytes (flushed): send each whole part not yet sent."""
        while total - self.sent >= self.part_bytes:
            self._send(self.sent, self.part_bytes)

    def finish(self, total: int) -> None:
        """``path`` is complete at ``total`` bytes: once parts have gone, the rest is the last."""
        self.wrote(total)
        if self._parts and total > self.sent:
            self._send(self.sent, total - self.sent)

    def _send(self, offset: int, length: int) -> None:
        number = len(self._parts) + 1
        part = _part_pool().submit(self._upload_part, number, offset, length)
        part.add_done_callback(self._note_failure)
        self._parts.append(part)
        self.sent = offset + length

    def _note_failure(self, part: Future[Any]) -> None:
        if not part.cancelled() and part.exception() is not None and self.failure is None:
            self.failure = part.exception()

    def _multipart_id(self) -> str:
        with self._lock:
            if self._upload_id is None:
                answer = self.store.client.create_multipart_upload(
                    Bucket=self.store.bucket, Key=self.object_key
                )
                self._upload_id = str(answer["UploadId"])
            return self._upload_id

    def _upload_part(self, number: int, offset: int, length: int) -> dict[str, Any] | None:
        if self._ended:
            return None
        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise OSError(f"{self.path} holds {offset + len(data)} bytes, not {offset + length}")
        answer = self.store.client.upload_part(
            Bucket=self.store.bucket,
            Key=self.object_key,
            UploadId=self._multipart_id(),
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def commit(self) -> None:
        """Wait for every part and complete the upload: the object appears whole at its key.
        Raises the first part's error (the caller then aborts)."""
        if not self._parts:
            raise RuntimeError("nothing was streamed; put the file whole instead")
        parts = [part.result() for part in self._parts]
        self.store.client.complete_multipart_upload(
            Bucket=self.store.bucket,
            Key=self.object_key,
            UploadId=self._multipart_id(),
            MultipartUpload={"Parts": parts},
        )
        self._ended = True

    def abort(self) -> None:
        """Stop sending, wait for the parts under way, and drop the multipart upload (a
        no-op after ``commit``). A bucket that does not answer is logged: its lifecycle
        rule for incomplete multipart uploads is the remaining remedy."""
        if self._ended:
            return
        self._ended = True
        for part in self._parts:
            part.cancel()
        wait(self._parts)
        with self._lock:
            upload_id = self._upload_id
        if upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.object_key, UploadId=upload_id
            )
        except Exception:
            log.warning(
                "could not abort the multipart upload of %s", self.object_key, exc_info=True
            )

    def abort_soon(self) -> None:
        """``abort`` on the part pool, without waiting (from a cancelled request)."""
        if not self._ended:
            _part_pool().submit(self.abort)


def abort_stale(store: S3BlobStore, older_than_s: float = 3600) -> int:
    """Abort the multipart uploads under the store's prefix begun more than
    ``older_than_s`` ago: those of an API process that died mid-upload, or that could not
    abort one while the bucket did not answer (run at start, like the tmp/ sweep; another
    API process may be streaming an upload right now, hence the age)."""
    import time

    cutoff = time.time() - older_than_s
    prefix = f"{store.prefix}/" if store.prefix else ""
    stale = [
        (upload["Key"], upload["UploadId"])
        for page in store.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=store.bucket, Prefix=prefix
        )
        for upload in page.get("Uploads") or []
        if upload["Initiated"].timestamp() < cutoff
    ]
    for key, upload_id in stale:
        store.client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload_id)
    return len(stale)
