"""What an ``.npz`` dataset holds, read from its member headers without loading the arrays."""

import math
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from k2e.errors import InvalidUpload
from k2e.formats.read_limits import ReadLimits


@dataclass(frozen=True)
class NpzSummary:
    num_examples: int
    arrays: dict[str, list[int]]  # full shapes, the example dimension first
    dtypes: dict[str, str]


def _header(member: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` member's header declares."""
    try:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidUpload(f"array '{name}' is not a readable .npy array: {exc}") from exc
    return shape, dtype


def check_directory(archive: zipfile.ZipFile, limits: ReadLimits) -> None:
    """Refuse, from the zip directory alone, members that inflate past K2E_MAX_INFLATED_BYTES
    (together) or K2E_MAX_INFLATION_RATIO (each). zipfile never inflates a member past the
    size its directory entry declares, so these bounds hold while reading too."""
    total = 0
    for info in archive.infolist():
        total += info.file_size
        limits.check_inflation(info.file_size, info.compress_size, f"member '{info.filename}'")
    if total > limits.max_inflated_bytes:
        raise InvalidUpload(
            f"the .npz members inflate to {total} bytes, past {limits.max_inflated_bytes} "
            "(K2E_MAX_INFLATED_BYTES); refused"
        )


def inspect_npz(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> NpzSummary:
    """Shapes, dtypes and example count of an ``.npz`` file; raises InvalidUpload if unusable,
    if its members inflate past ``limits`` or declare more array bytes than they hold."""
    limits = limits or ReadLimits()
    arrays: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            check_directory(archive, limits)
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise InvalidUpload(f"member '{info.filename}' is not an .npy array")
                name = info.filename[: -len(".npy")]  # may contain dots: sample_weights.d
                with archive.open(info) as member:
                    shape, dtype = _header(member, name)
                    held = info.file_size - member.tell()
                if dtype.hasobject:
                    # Object arrays are pickles: loading one could run arbitrary code.
                    raise InvalidUpload(
                        f"array '{name}' has dtype object (pickled data), "
                        "which is refused; store numeric arrays"
                    )
                declared = math.prod(shape) * dtype.itemsize
                if declared > held:
                    raise InvalidUpload(
                        f"array '{name}' declares {declared} bytes ({list(shape)} of {dtype}) "
                        f"but its member holds {held}: truncated or lying"
                    )
                if not shape:
                    raise InvalidUpload(
                        f"array '{name}' is 0-d: every array needs a first "
                        "dimension, one entry per example"
                    )
                arrays[name], dtypes[name] = list(shape), str(dtype)
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidUpload(f"not an .npz (zip) file: {exc}") from exc
    if not arrays:
        raise InvalidUpload("the .npz file holds no arrays")
    first, *others = arrays
    for name in others:
        if arrays[name][0] != arrays[first][0]:
            raise InvalidUpload(
                f"arrays '{first}' and '{name}' differ in their first (example) dimension: "
                f"'{first}' has {arrays[first][0]}, '{name}' has {arrays[name][0]}"
            )
    return NpzSummary(arrays[first][0], arrays, dtypes)


def load_npz_arrays(
    path: str | os.PathLike[str], limits: ReadLimits | None = None
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, refusing pickled (object) arrays and, before loading
    anything, whatever :func:`inspect_npz` refuses (inflation past ``limits``, arrays
    declaring more bytes than their member holds)."""
    if not zipfile.is_zipfile(path):  # np.load would read a bare .npy (or pickle) instead
        raise InvalidUpload("not an .npz (zip) file")
    inspect_npz(path, limits)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidUpload(f"cannot load the .npz file: {exc}") from exc


# Bytes read per array and chunk: large enough that reading is not per-example Python
# work, small enough that a worker holds a few MiB of a dataset of any size.
CHUNK_BYTES = 4 * 1024 * 1024


def iter_npz_chunks(
    path: str | os.PathLike[str], names: list[str], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[dict[str, np.ndarray]]:
    """The named arrays of an ``.npz`` file, a run of examples at a time, in order.

    Each member is read sequentially through the zip (stored or deflated alike), so a file
    of any size streams with a few MiB held; the caller checked the file with
    :func:`inspect_npz` first. Only a Fortran-ordered member (``np.save`` of a transposed
    array) is read whole, since its examples are not contiguous.
    """
    with zipfile.ZipFile(path) as archive:
        readers = [_MemberReader(archive, name) for name in names]
        try:
            rows = chunk_rows(sum(r.example_bytes for r in readers), chunk_bytes)
            while True:
                chunk = {r.name: r.read(rows) for r in readers}
                if not len(next(iter(chunk.values()))):
                    return
                yield chunk
        finally:
            for reader in readers:
                reader.close()


def chunk_rows(example_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Examples per chunk of :func:`iter_npz_chunks`, for examples of ``example_bytes``
    (all the arrays read together)."""
    return max(1, chunk_bytes // max(1, example_bytes))


class _MemberReader:
    """Reads one ``.npy`` member of an open zip, ``rows`` examples at a time."""

    def __init__(self, archive: zipfile.ZipFile, name: str) -> None:
        self.name = name
        self.member = archive.open(f"{name}.npy")
        version = npy_format.read_magic(self.member)
        if version == (1, 0):
            shape, fortran, self.dtype = npy_format.read_array_header_1_0(self.member)
        else:
            shape, fortran, self.dtype = npy_format.read_array_header_2_0(self.member)
        self.example_shape = tuple(shape[1:])
        self.example_bytes = math.prod(self.example_shape) * self.dtype.itemsize
        self.left = shape[0]
        self.whole: np.ndarray | None = None
        if fortran and len(shape) > 1:
            data = self.member.read(math.prod(shape) * self.dtype.itemsize)
            array = np.frombuffer(data, self.dtype).reshape(shape, order="F")
            self.whole = np.ascontiguousarray(array)

    def read(self, rows: int) -> np.ndarray:
        rows = min(rows, self.left)
        self.left -= rows
        if self.whole is not None:
            done = len(self.whole) - self.left
            return self.whole[done - rows : done]
        data = self.member.read(rows * self.example_bytes)
        if len(data) != rows * self.example_bytes:
            raise InvalidUpload(f"array '{self.name}' ends early: the file changed or is cut")
        return np.frombuffer(data, self.dtype).reshape(rows, *self.example_shape)

    def close(self) -> None:
        self.member.close()
