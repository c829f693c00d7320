"""The worker's entry in the worker registry (k2e.jobs.workers), from its main process:
registered when the worker is ready, seen every ``worker_heartbeat_s`` from a thread,
removed on a clean shutdown. Registering asks the scheduler for a pass: the new slots
may take waiting jobs."""

import logging
import os
import socket
import threading

from celery import Celery

from k2e.db import make_engine
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.queueing import TaskSender
from k2e.jobs.workers import WorkerEntry, WorkerRegistry
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
        self.entry = WorkerEntry(f"{node}:{os.getpid()}", node, tuple(queues), slots, __version__)
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
                elif self.registry.beat(self.entry):
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
