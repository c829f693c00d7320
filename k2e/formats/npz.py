"""What an ``.npz`` dataset holds, read from its member headers without loading the arrays."""

import os
import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from k2e.errors import InvalidUpload


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


def inspect_npz(path: str | os.PathLike[str]) -> NpzSummary:
    """Shapes, dtypes and example count of an ``.npz`` file; raises InvalidUpload if unusable."""
    arrays: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise InvalidUpload(f"member '{info.filename}' is not an .npy array")
                name = info.filename[: -len(".npy")]  # may contain dots: sample_weights.d
                with archive.open(info) as member:
                    shape, dtype = _header(member, name)
                if dtype.hasobject:
                    # Object arrays are pickles: loading one could run arbitrary code.
                    raise InvalidUpload(
                        f"array '{name}' has dtype object (pickled data), "
                        "which is refused; store numeric arrays"
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


def load_npz_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, refusing pickled (object) arrays."""
    if not zipfile.is_zipfile(path):  # np.load would read a bare .npy (or pickle) instead
        raise InvalidUpload("not an .npz (zip) file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidUpload(f"cannot load the .npz file: {exc}") from exc
