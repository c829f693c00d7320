"""Reads TFRecord files (TensorBoard event files, tf.train.Example datasets) without
TensorFlow: the framing, its CRC-32C checksums, and a minimal protobuf wire decoder."""

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c

from k2e.errors import InvalidUpload

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated and offset so CRCs of CRCs stay distinct."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_records(path: Path) -> BinaryIO:
    """The file's byte stream, gunzipped when it is gzip-compressed."""
    return gzip.open(path, "rb") if is_gzip(path) else path.open("rb")  # type: ignore[return-value]


def read_records(stream: BinaryIO, name: str = "file") -> Iterator[bytes]:
    """Each record's payload; raises InvalidUpload on truncation or a bad checksum."""
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
        try:
            payload = stream.read(length)
            footer = stream.read(4)
        except (OSError, EOFError) as exc:
            raise InvalidUpload(f"{name}: record {index}: unreadable ({exc})") from exc
        if len(payload) < length or len(footer) < 4:
            raise InvalidUpload(f"{name}: record {index} is truncated")
        if struct.unpack("<I", footer)[0] != masked_crc(payload):
            raise InvalidUpload(f"{name}: record {index}: corrupt data (checksum mismatch)")
        yield payload
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
