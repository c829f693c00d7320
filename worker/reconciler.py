"""Hands back jobs whose worker died, hands waiting jobs to the broker, applies retention.
Runs as a thread in each worker's main process.

A job's lease expires ``lease_s`` after its worker's last heartbeat; every
``reconcile_interval_s`` this loop requeues such jobs (their checkpoints stay, so
the next attempt resumes; one asked to suspend ends suspended, one preempted waits for
its turn again), re-sends queued jobs whose message may have been lost,
hands each tenant's waiting jobs to the broker as the fairness rule allows
(k2e.jobs.dispatch), and removes finished jobs' files past ``retention_days``.
Requeueing and claiming are single atomic updates, so with many workers only one sends.
"""

import logging
import shutil
import threading

from celery import Celery

from k2e.blobstore import blob_store
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.event_log import notifier_for
from k2e.jobs.leases import JobLeases
from k2e.jobs.queueing import TaskSender
from k2e.jobs.records import JobRecord
from k2e.jobs.suspension import PREEMPT, SUSPEND
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.storage import Storage
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.tenancy.scope import ANY_TENANT

log = logging.getLogger("k2e.reconciler")


class Reconciler:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.sender = TaskSender(settings, celery)
        self.store = JobLeases(settings.sqlalchemy_url, notifier_for(settings.redis_url))
        self.dispatcher = Dispatcher.from_settings(self.store.engine, self.sender, settings)
        self.storage = Storage(settings.storage_root)
        self.blobs = blob_store(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="k2e-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval_s):
            try:
                self.reconcile_once()
            except Exception:  # an unreachable store or broker: try again next round
                log.warning("reconcile round failed", exc_info=True)

    def reconcile_once(self) -> list[str]:
        """One round; returns the ids of the jobs it sent (again or for the first time)."""
        sent = []
        for job in self.store.expired():
            if job.status is JobStatus.cancelling:
                if self.store.cancel_expired(job.id):
                    log.warning("job %s: worker lost while cancelling; cancelled", job.id)
            elif job.yield_request == SUSPEND:
                # Its newest checkpoint stays: resumed, the job goes on from there.
                if self.store.suspend_expired(job.id):
                    log.warning("job %s: worker lost while suspending; suspended", job.id)
            elif job.yield_request == PREEMPT:
                # Back to waiting for its turn: the pump below hands it over when due.
                if self.store.preempt_expired(job.id):
                    log.warning("job %s: worker lost while preempted; queued", job.id)
            elif self.store.requeue_expired(job.id):
                log.warning("job %s: worker lost (lease expired); requeued", job.id)
                if _is_cluster(job):  # the pump below places a whole new gang
                    self.dispatcher.unclaim([job.id])
                    continue
                self._send(job)
                sent.append(job.id)
        # Past the visibility timeout a lost message would have been redelivered by now.
        for job in self.store.stale_queued(self.settings.visibility_timeout_s):
            log.warning("job %s: queued for long; sending it again", job.id)
            self.store.touch(job.id)
            if _is_cluster(job):
                self.dispatcher.unclaim([job.id])
                continue
            self._send(job)
            sent.append(job.id)
        sent += self.dispatcher.pump(ANY_TENANT)
        self.apply_retention()
        return sent

    def apply_retention(self) -> int:
        """Remove the files of jobs that ended more than ``retention_days`` ago."""
        if self.settings.retention_days is None:
            return 0
        removed = 0
        for job_id, tenant, stored in self.store.past_retention(
            self.settings.retention_days * 86400
        ):
            tenant = tenant or DEFAULT_TENANT
            if self.blobs.local:
                shutil.rmtree(self.storage.for_tenant(tenant).resolve(stored), ignore_errors=True)
            else:  # the model_dir's objects in the bucket
                self.blobs.delete_prefix(f"tenants/{tenant}/{stored}/")
            days = self.settings.retention_days
            self.store.files_removed(job_id, f"files removed: retention of {days:g} days")
            removed += 1
        return removed

    def _send(self, job: JobRecord) -> None:
        self.sender.send_train(job.id, job.queue, job.timeout_s, job.request_id, job.trace_context)


def _is_cluster(job: JobRecord) -> bool:
    """A cluster job goes back to the scheduler, never straight to the broker: its members
    need a gang placed together."""
    return bool(job.spec.get("distribution"))
