"""Multipart bodies streamed straight to the storage volume, with the size limit
enforced while the bytes arrive (never after the whole body is buffered)."""

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header

from k2e.errors import InvalidUpload, UploadTooLarge

MAX_FIELD_BYTES = 4 * 1024 * 1024  # non-file fields (a JSON spec) stay small
MAX_HEADER_BYTES = 16 * 1024  # the headers of one part
MAX_PARTS = 8  # parts of one body (K2E_MAX_MULTIPART_PARTS on POST /convert)


class Outlet(Protocol):
    """Where a file's bytes go on while they arrive (k2e.blob_upload.StreamedPut): told
    how much of the local file is written, and that it is complete; aborted otherwise."""

    failure: BaseException | None

    @property
    def started(self) -> bool: ...

    def wrote(self, total: int) -> None: ...

    def finish(self, total: int) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def abort_soon(self) -> None: ...


@dataclass
class ReceivedFile:
    field: str
    filename: str
    path: Path
    size: int
    # The SHA-256 of the bytes, computed as they arrive.
    hasher: Any = dataclasses.field(default_factory=hashlib.sha256, repr=False)
    # Set by ``outlet_for``: the bytes also go on to the store while they arrive, for the
    # upload with this id.
    outlet: Outlet | None = None
    entry_id: str | None = None

    @property
    def sha256(self) -> str:
        return str(self.hasher.hexdigest())

    def abandon(self) -> None:
        """Remove the received file and drop what went on to the store (refused or failed)."""
        if self.outlet is not None:
            self.outlet.abort()
        self.path.unlink(missing_ok=True)


@dataclass
class MultipartBody:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)

    def discard(self) -> None:
        for received in self.files.values():
            received.abandon()


class _Receiver:
    """Parser callbacks: file parts go to disk, other parts to memory."""

    def __init__(
        self,
        tmp_path_for: Callable[[str], Path],
        file_fields: set[str],
        limit: int,
        limit_name: str,
        max_parts: int = MAX_PARTS,
        max_field_bytes: int = MAX_FIELD_BYTES,
        outlet_for: Callable[[ReceivedFile], None] | None = None,
    ) -> None:
        self.outlet_for = outlet_for
        self.max_parts = max_parts
        self.max_field_bytes = max_field_bytes
        self.parts = 0
        self.tmp_path_for = tmp_path_for
        self.file_fields = file_fields
        self.limit = limit
        self.limit_name = limit_name
        self.received = 0  # file bytes so far, all files together
        self.body = MultipartBody()
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._sink: IO[bytes] | None = None
        self._file: ReceivedFile | None = None
        self._buffer = bytearray()
        self._header_bytes = 0

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise InvalidUpload(
                f"the multipart body has more than {self.max_parts} parts (K2E_MAX_MULTIPART_PARTS)"
            )
        self._headers = {}
        self._header_bytes = 0
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._check_header(end - start)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header(end - start)

    def _check_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise InvalidUpload(f"a part's headers exceed {MAX_HEADER_BYTES} bytes")

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            if self._name not in self.file_fields:
                raise InvalidUpload(
                    f"unexpected file field {self._name!r}; expected one of "
                    f"{sorted(self.file_fields)}"
                )
            if self._name in self.body.files:
                raise InvalidUpload(f"file field {self._name!r} given twice")
            name = filename.decode("utf-8", "replace")
            path = self.tmp_path_for(Path(name).suffix.lower()[:16])
            self._file = ReceivedFile(self._name, name, path, 0)
            self.body.files[self._name] = self._file
            self._sink = path.open("wb")
            if self.outlet_for is not None:
                self.outlet_for(self._file)
        else:
            self._file = None
            self._sink = None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._sink is not None and self._file is not None:
            self._file.size += len(chunk)
            self.received += len(chunk)
            if self.received > self.limit:
                raise UploadTooLarge(f"file field {self._name!r} exceeds {self.limit_name}")
            self._sink.write(chunk)
            self._file.hasher.update(chunk)
            if self._file.outlet is not None:
                self._sink.flush()
                self._file.outlet.wrote(self._file.size)
        else:
            self._buffer += chunk
            if len(self._buffer) > self.max_field_bytes:
                raise UploadTooLarge(
                    f"field {self._name!r} exceeds {self.max_field_bytes} bytes "
                    "(K2E_MAX_FIELD_BYTES)"
                )

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
            if self._file is not None and self._file.outlet is not None:
                self._file.outlet.finish(self._file.size)
        else:
            self.body.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()

    def raise_outlet_failure(self) -> None:
        """A part the store refused or did not take ends the upload now (with that error)."""
        for received in self.body.files.values():
            if received.outlet is not None and received.outlet.failure is not None:
                raise received.outlet.failure

    async def discard(self, wait: bool) -> None:
        """Drop the files received so far; their streamed parts are aborted (waited for
        in a thread unless ``wait`` is False: then on the store's own threads)."""
        self.close()
        for received in self.body.files.values():
            if received.outlet is not None:
                if wait:
                    await run_in_threadpool(received.outlet.abort)
                else:
                    received.outlet.abort_soon()
            received.path.unlink(missing_ok=True)


async def receive_multipart(
    request: Request,
    tmp_path_for: Callable[[str], Path],
    file_fields: set[str],
    limit: int,
    limit_name: str | None = None,
    max_parts: int = MAX_PARTS,
    max_field_bytes: int = MAX_FIELD_BYTES,
    outlet_for: Callable[[ReceivedFile], None] | None = None,
) -> MultipartBody:
    """Parse ``multipart/form-data`` from the request stream into files under storage.

    The files together may hold ``limit`` bytes; ``limit_name`` says what sets it (the
    upload limit, or the tenant's storage quota) in the 413. At most ``max_parts`` parts
    (422 beyond), text parts at most ``max_field_bytes`` each (413). ``outlet_for`` may
    give a file an outlet (its bytes go on to the store as they arrive); on any error, a
    client gone included, what went there is aborted.
    """
    limit_name = limit_name or f"the upload limit of {limit} bytes"
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidUpload("expected a multipart/form-data body with a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + max_field_bytes:
        raise UploadTooLarge(f"the body exceeds {limit_name}")

    receiver = _Receiver(
        tmp_path_for, file_fields, limit, limit_name, max_parts, max_field_bytes, outlet_for
    )
    callbacks: Any = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            receiver.raise_outlet_failure()
        parser.finalize()
        receiver.raise_outlet_failure()
    except Exception as exc:
        await receiver.discard(wait=True)
        if isinstance(exc, (InvalidUpload, UploadTooLarge)) or _from_outlet(receiver, exc):
            raise
        raise InvalidUpload(f"malformed multipart body: {exc}") from exc
    except BaseException:
        await receiver.discard(wait=False)
        raise
    receiver.close()
    return receiver.body


def _from_outlet(receiver: _Receiver, exc: BaseException) -> bool:
    return any(
        received.outlet is not None and received.outlet.failure is exc
        for received in receiver.body.files.values()
    )
