"""Starts the inspection child (k2e.vetting.child) and turns how it ended into an answer.

The child runs ``python -E -s -m k2e.vetting.child`` with a cleared environment, a
wall-clock timeout and at most one child per CPU (at least two) at once, each may use the
whole memory limit. :func:`outcome` reads its exit: a summary; InvalidUpload when the
file made it fail, overrun or crash; Unavailable when the child could not start or
needed something besides the upload once confined (the server's fault, logged once).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k2e.errors import InvalidUpload, Unavailable
from k2e.vetting.child import CONFINED, LATE, READY
from k2e.vetting.confinement import PACKAGE_PARENT

if TYPE_CHECKING:
    from k2e.settings import Settings

# The parent API's logger: operators know the sandbox's lines by it.
log = logging.getLogger("k2e.vetting.sandbox")

# Inspections at once per process: each child may use the whole memory limit.
_SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
_confinement_logged: set[str] = set()
_faults_logged: set[str] = set()


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


def run(request: dict[str, Any], limits: SandboxLimits) -> dict[str, Any]:
    """Run the child on ``request`` under ``limits``; its summary, or InvalidUpload."""
    request = {**request, "cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes}
    try:
        done = run_child(request, limits)
    except subprocess.TimeoutExpired:
        raise InvalidUpload(
            f"inspecting the file took longer than {limits.timeout_s} s (wall clock); refused"
        ) from None
    return outcome(done, limits)


def run_child(request: dict[str, Any], limits: SandboxLimits) -> subprocess.CompletedProcess[bytes]:
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
            [sys.executable, "-E", "-s", "-m", "k2e.vetting.child"],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=limits.timeout_s,
            cwd=PACKAGE_PARENT,
            env=env,
            check=False,
        )
    for line in done.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(CONFINED) and line not in _confinement_logged:
            _confinement_logged.add(line)
            log.info("inspection sandbox %s", line[len("k2e-sandbox: ") :])
        elif line.startswith(LATE) and line not in _confinement_logged:
            # Refused even where the inspection went on without it: load it up front.
            _confinement_logged.add(line)
            log.warning("inspection sandbox child %s", line[len("k2e-sandbox: ") :])
    return done


def outcome(done: subprocess.CompletedProcess[bytes], limits: SandboxLimits) -> dict[str, Any]:
    """The child's summary, or the error its exit means."""
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
