"""Multipart bodies streamed straight to the storage volume, with the size limit
enforced while the bytes arrive (never after the whole body is buffered)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from k2e.errors import InvalidUpload, UploadTooLarge

MAX_FIELD_BYTES = 4 * 1024 * 1024  # non-file fields (a JSON spec) stay small
MAX_HEADER_BYTES = 16 * 1024  # the headers of one part
MAX_PARTS = 8  # parts of one body (K2E_MAX_MULTIPART_PARTS on POST /convert)


@dataclass
class ReceivedFile:
    field: str
    filename: str
    path: Path
    size: int


@dataclass
class MultipartBody:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)

    def discard(self) -> None:
        for received in self.files.values():
            received.path.unlink(missing_ok=True)


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
    ) -> None:
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
        else:
            self.body.fields[self._name] = self._buffer.decode("utf-8", "replace")

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


async def receive_multipart(
    request: Request,
    tmp_path_for: Callable[[str], Path],
    file_fields: set[str],
    limit: int,
    limit_name: str | None = None,
    max_parts: int = MAX_PARTS,
    max_field_bytes: int = MAX_FIELD_BYTES,
) -> MultipartBody:
    """Parse ``multipart/form-data`` from the request stream into files under storage.

    The files together may hold ``limit`` bytes; ``limit_name`` says what sets it (the
    upload limit, or the tenant's storage quota) in the 413. At most ``max_parts`` parts
    (422 beyond), text parts at most ``max_field_bytes`` each (413).
    """
    limit_name = limit_name or f"the upload limit of {limit} bytes"
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidUpload("expected a multipart/form-data body with a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + max_field_bytes:
        raise UploadTooLarge(f"the body exceeds {limit_name}")

    receiver = _Receiver(tmp_path_for, file_fields, limit, limit_name, max_parts, max_field_bytes)
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
        parser.finalize()
    except Exception as exc:
        receiver.close()
        receiver.body.discard()
        if isinstance(exc, (InvalidUpload, UploadTooLarge)):
            raise
        raise InvalidUpload(f"malformed multipart body: {exc}") from exc
    receiver.close()
    return receiver.body
