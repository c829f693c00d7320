"""Every process the suite starts, stopped on every path and checked at the session's end.

A failing run once left an API and a Celery worker alive, re-parented to init, long after
pytest had exited. So:

- :func:`stop_group` stops a process with its whole process group (a worker's pool
  children, a launcher's servers): SIGTERM, then SIGKILL after a grace period;
- :func:`die_with_the_suite` prefixes a command so that the process gets SIGTERM if the
  pytest process dies without its fixtures' finalizers (a CI timeout's SIGKILL);
- :func:`record_spawns` records every process the pytest process starts
  (``subprocess.Popen``, whoever calls it: fixtures, launcher code, playwright) and marks
  the environment they inherit; :func:`survivors` lists those, the marked processes and
  the suite's descendants still alive: the session fails on them (tests/conftest.py).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil

# pid -> the process's create_time (a pid reused by another process is not ours).
_spawned: dict[int, float] = {}
# In the environment of every process the suite starts (they pass os.environ on), so that
# their descendants are found even once re-parented to init.
SESSION_VARIABLE = "K2E_TEST_SESSION_MARK"
_session = f"{os.getpid()}-{uuid.uuid4().hex}"


def record_spawns() -> None:
    """From now on, record each process this one starts (and mark their environment)."""
    os.environ[SESSION_VARIABLE] = _session
    popen_init: Callable[..., None] = subprocess.Popen.__init__
    if getattr(popen_init, "k2e_records", False):
        return

    def init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        popen_init(self, *args, **kwargs)
        try:
            _spawned[self.pid] = psutil.Process(self.pid).create_time()
        except psutil.Error:
            pass  # already gone

    init.k2e_records = True  # type: ignore[attr-defined]
    subprocess.Popen.__init__ = init  # type: ignore[method-assign]


def die_with_the_suite(command: list[str]) -> list[str]:
    """``command``, run so that it gets SIGTERM when its parent dies (Linux's parent-death
    signal, set by util-linux's setpriv) and keeps it across exec; unchanged without setpriv."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def stop_group(process: subprocess.Popen[Any], grace_s: float = 15) -> None:
    """Stop ``process`` and every process of its group (it must lead one:
    ``start_new_session=True``): SIGTERM, SIGKILL after ``grace_s``; waits for it.

    The group is signalled by its id only while its leader is not yet reaped (its pid, so
    the group's id, cannot have been reused by then); members seen then are signalled by
    identity afterwards (psutil checks a pid's start time before signalling it)."""
    members: set[psutil.Process] = set()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if process.poll() is None:
            members |= _members(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        for member in members:
            with contextlib.suppress(psutil.Error):
                member.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not any(_running(m) for m in members):
                return
            time.sleep(0.05)
    process.wait(10)


def _members(pgid: int) -> set[psutil.Process]:
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if proc.pid != pgid and os.getpgid(proc.pid) == pgid:
                found.add(proc)
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ours(proc: psutil.Process) -> bool:
    """Started by this suite: a process it spawned (the same pid and start time: pids are
    reused), or one that carries the session's mark in its environment (their children,
    re-parented or not). Never another run's or another user's process."""
    try:
        if _spawned.get(proc.pid) == proc.create_time():
            return True
        return proc.environ().get(SESSION_VARIABLE) == _session
    except (psutil.Error, OSError):
        return False


def survivors() -> list[psutil.Process]:
    """Processes the suite started that are still alive (zombies excepted)."""
    me = os.getpid()
    found = {p.pid: p for p in psutil.Process(me).children(recursive=True)}
    for proc in psutil.process_iter():
        if proc.pid not in found and proc.pid != me and _ours(proc):
            found[proc.pid] = proc
    return [proc for proc in found.values() if _running(proc)]


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:300]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=10)
