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
from k2e.formats.read_limits import ReadLimits

# A vector's index has at most 9 digits and no leading zero; any other numeric suffix
# (a huge one included) is just part of a scalar column's name.
_VECTOR = re.compile(r"(?P<name>.+)_(?P<index>0|[1-9][0-9]{0,8})")


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
        match = _VECTOR.fullmatch(column)
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
    """Columns, shapes, dtypes and row count; refuses ragged rows, naming the line, and files
    past ``limits`` (columns, field size). A column is ``int64`` when every value is an
    integer, ``float32`` when every value is a number, else ``string``; a vector's dtype is
    its columns' widest."""
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
        numeric = [True] * len(header)
        for line, row in rows:
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidUpload(
                    f"CSV line {line} has {len(row)} fields; the header has {len(header)}"
                )
            for position, value in enumerate(row):
                if not numeric[position]:
                    continue
                try:
                    number = float(value)
                except ValueError:
                    numeric[position] = integral[position] = False  # a text column
                    continue
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
        if not all(numeric[p] for p in positions):
            dtypes[name] = "string"
        elif all(integral[p] for p in positions):
            dtypes[name] = "int64"
        else:
            dtypes[name] = "float32"
    return CsvSummary(count, arrays, dtypes, groups)


def iter_csv_chunks(
    path: str | os.PathLike[str],
    summary: CsvSummary,
    limits: ReadLimits | None = None,
    rows: int = 1024,
) -> Iterator[dict[str, np.ndarray]]:
    """The CSV's arrays as text (``str`` arrays shaped as ``summary`` says), ``rows``
    examples at a time, in order: the reader turns each into the dtype its model input
    takes. Streams the file, so a CSV of any size is held a chunk at a time."""
    limits = limits or ReadLimits()
    columns = summary.columns
    scalar = {name: len(shape) == 1 for name, shape in summary.arrays.items()}
    table: list[list[str]] = []

    def chunk() -> dict[str, np.ndarray]:
        text = np.array(table, dtype=str).reshape(len(table), -1)
        return {
            name: text[:, positions[0]] if scalar[name] else text[:, positions]
            for name, positions in columns.items()
        }

    lines = _rows(Path(path), limits)
    next(lines, None)  # the header
    for _, row in lines:
        if not row:
            continue
        table.append(row)
        if len(table) == rows:
            yield chunk()
            table = []
    if table:
        yield chunk()
