"""Vets an HDF5 file's structure with h5py, reading metadata only.

Keras reads every dataset of a model's weights. HDF5 lets a file borrow data from other
files (external links, external storage, virtual datasets), load filter plugins, and
declare datasets far larger than the bytes it holds (unwritten chunks read back as fill
values): a small upload could make the worker read server files or allocate terabytes.
All of that is refused, naming the object's path.
"""

from math import prod
from typing import Any

import h5py

from k2e.errors import InvalidUpload

# HDF5's built-in filters and h5py's lzf; any other id makes libhdf5 load a plugin library.
BUILTIN_FILTERS = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}
# Declared dataset bytes may exceed the file size this much (HDF5's own compression),
# and by a little more for small files.
SIZE_RATIO = 8
SIZE_SLACK = 1 << 20
MAX_OBJECTS = 100_000


def declared_bytes(dataset: h5py.Dataset) -> int:
    shape = dataset.shape
    return prod(shape) * dataset.dtype.itemsize if shape is not None else 0


def vet_h5_structure(h5: h5py.File, file_size: int, what: str = "HDF5 file") -> None:
    """Raise InvalidUpload if the file reaches outside itself or declares far more data
    than ``file_size`` bytes can hold."""

    def refuse(name: str, why: str) -> InvalidUpload:
        return InvalidUpload(f"{what}: '/{name}' {why}")

    # h5py's visitors stop at the first callback that returns a value; exceptions raised
    # inside one come out as SystemError, so the callbacks return what is wrong instead.
    soft: list[tuple[str, str]] = []
    links = 0

    def visit_link(name: str, link: Any) -> InvalidUpload | None:
        nonlocal links
        links += 1
        if links > MAX_OBJECTS:
            return InvalidUpload(f"{what}: more than {MAX_OBJECTS} links; not a Keras model")
        if isinstance(link, h5py.ExternalLink):
            return refuse(
                name,
                f"is an external link to {link.filename!r}:{link.path!r}; "
                "a model file may not refer to other files",
            )
        if isinstance(link, h5py.SoftLink):
            soft.append((name, link.path))
        elif not isinstance(link, h5py.HardLink):
            return refuse(name, f"is a link of unsupported type {type(link).__name__}")
        return None

    problem = h5.visititems_links(visit_link)
    if problem is not None:
        raise problem
    # No external link exists now, so resolving a soft link stays inside the file.
    for name, target in soft:
        try:
            found = h5.get(name)
        except (KeyError, OSError, RuntimeError, ValueError):
            found = None
        if found is None:
            raise refuse(
                name, f"is a soft link to {target!r}, which resolves to no object inside this file"
            )

    datasets: list[tuple[str, int]] = []

    def visit_object(name: str, obj: Any) -> InvalidUpload | None:
        if not isinstance(obj, h5py.Dataset):
            return None
        if obj.is_virtual:
            return refuse(name, "is a virtual dataset (its data lives in other files)")
        if obj.external:
            files = sorted({entry[0] for entry in obj.external})
            return refuse(name, f"stores its data in external files {files}")
        plist = obj.id.get_create_plist()
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in BUILTIN_FILTERS:
                return refuse(name, f"uses HDF5 filter {code}, which would load a plugin library")
        datasets.append((name, declared_bytes(obj)))
        return None

    problem = h5.visititems(visit_object)
    if problem is not None:
        raise problem
    allowed = SIZE_RATIO * file_size + SIZE_SLACK
    total = sum(size for _, size in datasets)
    if total > allowed:
        name, size = max(datasets, key=lambda item: item[1])
        dataset = h5[name]
        raise refuse(
            name,
            f"declares {size} bytes (shape {dataset.shape} × {dataset.dtype.itemsize}-byte "
            f"{dataset.dtype}); the file's datasets declare {total} bytes in all, but the "
            f"file holds {file_size} bytes",
        )
