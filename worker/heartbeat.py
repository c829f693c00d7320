"""A running job's lease, renewed by a heartbeat thread, and why training should stop.

Stopping (a cancel, a yield request) reaches a job in every phase. Training and
evaluation stop at their next step through a hook (worker.hooks); each phase boundary
checks :class:`RunControl`; and when
a job has not stopped within ``grace_s`` of a cancel or of its memory bound (it is
loading a large dataset, building a graph, exporting), the heartbeat raises
:class:`JobInterrupted` in the job's thread (``PyThreadState_SetAsyncExc``: it lands at
the next Python bytecode that thread runs). Memory is sampled from ``/proc/<pid>/status``
(VmRSS) of the worker process and of the processes it started (a cluster member's
TensorFlow runs in one); a job still over its bound ``grace_s`` later, or over 1.25 times
it (TensorFlow allocating in C++, where no Python exception can land), is recorded as failed
(``out_of_memory``) and its worker process is killed: Celery's pool replaces it, and the
redelivered task finds the job ended, so it is never retried into the same wall.
"""

import ctypes
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from k2e.jobs.leases import JobLeases, Lease
from k2e.schemas import JobStatus

log = logging.getLogger("k2e.worker")


def new_owner() -> str:
    """A lease owner id unique to this attempt: host, process, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """Raised asynchronously in a job's thread to stop it where no hook can: a
    BaseException, so that library code's ``except Exception`` does not swallow it."""


def rss_bytes() -> int | None:
    """This process's resident set size, from /proc/self/status (None off Linux)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _status_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # it ended meanwhile
        return 0
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(kid) for kid in f.read().split())
    except OSError:
        pass
    return kids


def job_rss_bytes() -> int | None:
    """The resident memory of this process and of every process it started, and they
    started (a cluster member's TensorFlow process): what a job holds on its worker.
    None off Linux."""
    total = rss_bytes()
    if total is None:
        return None
    seen = {os.getpid()}
    waiting = _children(os.getpid())
    while waiting:
        pid = waiting.pop()
        if pid not in seen:
            seen.add(pid)
            total += _status_rss(pid)
            waiting.extend(_children(pid))
    return total


class RunControl:
    """What the training hook asks at every step: should training stop, and why; and a
    way for the heartbeat to interrupt the job's thread (see the module docstring)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # time.monotonic() value, or None
        self.cancel_requested = threading.Event()
        # Asked to checkpoint and give the worker back ("suspend" or "preempt"):
        # k2e.jobs.yielding. Set once; the store decides what the job becomes.
        self.yield_requested = threading.Event()
        self.yield_reason: str | None = None
        self.lease_lost = threading.Event()
        self.out_of_memory = threading.Event()
        # Set with out_of_memory when another process of the job (a cluster member on
        # another worker) went past the bound: its name.
        self.out_of_memory_in: str | None = None
        self.phase = "starting"
        self.peak_rss = 0
        self._lock = threading.Lock()
        self._thread_id: int | None = None

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def request_yield(self, reason: str) -> None:
        """Stop at the next step (training saves a checkpoint there) and yield the worker."""
        if not self.yield_requested.is_set():
            self.yield_reason = reason
            self.yield_requested.set()

    def must_stop(self) -> bool:
        """Cancelled, asked to yield, lease lost or over the memory bound: the job stops
        in any phase. (A timeout stops training; Celery's time limits backstop the other
        phases.)"""
        return (
            self.cancel_requested.is_set()
            or self.yield_requested.is_set()
            or self.lease_lost.is_set()
            or self.out_of_memory.is_set()
        )

    def should_stop(self) -> bool:
        """Should training stop."""
        return self.must_stop() or self.timed_out

    def check(self) -> None:
        """Between phases: raise JobInterrupted when the job must stop."""
        if self.must_stop():
            raise JobInterrupted(self.phase)

    def arm(self) -> None:
        """The calling thread runs the job: it may be interrupted until :meth:`disarm`."""
        with self._lock:
            self._thread_id = threading.get_ident()

    def disarm(self) -> None:
        """No interruption after this returns, nor pending. Safe to call repeatedly."""
        while True:
            try:
                with self._lock:
                    if self._thread_id is not None:
                        _set_async_exc(self._thread_id, None)  # drop a pending one
                    self._thread_id = None
                return
            except JobInterrupted:  # landed just before the lock was ours: drop it
                continue

    def interrupt(self) -> bool:
        """Raise JobInterrupted in the armed thread; False when none is armed."""
        with self._lock:
            if self._thread_id is None:
                return False
            return _set_async_exc(self._thread_id, JobInterrupted)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> bool:
    found = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )
    return bool(found == 1)


