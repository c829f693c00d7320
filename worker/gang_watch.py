"""What every member of a cluster job's gang does in its Celery task's process: join its
row with an address, wait for the rest of the gang, and watch the others while its
TensorFlow process runs (k2e.jobs.gangs has the rows)."""

import logging
import socket
import threading
import time
from collections.abc import Callable

from k2e.cluster_schemas import Role
from k2e.jobs.gangs import GangStore, Member, is_silent
from k2e.jobs.leases import JobLeases
from k2e.settings import Settings
from worker.member_child import free_port, worker_address

log = logging.getLogger("k2e.worker")

WATCH_S = 0.5
BEAT_S = 1.0
MAX_LINES = 500  # a member's log lines held between two writes (the rest are dropped)


# Steps per training worker the gang leaves to the chief's Celery process.
TAIL_STEPS_PER_WORKER = 5


def gang_steps(max_steps: int, workers: int) -> int:
    """The global step a gang trains to: ``max_steps`` less a few steps per training
    worker. Asynchronous workers stop on a global step read before their own update, so
    each may add a step or two past the target (measured: two workers told 3000 ended at
    3001, told 2998 at 3000); the chief's Celery process then trains the rest alone, from
    the gang's newest checkpoint, and the job ends at exactly ``max_steps``."""
    return max(0, max_steps - TAIL_STEPS_PER_WORKER * workers)


class GangGone(BaseException):  # noqa: N818 - like JobInterrupted
    """This placement will not train: it is not the job's newest, or it did not form in
    time. The job waits for a new placement without a failed attempt."""


class ClusterDown(BaseException):  # noqa: N818
    """A member of the running gang was lost or failed: the gang is placed again, and the
    attempt counts."""


class MemberLogs:
    """A member's TensorFlow log lines, labelled ``[role:index]``, written into the job's
    log in batches (``flush``, at each beat) so that reading them never waits on the
    store."""

    def __init__(self, store: JobLeases, job_id: str, label: str) -> None:
        self.store, self.job_id, self.label = store, job_id, label
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.last = ""

    def add(self, line: str) -> None:
        self.last = line
        with self._lock:
            if len(self._lines) < MAX_LINES:
                self._lines.append(f"[{self.label}] {line[:2000]}")

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines:
            try:
                self.store.log_many(self.job_id, lines)
            except Exception:  # the store is briefly unreachable: the lines are dropped
                log.warning("job %s: %d member log lines lost", self.job_id, len(lines))


def join(
    gangs: GangStore, settings: Settings, job_id: str, gang: int, role: Role, index: int
) -> str | None:
    """Take this member's row with an address of a port free now; returns the address,
    or None when the row is not this process's to take (a stale or redelivered task)."""
    host = worker_address(settings.worker_address, settings.broker_url)
    owner = f"{socket.gethostname()}:{threading.get_native_id()}"
    node = socket.gethostname()
    try:
        address = f"{host}:{free_port(*settings.member_port_range)}"
    except OSError as error:  # K2E_MEMBER_PORTS all taken: the gang cannot form here
        log.error("job %s: %s:%d has no port: %s", job_id, role, index, error)
        if gangs.join(job_id, gang, role, index, owner, node, f"{host}:0"):
            gangs.beat(job_id, gang, role, index, "failed")
        return None
    if not gangs.join(job_id, gang, role, index, owner, node, address):
        return None
    return address


def wait_formed(
    gangs: GangStore,
    settings: Settings,
    job_id: str,
    me: Member,
    still_wanted: Callable[[], bool],
    every_beat: Callable[[], None] = lambda: None,
) -> list[Member]:
    """Every member of the gang once all have joined. Raises GangGone when the placement
    is not wanted any more, a member fails or goes silent meanwhile, or the gang has not
    formed within K2E_GANG_FORM_TIMEOUT_S."""
    deadline = time.monotonic() + settings.gang_form_timeout_s
    while True:
        gangs.beat(job_id, me.gang, me.role, me.index)
        every_beat()
        formed = gangs.formed(job_id, me.gang)
        if formed is not None:
            return formed
        if not still_wanted():
            raise GangGone("the placement is not the job's any more")
        trouble = lost_member(gangs.members(job_id), me, settings.lease_s)
        if trouble is not None:
            raise GangGone(f"{trouble} was lost before the gang formed")
        if time.monotonic() > deadline:
            raise GangGone(
                f"the gang did not form within {settings.gang_form_timeout_s:g} s "
                "(K2E_GANG_FORM_TIMEOUT_S)"
            )
        time.sleep(WATCH_S)


def lost_member(members: list[Member], me: Member, lease_s: float) -> str | None:
    """The name of a member of ``me``'s gang (not ``me``) that failed, was marked lost, or
    holds its row without a beat for longer than the lease; None when all are well."""
    for member in members:
        if member.gang != me.gang or (member.role, member.index) == (me.role, me.index):
            continue
        if member.state in ("failed", "lost", "out_of_memory"):
            return member.name
        if member.state in ("ready", "running") and is_silent(member.beat_at, lease_s):
            return member.name
    return None
