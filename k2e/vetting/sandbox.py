"""Inspects an uploaded model file in a child process with CPU, memory and time limits.

libhdf5 parses a file's structure in C: a hostile file can crash it, make it spin or make
it allocate without bound. So neither the API nor the worker opens an upload itself:
``python -m k2e.vetting.sandbox`` does, under RLIMIT_CPU and RLIMIT_AS and a wall-clock timeout,
and answers in JSON on stdout. A child that dies or overruns while reading the file is
the file's fault (InvalidUpload); one that dies before it reads anything is the server's.

Datasets (npz, CSV, TFRecord) are read the same way, by the bounded readers of k2e/formats
(``inspect_dataset_file``), so the API's memory stays flat whatever is uploaded.

Confinement of the child on Linux (:func:`confine`, before it reads the file; each step
is applied where the machine allows it and the child reports which ones were, which the
parent logs once):

- environment: cleared (only PATH, LANG and thread/plugin variables are passed);
- limits: RLIMIT_CPU, RLIMIT_AS, no core files, no file writes (RLIMIT_FSIZE=0) and a
  wall-clock timeout;
- network: a new, empty network namespace (``unshare(CLONE_NEWNET)`` through libc; needs
  root or unprivileged user namespaces): no interface but a down loopback, so no TCP or
  UDP connection to anywhere, the service's own ports included;
- the service's files, when the child runs as root: a private mount namespace in which
  the data folder (``K2E_DATA_DIR``: the admin key file, the SQLite job store, every
  tenant's uploads and models), the SQLite file's folder and /tmp are covered by empty
  read-only tmpfs mounts; the child reads the upload alone, bind-mounted at
  ``/tmp/<name>`` from a descriptor opened before the folders were covered;
- what it reads, once confined: the upload alone. It loads its modules and data first
  and then refuses any other import or open (k2e.vetting.sealing): as ``nobody`` it could
  not read a private folder holding k2e or its venv;
- privileges, when the child runs as root: it then becomes ``nobody`` (uid/gid 65534,
  no supplementary groups) before reading, so it cannot read root's 0600 files nor
  undo the mounts. Without a mount namespace (a container without CAP_SYS_ADMIN) it
  still does when the upload is reachable by any user, the data folder then staying
  visible: 0600 files (the admin key) are safe, world-readable ones (an SQLite store
  created under umask 022) are not. Skipped (logged) when the upload is not readable.

It does not confine: reads of other world-readable files on the machine (/etc, the
Python installation), the filesystem view when the service does not run as root (the
child can read what the service's user can read, but has no network), system calls in
general (no seccomp filter), or other processes of the same user (no PID namespace).
"""

import ctypes
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
from k2e.errors import InvalidUpload, Unavailable
from k2e.formats.limits import ReadLimits
from k2e.vetting.configs import VetPolicy
from k2e.vetting.inspection import H5Summary
from k2e.vetting.sealing import Seal, prepare

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
_CONFINED = "k2e-sandbox: confined: "
_LATE = "k2e-sandbox: needed after confinement: "
_confinement_logged: set[str] = set()
_faults_logged: set[str] = set()


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
    # Folders the child must not see (the data folder: keys, job store, uploads).
    hidden: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: "Settings") -> "SandboxLimits":
        hidden = [str(settings.data_dir.resolve())]
        url = settings.sqlalchemy_url
        if url.startswith("sqlite:///"):
            hidden.append(str(Path(url[len("sqlite:///") :]).parent))
        return cls(
            settings.inspect_cpu_s,
            settings.inspect_memory_bytes,
            settings.inspect_timeout_s,
            tuple(dict.fromkeys(hidden)),
        )


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
    try:
        done = _run_child(request, limits)
    except subprocess.TimeoutExpired:
        raise InvalidUpload(
            f"inspecting the file took longer than {limits.timeout_s} s (wall clock); refused"
        ) from None
    return _outcome(done, limits)