class Heartbeat:
    """Renews the lease every ``interval`` seconds while the job runs; notices cancels,
    yield requests (suspend, preempt) and a lost lease (after which this worker must stop
    writing)."""

    def __init__(
        self,
        store: JobLeases,
        job_id: str,
        owner: str,
        lease_s: float,
        interval: float,
        control: RunControl,
        on_beat: Callable[[], None] | None = None,
        memory_bytes: int | None = None,
        sample_s: float = 0.25,
        grace_s: float = 5.0,
        on_out_of_memory: Callable[[int], None] | None = None,
        poll_s: float | None = None,
    ) -> None:
        self.store, self.job_id, self.owner = store, job_id, owner
        # Between renewals the job's row is read every poll_s for a stop request.
        self.poll_s = interval if poll_s is None else min(poll_s, interval)
        self.lease_s, self.interval, self.control = lease_s, interval, control
        self.on_beat = on_beat
        self.memory_bytes, self.sample_s, self.grace_s = memory_bytes, sample_s, grace_s
        self.on_out_of_memory = on_out_of_memory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)
        self._watch = threading.Thread(target=self._watch_loop, name=f"watch-{job_id}", daemon=True)
        self._stop_since: float | None = None
        self._last_interrupt = 0.0

    def _watch_loop(self) -> None:
        """Samples memory and, once the job should stop but has not, interrupts it."""
        over_since: float | None = None
        while not self._stop.wait(self.sample_s):
            now = time.monotonic()
            rss = job_rss_bytes() if self.memory_bytes is not None else None
            if rss is not None and self.memory_bytes is not None:
                self.control.peak_rss = max(self.control.peak_rss, rss)
                if rss > self.memory_bytes:
                    if not self.control.out_of_memory.is_set():
                        log.error(
                            "job %s: worker memory %d bytes is past the job bound %d (%s); "
                            "stopping the job",
                            self.job_id,
                            rss,
                            self.memory_bytes,
                            self.control.phase,
                        )
                        self.control.out_of_memory.set()
                    over_since = over_since or now
                    if rss > self.memory_bytes * 1.25 or now - over_since > 2 * self.grace_s:
                        self._give_up(rss)
                        return
                else:
                    over_since = None
            if self.control.must_stop():
                self._stop_since = self._stop_since or now
                waited = now - self._stop_since
                if waited >= self.grace_s and now - self._last_interrupt >= self.grace_s:
                    self._last_interrupt = now
                    if self.control.interrupt():
                        log.warning(
                            "job %s: not stopped %.1f s after it should have (%s); interrupting",
                            self.job_id,
                            waited,
                            self.control.phase,
                        )

    def _give_up(self, rss: int) -> None:
        log.error(
            "job %s: memory %d bytes still past the bound %d: ending the job and this "
            "worker process",
            self.job_id,
            rss,
            self.memory_bytes,
        )
        if self.on_out_of_memory is not None:
            try:
                self.on_out_of_memory(rss)
            finally:
                os.kill(os.getpid(), 9)

    def _beat(self) -> None:
        next_renewal = time.monotonic() + self.interval
        while not self._stop.wait(self.poll_s):
            if time.monotonic() < next_renewal:
                try:
                    lease = self.store.control(self.job_id, self.owner)
                except Exception:  # the store is briefly unreachable: the renewal retries
                    continue
                if lease is not None:
                    self._heed(lease)
                continue
            next_renewal = time.monotonic() + self.interval
            try:
                lease = self.store.renew_lease(self.job_id, self.owner, self.lease_s)
            except Exception:  # the store is briefly unreachable: try again next beat
                log.warning("job %s: lease renewal failed", self.job_id, exc_info=True)
                continue
            if lease is None:
                log.error("job %s: lease lost; this worker stops writing", self.job_id)
                self.control.lease_lost.set()
                return
            self._heed(lease)
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:
                    log.warning("job %s: heartbeat side task failed", self.job_id, exc_info=True)

    def _heed(self, lease: Lease) -> None:
        """Act on a cancel or yield request the job's row shows."""
        control = self.control
        if lease.status == JobStatus.cancelling.value and not control.cancel_requested.is_set():
            log.info("job %s: cancel requested while %s", self.job_id, control.phase)
            control.cancel_requested.set()
        if lease.yield_request and not control.yield_requested.is_set():
            log.info(
                "job %s: asked to yield (%s) while %s",
                self.job_id,
                lease.yield_request,
                control.phase,
            )
            control.request_yield(lease.yield_request)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        self._watch.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._watch.join()
