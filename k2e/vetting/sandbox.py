"""Inspects an uploaded model or dataset file in a child process with CPU, memory and time limits.

libhdf5 parses a file's structure in C: a hostile file can crash it, make it spin or make
it allocate without bound. So neither the API nor the worker opens an upload itself:
``python -m k2e.vetting.sandbox`` does, under RLIMIT_CPU and RLIMIT_AS and a wall-clock timeout,
and answers in JSON on stdout. A child that dies or overruns while reading the file is
the file's fault (InvalidUpload); one that dies before it reads anything is the server's.
Datasets (npz, CSV, TFRecord) are read the same way, by the bounded readers of k2e/formats
(``inspect_dataset_file``), so the API's memory stays flat whatever is uploaded.
"""

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2e.custom_objects import registry
from k2e.errors import InvalidUpload
from k2e.formats.limits import ReadLimits
from k2e.vetting.configs import VetPolicy
from k2e.vetting.inspection import H5Summary

if TYPE_CHECKING:  # the child never needs pydantic-settings: it starts faster without
    from k2e.settings import Settings

log = logging.getLogger("k2e.vetting.sandbox")

READY = "k2e-sandbox: reading"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
# Where the k2e package lives: the child runs `-m k2e.vetting.sandbox` from there.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# Inspections at once per process: each child may use the whole memory limit.
_SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


DATASET_FORMATS = ("npz", "csv", "tfrecord")


@dataclass(frozen=True)
class DatasetSummary:
    """What the sandbox answers for a dataset: what DatasetInfo keeps of it."""

    num_examples: int
    arrays: dict[str, list[int]]
    dtypes: dict[str, str]


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 20
    memory_bytes: int = 1024**3
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: "Settings") -> "SandboxLimits":
        return cls(
            settings.inspect_cpu_s, settings.inspect_memory_bytes, settings.inspect_timeout_s
        )


def policy_for(settings: "Settings", mapped_names: Iterable[str] = ()) -> VetPolicy:
    """Registry names (plus config names a spec maps to registry entries), and Lambda
    layers only if the operator allows them."""
    return VetPolicy.of({*registry(settings.plugins), *mapped_names}, settings.allow_lambda)


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
    }
    return H5Summary.model_validate(_run(request, limits))


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
    answer = _run(request, limits)
    return DatasetSummary(
        num_examples=int(answer["num_examples"]),
        arrays={str(k): [int(d) for d in v] for k, v in answer["arrays"].items()},
        dtypes={str(k): str(v) for k, v in answer["dtypes"].items()},
    )


def _run(request: dict[str, Any], limits: SandboxLimits) -> dict[str, Any]:
    """Run the child on ``request`` under ``limits``; its summary, or InvalidUpload."""
    request = {**request, "cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        # One thread for numpy's BLAS keeps the child's address space small.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        # Never load an HDF5 filter plugin in the child.
        "HDF5_PLUGIN_PRELOAD": "::",
    }
    try:
        with _SLOTS:
            done = subprocess.run(
                [sys.executable, "-E", "-s", "-m", "k2e.vetting.sandbox"],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=limits.timeout_s,
                cwd=_PACKAGE_PARENT,
                env=env,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise InvalidUpload(
            f"inspecting the file took longer than {limits.timeout_s} s (wall clock); refused"
        ) from None
    return _answer(done, limits)


def _outcome(done: subprocess.CompletedProcess[bytes], limits: SandboxLimits) -> H5Summary:
    return H5Summary.model_validate(_answer(done, limits))


def _answer(done: subprocess.CompletedProcess[bytes], limits: SandboxLimits) -> dict[str, Any]:
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    started = bool(lines) and lines[0] == READY
    stderr = done.stderr.decode("utf-8", "replace")[-2000:]
    if not started and done.returncode != 0:
        log.error("inspection sandbox failed to start (exit %s): %s", done.returncode, stderr)
        raise RuntimeError(f"the inspection sandbox failed to start (exit {done.returncode})")
    answer: dict[str, Any] | None = None
    if len(lines) >= 2:
        try:
            answer = json.loads(lines[1])
        except ValueError:
            answer = None
    if done.returncode == 0 and isinstance(answer, dict):
        if answer.get("ok"):
            summary: dict[str, Any] = answer["summary"]
            return summary
        raise InvalidUpload(str(answer.get("detail")))
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        if name in ("SIGXCPU", "SIGKILL"):
            raise InvalidUpload(
                f"inspecting the file exceeded the CPU-time limit ({limits.cpu_seconds} s) "
                f"or the memory limit ({limits.memory_bytes} bytes) and was stopped ({name})"
            )
        raise InvalidUpload(f"the file reader crashed ({name}) while inspecting the file; refused")
    log.warning("inspection sandbox exited %s: %s", done.returncode, stderr)
    raise InvalidUpload(f"the file could not be inspected (the reader exited {done.returncode})")


def _limit(cpu_seconds: int, memory_bytes: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + 1 + cpu_seconds  # imports are not the file's
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # the child writes no files


def main() -> int:
    """The child: read the request on stdin, apply the limits, inspect, answer in JSON."""
    request = json.loads(sys.stdin.buffer.read())
    from k2e.formats.csvdata import inspect_csv
    from k2e.formats.examples import inspect_tfrecord
    from k2e.formats.npz import inspect_npz
    from k2e.vetting.inspection import inspect_h5
    from k2e.vetting.keras_archive import inspect_keras

    _limit(int(request["cpu_seconds"]), int(request["memory_bytes"]))
    print(READY, flush=True)
    answer: dict[str, Any]
    try:
        if request.get("kind") == "dataset":
            readers: dict[str, Callable[..., Any]] = {
                "npz": inspect_npz,
                "csv": inspect_csv,
                "tfrecord": inspect_tfrecord,
            }
            found = readers[request["format"]](
                request["path"], ReadLimits(**request["read_limits"])
            )
            summary = {
                "num_examples": found.num_examples,
                "arrays": found.arrays,
                "dtypes": found.dtypes,
            }
        else:
            policy = VetPolicy.of(request["custom_names"], bool(request["allow_lambda"]))
            inspect = inspect_keras if request["format"] == "keras" else inspect_h5
            summary = inspect(request["path"], policy).model_dump(mode="json")
        answer = {"ok": True, "summary": summary}
    except InvalidUpload as exc:
        answer = {"ok": False, "detail": exc.detail}
    except MemoryError:
        answer = {
            "ok": False,
            "detail": f"inspecting the file needed more than {request['memory_bytes']} bytes",
        }
    except Exception as exc:  # the file's fault: it is the only input
        answer = {"ok": False, "detail": f"the file could not be read ({type(exc).__name__})"}
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
