"""Dataset files built byte by byte, without TensorFlow: a tf.train.Example and a TFRecord
frame (whose length can lie), and small valid npz, CSV and TFRecord files."""

import io
import struct

import numpy as np

from k2e.formats.tfrecord import masked_crc


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(features: dict[str, np.ndarray | bytes]) -> bytes:
    """A serialized tf.train.Example: float32 arrays as float lists, bytes as bytes lists."""
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            feature = _ld(1, _ld(1, value))
        else:
            feature = _ld(2, _ld(1, np.asarray(value, "<f4").tobytes()))
        entries += _ld(1, _ld(1, name.encode()) + _ld(2, feature))
    return _ld(1, entries)


def record(payload: bytes, declared: int | None = None) -> bytes:
    """One TFRecord frame; ``declared`` lies about the length (with a valid header CRC)."""
    length = struct.pack("<Q", len(payload) if declared is None else declared)
    return (
        length
        + struct.pack("<I", masked_crc(length))
        + payload
        + struct.pack("<I", masked_crc(payload))
    )


def valid_tfrecord(n: int = 8) -> bytes:
    rng = np.random.default_rng(0)
    return b"".join(
        record(example({"x": rng.normal(size=3), "y": rng.normal(size=1)})) for _ in range(n)
    )


def valid_npz(n: int = 8) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.arange(n * 3, dtype="float32").reshape(n, 3), y=np.ones(n))
    return buffer.getvalue()


def valid_csv(n: int = 8) -> bytes:
    rows = ["x_0,x_1,y", *(f"{i},{i * 0.5},{i % 2}" for i in range(n))]
    return ("\n".join(rows) + "\n").encode()
