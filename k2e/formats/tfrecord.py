"""Reads TFRecord files (TensorBoard event files, tf.train.Example datasets) without
TensorFlow: the framing, its CRC-32C checksums, and a minimal protobuf wire decoder."""

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c

from k2e.errors import InvalidUpload
from k2e.formats.read_limits import RATIO_FLOOR_BYTES, ReadLimits

_MASK_DELTA = 0xA282EAD8
CHUNK = 1024 * 1024


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset so CRCs of CRCs stay distinct."""
    return _mask(crc32c.crc32c(data))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


class RecordStream:
    """A TFRecord file's bytes, gunzipped in chunks when it is gzip-compressed, with what it
    can still hold (``room``): the file's size for a plain file; for a gzip file what
    K2E_MAX_INFLATED_BYTES and K2E_MAX_INFLATION_RATIO still allow, which ``read`` enforces."""

    def __init__(self, path: Path, limits: ReadLimits) -> None:
        self._file: BinaryIO = path.open("rb")
        self._limits = limits
        self._size = os.fstat(self._file.fileno()).st_size
        self.compressed = self._file.read(2) == b"\x1f\x8b"
        self._file.seek(0)
        self._what = f"{path.name} (gzip)"
        self._unzip = zlib.decompressobj(31)
        self._fed = False  # input given to the current gzip member's decompressor
        self._tail = b""
        self._consumed = 0  # compressed bytes read from the file
        self.position = 0  # bytes of the (inflated) stream handed out

    def __enter__(self) -> "RecordStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def room(self) -> int:
        """The most bytes the stream may still give."""
        if not self.compressed:
            return self._size - self.position
        by_ratio = max(RATIO_FLOOR_BYTES, int(self._limits.max_inflation_ratio * self._size))
        return min(self._limits.max_inflated_bytes, by_ratio) - self.position

    def read(self, n: int) -> bytes:
        data = self._file.read(n) if not self.compressed else self._inflate(n)
        self.position += len(data)
        return data

    def _inflate(self, n: int) -> bytes:
        parts: list[bytes] = []
        want = n
        while want > 0:
            if self._tail:
                data, self._tail = self._tail, b""
            else:
                data = self._file.read(CHUNK)
                self._consumed += len(data)
                if not data:
                    if self._fed:
                        raise EOFError("the gzip stream ends before its end-of-stream marker")
                    break
            self._fed = True
            try:
                part = self._unzip.decompress(data, want)
            except zlib.error as exc:
                raise OSError(f"corrupt gzip data: {exc}") from exc
            self._tail = self._unzip.unconsumed_tail
            if self._unzip.eof:  # the next gzip member, if any, starts afresh
                self._tail = self._unzip.unused_data
                self._unzip, self._fed = zlib.decompressobj(31), False
            self._limits.check_inflation(
                self.position + n - want + len(part), self._consumed, self._what
            )
            parts.append(part)
            want -= len(part)
        return b"".join(parts)


def open_records(path: Path, limits: ReadLimits | None = None) -> RecordStream:
    """The file's byte stream, gunzipped (in chunks, within ``limits``) when it is
    gzip-compressed."""
    return RecordStream(path, limits or ReadLimits())


def read_records(
    stream: RecordStream,
    name: str = "file",
    limits: ReadLimits | None = None,
    keep: int | None = None,
) -> Iterator[bytes]:
    """Each record's payload (for the first ``keep`` records; ``b""`` after them, their
    checksums still verified); raises InvalidUpload on truncation, a bad checksum or a
    declared length past K2E_MAX_RECORD_BYTES or past what the file can still hold, before
    reading it. Payloads are read and checksummed in chunks."""
    limits = limits or ReadLimits()
    index = 0
    while True:
        try:
            header = stream.read(12)
        except (OSError, EOFError) as exc:  # gzip streams report corruption here
            raise InvalidUpload(f"{name}: record {index}: unreadable ({exc})") from exc
        if not header:
            return
        if len(header) < 12:
            raise InvalidUpload(f"{name}: record {index} is truncated (header)")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
            raise InvalidUpload(f"{name}: record {index}: corrupt length (checksum mismatch)")
        if length > limits.max_record_bytes:
            raise InvalidUpload(
                f"{name}: record {index} declares {length} bytes, more than the "
                f"{limits.max_record_bytes} bytes a record may hold (K2E_MAX_RECORD_BYTES)"
            )
        room = stream.room()
        if length + 4 > room:
            raise InvalidUpload(
                f"{name}: record {index} declares {length} bytes but the file can hold at "
                f"most {max(room - 4, 0)} more (its size, or K2E_MAX_INFLATED_BYTES and "
                "K2E_MAX_INFLATION_RATIO for a gzip file): truncated or lying"
            )
        wanted = keep is None or index < keep
        parts: list[bytes] = []
        crc, left = 0, length
        try:
            while left:
                chunk = stream.read(min(left, CHUNK))
                if not chunk:
                    break
                crc = crc32c.crc32c(chunk, crc)
                left -= len(chunk)
                if wanted:
                    parts.append(chunk)
            footer = stream.read(4)
        except (OSError, EOFError) as exc:
            raise InvalidUpload(f"{name}: record {index}: unreadable ({exc})") from exc
        if left or len(footer) < 4:
            raise InvalidUpload(f"{name}: record {index} is truncated")
        if struct.unpack("<I", footer)[0] != _mask(crc):
            raise InvalidUpload(f"{name}: record {index}: corrupt data (checksum mismatch)")
        yield b"".join(parts)
        index += 1


# -- protobuf wire format ------------------------------------------------------


def varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each field of a protobuf message;
    length-delimited values are bytes, fixed ones their raw little-endian int."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value