def _run_child(
    request: dict[str, Any], limits: SandboxLimits
) -> subprocess.CompletedProcess[bytes]:
    """Run the sandbox child on ``request``; raises subprocess.TimeoutExpired."""
    request = {**request, "hidden": list(limits.hidden)}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        # One thread for numpy's BLAS keeps the child's address space small.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        # Never load an HDF5 filter plugin in the child.
        "HDF5_PLUGIN_PRELOAD": "::",
    }
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
    for line in done.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(_CONFINED) and line not in _confinement_logged:
            _confinement_logged.add(line)
            log.info("inspection sandbox %s", line[len("k2e-sandbox: ") :])
        elif line.startswith(_LATE) and line not in _confinement_logged:
            # Refused even where the inspection went on without it: load it up front.
            _confinement_logged.add(line)
            log.warning("inspection sandbox child %s", line[len("k2e-sandbox: ") :])
    return done


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
    done = _run_child(request, limits)
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"probe failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    answer: dict[str, Any] = json.loads(lines[1])
    return answer


def _outcome(done: subprocess.CompletedProcess[bytes], limits: SandboxLimits) -> dict[str, Any]:
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    started = bool(lines) and lines[0] == READY
    stderr = done.stderr.decode("utf-8", "replace")[-2000:]
    if not started and done.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or ["no output"]
        log.error("inspection sandbox failed to start (exit %s): %s", done.returncode, stderr)
        raise Unavailable(
            f"the inspection sandbox failed to start (exit {done.returncode}): {last[0]}; "
            "no upload can be inspected until an operator fixes this"
        )
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
        if answer.get("fault"):
            raise Unavailable(sandbox_fault(str(answer["fault"])))
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


def sandbox_fault(needed: str) -> str:
    """The answer for an inspection its child could not finish for want of something
    besides the upload: the server's fault, told as such (logged once)."""
    detail = (
        f"the inspection sandbox cannot work on this server: once confined (user nobody "
        f"when the API runs as root) its child could not load {needed}; the file was not "
        "judged. k2e loads what the child needs before confining it, so this is a k2e "
        "defect or a changed installation: an operator must look at the API's log"
    )
    if needed not in _faults_logged:
        _faults_logged.add(needed)
        log.error("%s", detail)
    return detail


