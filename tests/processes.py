"""Every process the suite starts, stopped on every path and checked at the session's end.

A failing run once left an API and a Celery worker alive, re-parented to init, long after
pytest had exited. So:

- :func:`stop_group` stops a process with its whole process group (a worker's pool
  children, a launcher's servers): SIGTERM, then SIGKILL after a grace period;
- :func:`die_with_the_suite` prefixes a command so that the process gets SIGTERM if the
  pytest process dies without its fixtures' finalizers (a CI timeout's SIGKILL);
- :func:`record_spawns` records every process the pytest process starts
  (``subprocess.Popen``, whoever calls it: fixtures, launcher code, playwright), and
  :func:`survivors` lists those, their process groups and sessions, and the suite's
  descendants still alive: the session fails on them (tests/conftest.py).
"""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil

# pid -> the process's create_time (a pid reused by another process is not ours).
_spawned: dict[int, float] = {}


def record_spawns() -> None:
    """From now on, record each process this one starts."""
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
    ``start_new_session=True``): SIGTERM, SIGKILL after ``grace_s``; waits for it."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        except PermissionError:
            process.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.05)
    if process.poll() is None:
        process.wait(10)


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _ours(proc: psutil.Process, me: int) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE or proc.pid == me:
            return False
        if _spawned.get(proc.pid) == proc.create_time():
            return True
        # A spawned process's group or session (start_new_session) holds its children.
        leaders = (os.getpgid(proc.pid), os.getsid(proc.pid))
        return any(
            leader in _spawned and leader != os.getpgid(me) and leader != os.getsid(me)
            for leader in leaders
        )
    except (ProcessLookupError, psutil.Error):
        return False


def survivors() -> list[psutil.Process]:
    """Processes the suite started that are still alive (zombies excepted)."""
    me = os.getpid()
    found = {p.pid: p for p in psutil.Process(me).children(recursive=True)}
    for proc in psutil.process_iter():
        if proc.pid not in found and _ours(proc, me):
            found[proc.pid] = proc
    alive = []
    for proc in found.values():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


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
