"""TFRecord datasets of ``tf.train.Example``s, inspected without TensorFlow.

Feature names are the model's input and output names (and ``sample_weights…``).
Every record's framing and checksums are verified and counted while streaming;
the first ``SAMPLE`` examples are decoded in full to learn (and cross-check) each
feature's type and length.
"""

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from k2e.errors import InvalidUpload
from k2e.formats.read_limits import ReadLimits
from k2e.formats.tfrecord import fields, open_records, read_records

SAMPLE = 1000
# tensorflow/core/example/{example,feature}.proto field numbers.
_BYTES, _FLOAT, _INT64 = 1, 2, 3
_KINDS = {_BYTES: "bytes", _FLOAT: "float32", _INT64: "int64"}


@dataclass(frozen=True)
class TFRecordSummary:
    num_examples: int
    arrays: dict[str, list[int]]  # [num_examples, length] per feature
    dtypes: dict[str, str]  # float32, int64 or bytes
    compressed: bool


def parse_example(record: bytes) -> dict[str, tuple[str, int]]:
    """Feature name -> (kind, number of values) of one serialized Example."""
    out: dict[str, tuple[str, int]] = {}
    for number, _, features in fields(record):
        if number != 1 or not isinstance(features, bytes):
            continue
        for fnum, _, entry in fields(features):
            if fnum != 1 or not isinstance(entry, bytes):
                continue
            name, feature = "", b""
            for enum, _, evalue in fields(entry):
                if enum == 1 and isinstance(evalue, bytes):
                    name = evalue.decode("utf-8")
                elif enum == 2 and isinstance(evalue, bytes):
                    feature = evalue
            out[name] = _feature(feature)
    return out


def _feature(data: bytes) -> tuple[str, int]:
    for kind, _, values in fields(data):
        if kind not in _KINDS or not isinstance(values, bytes):
            continue
        return _KINDS[kind], _count(kind, values)
    return "float32", 0


def _count(kind: int, values: bytes) -> int:
    count = 0
    for _, wire, value in fields(values):
        if kind == _FLOAT and wire == 2 and isinstance(value, bytes):
            count += len(value) // 4  # packed floats
        elif kind == _INT64 and wire == 2 and isinstance(value, bytes):
            count += sum(1 for b in value if not b & 0x80)  # packed varints
        else:
            count += 1
    return count


def inspect_tfrecord(
    path: str | os.PathLike[str], limits: ReadLimits | None = None
) -> TFRecordSummary:
    """Count, features, kinds and lengths; refuses truncated or corrupt files, files past
    ``limits`` (record length, gzip inflation) and features whose type or length changes
    between examples. Only the first ``SAMPLE`` records are kept in memory, one at a time."""
    path = Path(path)
    limits = limits or ReadLimits()
    layout: dict[str, tuple[str, int]] | None = None
    count = 0
    with open_records(path, limits) as stream:
        compressed = stream.compressed
        for record in read_records(stream, path.name, limits, keep=SAMPLE):
            if count < SAMPLE:
                try:
                    example = parse_example(record)
                except (ValueError, UnicodeDecodeError, struct.error) as exc:
                    raise InvalidUpload(
                        f"record {count} is not a serialized tf.train.Example: {exc}"
                    ) from exc
                if not example:
                    raise InvalidUpload(f"record {count} is an Example without features")
                layout = _merge(layout, example, count)
            count += 1
    if count == 0 or layout is None:
        raise InvalidUpload("the TFRecord file holds no records")
    return TFRecordSummary(
        num_examples=count,
        arrays={name: [count, length] for name, (_, length) in layout.items()},
        dtypes={name: kind for name, (kind, _) in layout.items()},
        compressed=compressed,
    )


def _merge(
    layout: dict[str, tuple[str, int]] | None, example: dict[str, tuple[str, int]], index: int
) -> dict[str, tuple[str, int]]:
    if layout is None:
        return example
    if set(example) != set(layout):
        missing = sorted(set(layout) - set(example))
        extra = sorted(set(example) - set(layout))
        raise InvalidUpload(
            f"record {index} has different features from record 0 "
            f"(missing {missing}, extra {extra}): every Example needs the same features"
        )
    for name, (kind, length) in example.items():
        if (kind, length) != layout[name]:
            raise InvalidUpload(
                f"feature {name!r} is {kind}[{length}] in record {index} but "
                f"{layout[name][0]}[{layout[name][1]}] in record 0: features must be fixed-length"
            )
    return layout
