"""The worker's entry in the worker registry (k2e.jobs.workers), from its main process:
registered when the worker is ready, seen every ``worker_heartbeat_s`` from a thread
with the jobs its pool runs and its processes' memory, removed on a clean shutdown.
Registering asks the scheduler for a pass: the new slots may take waiting jobs."""

import logging
import os
import socket
import threading
from pathlib import Path

from celery import Celery

from k2e.db import make_engine
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.queueing import MEMBER_TASK, TRAIN_TASK, TaskSender
from k2e.jobs.workers import WorkerEntry, WorkerLoad, WorkerRegistry
from k2e.launcher.stack import gpu_visible
from k2e.settings import Settings
from k2e.tenancy.scope import ANY_TENANT
from k2e.version import __version__

log = logging.getLogger("k2e.registry")


class RegistryHeartbeat:
    def __init__(self, settings: Settings, celery: Celery, queues: list[str], slots: int) -> None:
        self.settings = settings
        self.engine = make_engine(settings.sqlalchemy_url)
        self.registry = WorkerRegistry(self.engine)
        node = socket.gethostname()
        accelerator = "gpu" if gpu_visible() else "cpu"
        self.entry = WorkerEntry(
            f"{node}:{os.getpid()}", node, tuple(queues), slots, __version__, accelerator
        )
        self.dispatcher = Dispatcher.from_settings(
            self.engine, TaskSender(settings, celery), settings
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="k2e-registry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Leave the registry (a clean shutdown): the scheduler stops counting its slots."""
        self._stop.set()
        self._thread.join(timeout=self.settings.worker_heartbeat_s + 5)
        try:
            self.registry.unregister(self.entry.name)
        except Exception:
            log.warning("could not leave the worker registry", exc_info=True)

    def _loop(self) -> None:
        joined = False
        while not self._stop.is_set():
            try:
                if not joined:
                    self.registry.register(self.entry)
                    joined = True
                    self._pump()
                elif self.registry.beat(self.entry, current_load()):
                    self._pump()
            except Exception:  # an unreachable store: try again at the next beat
                log.warning("worker registry heartbeat failed", exc_info=True)
            self._stop.wait(self.settings.worker_heartbeat_s)

    def _pump(self) -> None:
        log.info(
            "worker %s registered: %d slots on %s",
            self.entry.name,
            self.entry.slots,
            " ".join(self.entry.queues),
        )
        try:
            self.dispatcher.pump(ANY_TENANT)
        except Exception:  # the reconciler's next round hands them over
            log.warning("handing waiting jobs to the new worker failed", exc_info=True)


def current_load() -> WorkerLoad:
    """The jobs this worker's pool runs (Celery's record of the requests it has handed
    to a pool process) and the resident memory of this process and its pool's."""
    from celery.worker import state

    jobs = sorted(
        {
            str(request.id).split(":")[0]  # a cluster member's task id starts with its job's
            for request in list(state.active_requests)
            if request.name in (TRAIN_TASK, MEMBER_TASK)
        }
    )
    return WorkerLoad(tuple(jobs), tree_rss(os.getpid()))


def tree_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` and its descendants, from /proc (None off Linux)."""
    total, pending, seen = 0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        rss = _rss(current)
        if rss is None and current == pid:
            return None
        total += rss or 0
        pending.extend(_children(current))
    return total


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_bytes().splitlines():
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(p) for p in (task / "children").read_text().split())
    except (OSError, ValueError):
        pass
    return found
