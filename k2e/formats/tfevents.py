"""Scalar series from the TensorBoard event files an Estimator writes into model_dir."""

import struct
from pathlib import Path

from k2e.errors import InvalidUpload
from k2e.formats.tfrecord import fields, open_records, read_records

# tensorflow/core/util/event.proto and core/framework/summary.proto field numbers.
_EVENT_WALL_TIME, _EVENT_STEP, _EVENT_SUMMARY = 1, 2, 5
_SUMMARY_VALUE = 1
_VALUE_TAG, _VALUE_SIMPLE, _VALUE_TENSOR = 1, 2, 8
_TENSOR_DTYPE, _TENSOR_CONTENT, _TENSOR_FLOAT, _TENSOR_DOUBLE = 1, 4, 5, 6
_DT_FLOAT, _DT_DOUBLE = 1, 2


def _float32(raw: int | bytes) -> float:
    return struct.unpack("<f", int(raw).to_bytes(4, "little"))[0]  # type: ignore[arg-type]


def _tensor_scalar(data: bytes) -> float | None:
    dtype = 0
    for number, _, value in fields(data):
        if number == _TENSOR_DTYPE:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == _TENSOR_FLOAT:
            # packed (bytes) or a single fixed32
            if isinstance(value, bytes):
                return struct.unpack("<f", value[:4])[0] if len(value) >= 4 else None
            return _float32(value)
        elif number == _TENSOR_DOUBLE:
            if isinstance(value, bytes):
                return struct.unpack("<d", value[:8])[0] if len(value) >= 8 else None
            return struct.unpack("<d", int(value).to_bytes(8, "little"))[0]
        elif number == _TENSOR_CONTENT and isinstance(value, bytes):
            if dtype == _DT_FLOAT and len(value) == 4:
                return struct.unpack("<f", value)[0]
            if dtype == _DT_DOUBLE and len(value) == 8:
                return struct.unpack("<d", value)[0]
    return None


def scalars_of_event(record: bytes) -> list[tuple[str, int, float, float]]:
    """``(tag, step, wall_time, value)`` for each scalar summary in one Event record."""
    step, wall_time, out = 0, 0.0, []
    summaries: list[bytes] = []
    for number, _, value in fields(record):
        if number == _EVENT_STEP:
            step = int(value)  # type: ignore[arg-type]
        elif number == _EVENT_WALL_TIME:
            wall_time = struct.unpack("<d", int(value).to_bytes(8, "little"))[0]  # type: ignore[arg-type]
        elif number == _EVENT_SUMMARY and isinstance(value, bytes):
            summaries.append(value)
    for summary in summaries:
        for number, _, raw in fields(summary):
            if number != _SUMMARY_VALUE or not isinstance(raw, bytes):
                continue
            tag, scalar = "", None
            for vnum, _, vval in fields(raw):
                if vnum == _VALUE_TAG and isinstance(vval, bytes):
                    tag = vval.decode("utf-8", "replace")
                elif vnum == _VALUE_SIMPLE:
                    scalar = _float32(vval)
                elif vnum == _VALUE_TENSOR and isinstance(vval, bytes):
                    scalar = _tensor_scalar(vval)
            if tag and scalar is not None:
                out.append((tag, step, wall_time, scalar))
    return out


def read_scalars(model_dir: Path) -> dict[str, dict[str, list[dict[str, float]]]]:
    """``{run: {tag: [{"step", "wall_time", "value"}]}}`` where run is "train" (model_dir)
    or the evaluation folder's name ("eval"). A truncated last record (a file still being
    written) ends that file's series quietly."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for path in sorted(model_dir.rglob("events.out.tfevents.*")):
        rel = path.parent.relative_to(model_dir)
        if "export" in rel.parts or "keras" in rel.parts:
            continue
        run = "train" if rel == Path(".") else rel.as_posix()
        series = runs.setdefault(run, {})
        with open_records(path) as stream:
            try:
                for record in read_records(stream, path.name):
                    for tag, step, wall_time, value in scalars_of_event(record):
                        series.setdefault(tag, []).append(
                            {"step": step, "wall_time": wall_time, "value": value}
                        )
            except (InvalidUpload, ValueError):
                continue
    for series in runs.values():
        for points in series.values():
            points.sort(key=lambda p: (p["step"], p["wall_time"]))
    return runs
