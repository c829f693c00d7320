"""CSV datasets: a header, then one row per example.

A column per scalar input/output (``y``), or ``name_0 … name_{k-1}`` columns for a
vector of length k (``input_a_0 … input_a_15``). Meant for small experiments: the
worker loads a CSV whole.
"""

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from k2e.errors import InvalidUpload
from k2e.formats.limits import ReadLimits

# A vector's index has at most 9 digits and no leading zero; any other numeric suffix
# (a huge one included) is just part of a scalar column's name.
_VECTOR = re.compile(r"^(?P<name>.+)_(?P<index>0|[1-9]\d{0,8})$")


@dataclass(frozen=True)
class CsvSummary:
    num_examples: int
    arrays: dict[str, list[int]]  # full shapes, the example dimension first
    dtypes: dict[str, str]
    columns: dict[str, list[int]]  # array name -> its column positions, in order


def group_columns(header: list[str]) -> dict[str, list[int]]:
    """Array name -> column positions; ``x_0 … x_{k-1}`` form a vector named ``x``."""
    if len(set(header)) != len(header):
        dupes = sorted(h for h, n in Counter(header).items() if n > 1)[:20]
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
            for position in indexed.values():
                groups[header[position]] = [position]
            continue
        if name in groups:
            raise InvalidUpload(f"column {name!r} is given both as a scalar and as {name}_<i>")
        groups[name] = [indexed[i] for i in range(len(indexed))]
    return dict(sorted(groups.items(), key=lambda item: item[1][0]))


def _lines(f: IO[str], limits: ReadLimits) -> Iterator[str]:
    """Physical lines, each read with a bound (``limits.max_csv_line_chars``): a longer one
    is refused before it is held, naming the column or the field limit it must pass."""
    cap = limits.max_csv_line_chars
    while line := f.readline(cap + 1):
        if len(line) > cap:
            if line.count(",") >= limits.max_csv_columns:
                raise InvalidUpload(
                    f"a CSV line has more than {limits.max_csv_columns} columns "
                    "(K2E_MAX_CSV_COLUMNS)"
                )
            raise InvalidUpload(
                f"a CSV line is longer than {cap} characters: a field past "
                f"{limits.max_csv_field_bytes} bytes (K2E_MAX_CSV_FIELD_BYTES)"
            )
        yield line


def _rows(path: Path, limits: ReadLimits) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(limits.max_csv_field_bytes)
    with path.open(newline="", encoding="utf-8") as f:
        yield from enumerate(csv.reader(_lines(f, limits)), start=1)


def inspect_csv(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> CsvSummary:
    """Columns, shapes and row count; refuses ragged rows and non-numeric values,
    naming the line and the column, and files past ``limits`` (columns, field size)."""
    path = Path(path)
    limits = limits or ReadLimits()
    try:
        rows = _rows(path, limits)
        first = next(rows, None)
        if first is None:
            raise InvalidUpload("the CSV file is empty: it needs a header row")
        if len(first[1]) > limits.max_csv_columns:
            raise InvalidUpload(
                f"the CSV header has {len(first[1])} columns, more than "
                f"{limits.max_csv_columns} (K2E_MAX_CSV_COLUMNS)"
            )
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
                        f"CSV line {line}, column {header[position][:80]!r}: {value[:40]!r} "
                        "is not a number"
                    ) from None
                if not math.isfinite(number) or not number.is_integer():
                    integral[position] = False
            count += 1
    except UnicodeDecodeError as exc:
        raise InvalidUpload(f"the CSV file is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise InvalidUpload(
                f"a CSV field is larger than {limits.max_csv_field_bytes} bytes "
                "(K2E_MAX_CSV_FIELD_BYTES)"
            ) from exc
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


def load_csv_arrays(
    path: str | os.PathLike[str], limits: ReadLimits | None = None
) -> dict[str, np.ndarray]:
    """The whole CSV as arrays (float32), shaped as :func:`inspect_csv` reports (which
    refuses it first if it passes ``limits``)."""
    summary = inspect_csv(path, limits)
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype="float32", ndmin=2)
    return {
        name: table[:, positions[0]] if len(shape) == 1 else table[:, positions]
        for (name, positions), shape in zip(
            summary.columns.items(), summary.arrays.values(), strict=True
        )
    }