def _limit(cpu_seconds: int, memory_bytes: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + 1 + cpu_seconds  # imports are not the file's
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # the child writes no files


_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_CLONE_USERNET = 0x10000000 | _CLONE_NEWNET  # with a user namespace, for non-root
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
_NOBODY = 65534


def confine(path: str, hidden: list[str]) -> tuple[str, list[str]]:
    """In the child, before it reads anything: the confinement the module docstring
    describes. Returns the path to read the file by, and what was confined."""
    libc = ctypes.CDLL(None, use_errno=True)
    done: list[str] = ["environment cleared", "rlimits"]

    def call(what: str, result: int) -> bool:
        if result == 0:
            return True
        done.append(f"no {what} ({os.strerror(ctypes.get_errno())})")
        return False

    if libc.unshare(_CLONE_NEWNET) == 0 or (
        os.geteuid() != 0 and libc.unshare(_CLONE_USERNET) == 0
    ):
        done.append("no network")
    else:
        done.append(f"network NOT confined ({os.strerror(ctypes.get_errno())})")
    if os.geteuid() != 0:
        done.append("files: the service user's view (not root: no mount namespace)")
        return path, done
    namespace = call("mount namespace", libc.unshare(_CLONE_NEWNS)) and call(
        "private mounts", libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
    )
    # Opened in the new namespace (a bind mount's source must be of it), before hiding.
    fd = os.open(path, os.O_RDONLY)
    scratch = _scratch_mountpoint()
    shown = os.path.join(scratch or "/tmp", os.path.basename(path))
    if namespace:
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        tmpfs = b"size=64k,mode=0755"
        remount = _MS_REMOUNT | _MS_RDONLY | flags
        for folder in hidden:
            if os.path.isdir(folder) and call(
                f"hiding {folder}", libc.mount(b"tmpfs", folder.encode(), b"tmpfs", flags, tmpfs)
            ):
                libc.mount(None, folder.encode(), None, remount, None)
                done.append(f"hidden {folder}")
        # The upload alone, under a fresh /tmp that any user can reach (the folders
        # above it may not be), bound from the descriptor opened above.
        if scratch is None:
            done.append("/tmp NOT hidden (k2e or Python lives under each scratch folder)")
        elif call(
            f"fresh {scratch}", libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", flags, tmpfs)
        ):
            os.close(os.open(shown, os.O_WRONLY | os.O_CREAT, 0o444))
            source = f"/proc/self/fd/{fd}".encode()
            if call(f"showing {shown}", libc.mount(source, shown.encode(), None, _MS_BIND, None)):
                libc.mount(None, scratch.encode(), None, remount, None)
                done.append(f"hidden {scratch}")
                path = shown
    if path != shown and not _reachable_by_anyone(path):
        done.append("stays root (the upload is not reachable by other users)")
    elif os.fstat(fd).st_mode & 0o004:
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
        done.append("user nobody")
    else:
        done.append("stays root (the upload is not world-readable)")
    os.close(fd)
    return path, done


def _scratch_mountpoint() -> str | None:
    """The folder a fresh tmpfs covers to show the upload alone: /tmp, unless the code the
    child still imports (k2e, the Python installation, the venv) lives under it (a
    checkout in /tmp), then /var/tmp or /mnt; None when each holds code."""
    code = {
        os.path.realpath(p)
        for p in (
            sys.prefix,
            sys.base_prefix,
            str(_PACKAGE_PARENT),
            os.path.dirname(sys.executable),
        )
    }
    for candidate in ("/tmp", "/var/tmp", "/mnt"):
        if os.path.isdir(candidate) and not any(
            root == candidate or root.startswith(candidate + "/") for root in code
        ):
            return candidate
    return None


def _reachable_by_anyone(path: str) -> bool:
    """Every folder above ``path`` searchable by others, the file readable by others."""
    try:
        if not os.stat(path).st_mode & 0o004:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _probe(probe: dict[str, Any]) -> dict[str, Any]:
    """What a confined child can reach: a TCP connection, the named files."""
    import socket

    found: dict[str, Any] = {"connected": False, "read": []}
    host, port = probe["connect"]
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            found["connected"] = True
    except OSError as exc:
        found["connect_error"] = str(exc)
    for secret in probe["secrets"]:
        try:
            with open(secret, "rb") as f:
                f.read(1)
            found["read"].append(secret)
        except OSError:
            pass
    return found


def main() -> int:
    """The child: read the request on stdin, apply the limits, inspect, answer in JSON."""
    request = json.loads(sys.stdin.buffer.read())
    prepare()
    from k2e.formats.csvdata import inspect_csv
    from k2e.formats.examples import inspect_tfrecord
    from k2e.formats.npz import inspect_npz
    from k2e.vetting.inspection import inspect_h5
    from k2e.vetting.keras_archive import inspect_keras

    request["path"], confined = confine(request["path"], list(request.get("hidden", [])))
    print(_CONFINED + ", ".join(confined), file=sys.stderr, flush=True)
    seal = Seal()
    if "probe" not in request:  # the probe tries to read what it must not
        seal.close([request["path"]])
    _limit(int(request["cpu_seconds"]), int(request["memory_bytes"]))
    print(READY, flush=True)
    if "probe" in request:
        print(json.dumps({**_probe(request["probe"]), "confined": confined}), flush=True)
        return 0
    answer: dict[str, Any]
    try:
        summary: dict[str, Any]
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
            policy = VetPolicy.of(
                request["custom_names"],
                bool(request["allow_lambda"]),
                bool(request.get("defer_custom")),
            )
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
    fault = seal.fault()
    if fault is not None:
        print(f"{_LATE}{fault}", file=sys.stderr, flush=True)
        if not answer["ok"]:  # not the file's fault: the server's
            answer = {"ok": False, "fault": fault}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
