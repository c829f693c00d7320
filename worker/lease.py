"""A running job's lease, renewed by a heartbeat thread, and why training should stop."""

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus

log = logging.getLogger("k2e.worker")


def new_owner() -> str:
    """A lease owner id unique to this attempt: host, process, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunControl:
    """What the training hook asks at every step: should training stop, and why."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value, or None
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lease_lost.is_set() or self.timed_out


class Heartbeat:
    """Renews the lease every ``interval`` seconds while the job runs; notices cancels
    and a lost lease (after which this worker must stop writing)."""

    def __init__(
        self,
        store: JobLeases,
        job_id: str,
        owner: str,
        lease_s: float,
        interval: float,
        control: RunControl,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.job_id, self.owner = store, job_id, owner
        self.lease_s, self.interval, self.control = lease_s, interval, control
        self.on_beat = on_beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                status = self.store.renew_lease(self.job_id, self.owner, self.lease_s)
            except Exception:  # the store is briefly unreachable: try again next beat
                log.warning("job %s: lease renewal failed", self.job_id, exc_info=True)
                continue
            if status is None:
                log.error("job %s: lease lost; this worker stops writing", self.job_id)
                self.control.lease_lost.set()
                return
            if status == JobStatus.cancelling.value:
                self.control.cancel_requested.set()
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:
                    log.warning("job %s: heartbeat side task failed", self.job_id, exc_info=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
