"""CSV datasets: a header, then one row per example.

A column per scalar input/output (``y``), or ``name_0 … name_{k-1}`` columns for a
vector of length k (``input_a_0 … input_a_15``). Meant for small experiments: the
worker loads a CSV whole.
"""

import csv
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k2e.errors import InvalidUpload

_VECTOR = re.compile(r"^(?P<name>.+)_(?P<index>\d+)$")
MAX_FIELD = 1 << 20


@dataclass(frozen=True)
class CsvSummary:
    num_examples: int
    arrays: dict[str, list[int]]  # full shapes, the example dimension first
    dtypes: dict[str, str]
    columns: dict[str, list[int]]  # array name -> its column positions, in order


def group_columns(header: list[str]) -> dict[str, list[int]]:
    """Array name -> column positions; ``x_0 … x_{k-1}`` form a vector named ``x``."""
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise InvalidUpload(f"the CSV header repeats column(s) {dupes}")
    vectors: dict[str, dict[int, int]] = {}
    groups: dict[str, list[int]] = {}
    for position, column in enumerate(header):
        if not column:
            raise InvalidUpload(f"column {position + 1} of the CSV header is empty")
        match = _VECTOR.match(column)
        if match and column not in ("sample_weights",):
            vectors.setdefault(match["name"], {})[int(match["index"])] = position
        else:
            groups[column] = [position]
    for name, indexed in vectors.items():
        if sorted(indexed) != list(range(len(indexed))):
            # Not a vector: scalar columns whose names end in digits (an output "dense_2").
            for index, position in indexed.items():
                groups[f"{name}_{index}"] = [position]
            continue
        if name in groups:
            raise InvalidUpload(f"column {name!r} is given both as a scalar and as {name}_<i>")
        groups[name] = [indexed[i] for i in range(len(indexed))]
    return dict(sorted(groups.items(), key=lambda item: item[1][0]))


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(MAX_FIELD)
    with path.open(newline="", encoding="utf-8") as f:
        yield from enumerate(csv.reader(f), start=1)


def inspect_csv(path: str | os.PathLike[str]) -> CsvSummary:
    """Columns, shapes and row count; refuses ragged rows and non-numeric values,
    naming the line and the column."""
    path = Path(path)
    try:
        rows = _rows(path)
        first = next(rows, None)
        if first is None:
            raise InvalidUpload("the CSV file is empty: it needs a header row")
        header = [h.strip() for h in first[1]]
        groups = group_columns(header)
        count = 0
        integral = [True] * len(header)
        for line, row in rows:
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidUpload(
                    f"CSV line {line} has {len(row)} fields; the header has {len(header)}"
                )
            for position, value in enumerate(row):
                try:
                    number = float(value)
                except ValueError:
                    raise InvalidUpload(
                        f"CSV line {line}, column {header[position]!r}: {value[:40]!r} "
                        "is not a number"
                    ) from None
                if not math.isfinite(number) or not number.is_integer():
                    integral[position] = False
            count += 1
    except UnicodeDecodeError as exc:
        raise InvalidUpload(f"the CSV file is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise InvalidUpload(f"the CSV file is malformed: {exc}") from exc
    if count == 0:
        raise InvalidUpload("the CSV file has a header but no rows")
    arrays, dtypes = {}, {}
    for name, positions in groups.items():
        arrays[name] = (
            [count]
            if len(positions) == 1 and name == header[positions[0]]
            else [
                count,
                len(positions),
            ]
        )
        dtypes[name] = "int64" if all(integral[p] for p in positions) else "float32"
    return CsvSummary(count, arrays, dtypes, groups)


def load_csv_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The whole CSV as arrays (float32), shaped as :func:`inspect_csv` reports."""
    summary = inspect_csv(path)
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype="float32", ndmin=2)
    return {
        name: table[:, positions[0]] if len(shape) == 1 else table[:, positions]
        for (name, positions), shape in zip(
            summary.columns.items(), summary.arrays.values(), strict=True
        )
    }
