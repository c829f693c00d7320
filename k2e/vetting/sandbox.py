"""Inspects an uploaded file in a child process with CPU, memory and time limits: the
API's and the worker's way to read an upload (inspect_model_file, inspect_dataset_file).

libhdf5 parses a file's structure in C: a hostile file can crash it, make it spin or make
it allocate without bound. So neither the API nor the worker opens an upload itself: a
child (k2e.vetting.child, started by k2e.vetting.runner) does, under RLIMIT_CPU and
RLIMIT_AS and a wall-clock timeout, and answers in JSON on stdout. A child that dies or
overruns while reading the file is the file's fault (InvalidUpload); one that dies before
it reads anything is the server's.

Datasets (npz, CSV, TFRecord) are read the same way, by the bounded readers of k2e/formats
(``inspect_dataset_file``), so the API's memory stays flat whatever is uploaded.

Before it reads, the child confines itself on Linux (k2e.vetting.confinement: cleared
environment, rlimits, no network, the service's folders hidden, user nobody; and what it
does not confine) and then refuses any import or open but the upload's
(k2e.vetting.sealing).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2e.custom_registry import registry
from k2e.errors import InvalidUpload
from k2e.formats.read_limits import ReadLimits
from k2e.vetting.configs import VetPolicy
from k2e.vetting.inspection import H5Summary
from k2e.vetting.runner import SandboxLimits, run, run_child

if TYPE_CHECKING:  # for annotations only
    from k2e.settings import Settings

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
DATASET_FORMATS = ("npz", "csv", "tfrecord")


@dataclass(frozen=True)
class DatasetSummary:
    """What the sandbox answers for a dataset: what DatasetInfo keeps of it."""

    num_examples: int
    arrays: dict[str, list[int]]
    dtypes: dict[str, str]


def policy_for(
    settings: "Settings", mapped_names: Iterable[str] = (), defer_custom: bool = False
) -> VetPolicy:
    """Registry names (plus config names a spec maps to registry entries), and Lambda
    layers only if the operator allows them; ``defer_custom`` for an upload, whose other
    class names a spec must map (VetPolicy)."""
    return VetPolicy.of(
        {*registry(settings.plugins), *mapped_names}, settings.allow_lambda, defer_custom
    )


def _has_signature(path: Path, fmt: str) -> bool:
    """The format's magic bytes, read in Python: garbage never reaches libhdf5 or a child."""
    try:
        with path.open("rb") as f:
            if fmt == "keras":
                return f.read(4) == ZIP_SIGNATURE
            # HDF5 looks for its superblock at 0, 512, 1024, 2048... (after a user block).
            size, offset = path.stat().st_size, 0
            while offset + len(HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def inspect_model_file(path: Path, fmt: str, policy: VetPolicy, limits: SandboxLimits) -> H5Summary:
    """Inspect an ``.h5`` (``fmt="h5"``) or ``.keras`` file in the sandbox."""
    if not _has_signature(path, fmt):
        raise InvalidUpload("not a .keras (zip) archive" if fmt == "keras" else "not an HDF5 file")
    request = {
        "kind": "model",
        "path": str(Path(path).resolve()),
        "format": fmt,
        "custom_names": sorted(policy.custom_names),
        "allow_lambda": policy.allow_lambda,
        "defer_custom": policy.defer_custom,
    }
    return H5Summary.model_validate(run(request, limits))


def inspect_dataset_file(
    path: Path, fmt: str, read_limits: ReadLimits, limits: SandboxLimits
) -> DatasetSummary:
    """Inspect an uploaded dataset (``fmt``: npz, csv or tfrecord) in the sandbox, its
    readers bounded by ``read_limits``: the API process never parses a dataset itself."""
    if fmt not in DATASET_FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}")
    request = {
        "kind": "dataset",
        "path": str(Path(path).resolve()),
        "format": fmt,
        "read_limits": read_limits.as_dict(),
    }
    answer = run(request, limits)
    return DatasetSummary(
        num_examples=int(answer["num_examples"]),
        arrays={str(k): [int(d) for d in v] for k, v in answer["arrays"].items()},
        dtypes={str(k): str(v) for k, v in answer["dtypes"].items()},
    )


def probe_confinement(
    path: Path, connect: tuple[str, int], secrets: list[str], limits: SandboxLimits
) -> dict[str, Any]:
    """For tests: a child confined exactly as an inspection's tries to open a TCP
    connection and to read ``secrets``; returns what it managed and what was confined."""
    request = {
        "probe": {"connect": list(connect), "secrets": secrets},
        "path": str(Path(path).resolve()),
        "format": "probe",
        "custom_names": [],
        "allow_lambda": False,
        "cpu_seconds": limits.cpu_seconds,
        "memory_bytes": limits.memory_bytes,
    }
    done = run_child(request, limits)
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"probe failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    answer: dict[str, Any] = json.loads(lines[1])
    return answer
