"""One job: build the Estimator, train, evaluate, export. Runs inside a worker process."""

import contextlib
import logging
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from k2e import blobstore_s3, logs, tracing
from k2e.blobstore import blob_store
from k2e.catalog import Catalog, recorded_sha256
from k2e.errors import K2EError
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.event_log import notifier_for
from k2e.jobs.leases import JobLeases
from k2e.jobs.predictions import send_reply
from k2e.jobs.provenance import seeded
from k2e.jobs.queueing import TaskSender
from k2e.jobs.records import JobRecord
from k2e.schemas import ConvertRequest, JobError, JobErrorReason, JobStatus
from k2e.settings import Settings
from k2e.spec.checks import check_spec
from k2e.storage import Storage, disk_usage
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.tenancy.scope import ANY_TENANT, Scope
from worker import sync
from worker.cache import InputCache, fetch_job_inputs
from worker.cluster_chief import ChiefCluster, end_placement, trains_on_cluster
from worker.determinism import run_recorded
from worker.export_predict import BadInstances, predict
from worker.gang_watch import ClusterDown, GangGone
from worker.heartbeat import Heartbeat, JobInterrupted, RunControl, new_owner
from worker.joblog import JobLogCapture
from worker.phases import JobFiles, JobPhases, RunResult, checkpoint_step
from worker.scratch import Scratch
from worker.tfrt import tf
from worker.verify import ExportMismatch, mismatch_error
from worker.warm_start import start_checkpoint

log = logging.getLogger("k2e.worker")


class JobRunner:
    """Runs jobs for one worker process, with its own store and storage handles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobLeases(settings.sqlalchemy_url, notifier_for(settings.redis_url))
        self.storage = Storage(settings.storage_root)
        self.catalog = Catalog(self.store.engine)
        # With bucket storage: uploads are copied into a local cache, model_dirs trained
        # in local scratch and published (worker/sync.py). The local folder needs neither.
        self.blobs = blob_store(settings)
        self.cache: InputCache | None = None
        if not self.blobs.local:
            data_dir = settings.data_dir.resolve()
            self.cache = InputCache(self.blobs, data_dir / "cache", settings.worker_cache_bytes)
        self.scratch = Scratch(settings.data_dir.resolve() / "scratch")
        if self.cache is not None:
            # Folders a killed process of this machine left (a crash, a restart), now
            # rather than at the next job.
            self.scratch.sweep()
        self.dispatcher = Dispatcher(
            self.store.engine, TaskSender(settings), settings.tenant_inflight_jobs
        )

    def run(self, job_id: str) -> None:
        """Run a job to a terminal state, unless another worker holds it.

        Never raises for a job's own failure: the worker lives on for the next job.
        """
        with tracing.span("pickup", job_id=job_id):
            picked = self._pick_up(job_id)
        if picked is None:
            return
        started, owner = picked
        control = RunControl(self._deadline(started))
        if started.yield_request is not None:
            # Asked to yield before it started (suspended while in the broker): nothing
            # is loaded; it goes on from where it was when resumed.
            self._release(started, owner, started.progress.global_step)
            return
        if control.timed_out:
            self.store.finish(job_id, JobStatus.failed, owner, error=_timed_out(started))
            return
        with (
            self._hold_scratch(job_id),
            JobLogCapture(self.store, job_id, self.settings.log_format) as captured,
            Heartbeat(
                self.store,
                job_id,
                owner,
                self.settings.lease_s,
                self.settings.heartbeat_s,
                control,
                on_beat=captured.flush_to_store,
                memory_bytes=self.settings.job_memory_bytes,
                sample_s=self.settings.job_memory_sample_s,
                grace_s=self.settings.job_stop_grace_s,
                on_out_of_memory=lambda rss: self._record_out_of_memory(started, owner, rss),
                poll_s=self.settings.control_poll_s,
            ),
        ):
            placement_end: ClusterDown | GangGone | None = None
            try:
                result = self._attempt(started, owner, control)
            except JobInterrupted:  # landed between the attempt's own handlers
                result = self._stopped(started, control, 0)
            except (ClusterDown, GangGone) as end:  # worker/cluster_chief.py
                # The step of the newest checkpoint, read while the scratch is held.
                step = self._step(self._files(started))
                placement_end, result = end, RunResult(JobStatus.queued, global_step=step)
            finally:
                control.disarm()
                disk_bytes = self._disk_bytes(started)
        if control.lease_lost.is_set():
            log.error("job %s: lease lost; leaving the job to its new owner", job_id)
            return
        if placement_end is not None:
            end_placement(self, started, owner, placement_end, result.global_step)
            return
        current = self.store.get(job_id, ANY_TENANT)
        if current.status == JobStatus.cancelling and result.status != JobStatus.cancelled:
            # Cancelled after the last check (the heartbeat had not seen it yet): a cancel
            # that reached the store before the job ended wins.
            result = RunResult(JobStatus.cancelled, global_step=result.global_step)
        if control.peak_rss:
            log.info("job %s: peak worker memory %d bytes", job_id, control.peak_rss)
        if result.status is JobStatus.suspended:
            self._release(current, owner, result.global_step)
            return
        last = current.progress.model_dump()
        progress = {**last, "global_step": result.global_step, "eta_s": 0.0}
        self.store.finish(
            job_id,
            result.status,
            owner,
            eval_metrics=result.eval_metrics,
            error=result.error,
            progress=progress,
            disk_bytes=disk_bytes,
        )
        log.info("job %s %s at step %d", job_id, result.status.value, result.global_step)
        self._pump(started)

    def _release(self, job: JobRecord, owner: str, step: int) -> None:
        """Give the worker back for a yield request, the checkpoint at ``step`` saved
        (and, with bucket storage, published: the attempt's end waited for it). A cancel
        that came first wins: the job ends cancelled."""
        progress = {**job.progress.model_dump(), "global_step": step, "eta_s": None}
        released = self.store.release_yielded(job.id, owner, step, progress)
        if released is None:
            current = self.store.get(job.id, ANY_TENANT)
            if current.status is not JobStatus.cancelling:
                log.error("job %s: lease lost while yielding; leaving it", job.id)
                return
            self.store.finish(job.id, JobStatus.cancelled, owner, progress=progress)
            released = JobStatus.cancelled
        log.info("job %s: yielded at step %d; now %s", job.id, step, released.value)
        # The worker it gave back may be what another tenant's job waits for.
        self._pump(job, every_tenant=True)

    def _pump(self, job: JobRecord, every_tenant: bool = False) -> None:
        try:
            # This job's turn has ended: its tenant's next waiting job may go to the broker.
            # A job older than tenancy has no tenant: every tenant's turn is looked at.
            if every_tenant or job.tenant is None:
                self.dispatcher.pump(ANY_TENANT)
            else:
                self.dispatcher.pump(Scope.of(job.tenant))
        except Exception:  # the reconciler hands it over on its next round
            log.warning("job %s: handing over the next job failed", job.id, exc_info=True)

    def predict(
        self,
        job_id: str,
        tenant: str,
        instances: list[Any],
        signature: str | None,
        reply_key: str,
    ) -> None:
        """Answer a POST /jobs/{id}/predict: the job's newest export on ``instances``.
        Never raises for bad instances: the client gets the reason."""
        try:
            job = self.store.get(job_id, Scope.of(tenant))  # the API checked; it may be gone
            if self.cache is None:
                storage = self.storage.for_tenant(tenant)
                export_dir = Storage.latest_export(storage.resolve(job.model_dir))
            else:
                bucket = sync.BucketDir(self.blobs, tenant, job.model_dir)
                export_dir = sync.fetch_newest_export(bucket, self.cache)
            if export_dir is None:
                body: dict[str, Any] = {"error": f"job {job_id} has no exported SavedModel"}
            else:
                body = predict(export_dir, instances, signature)
        except (BadInstances, K2EError) as exc:
            body = {"error": str(exc)}
        finally:
            if self.cache is not None:
                self.cache.release()
        send_reply(self.settings.broker_url, reply_key, body)

    def _files(self, job: JobRecord) -> JobFiles:
        tenant = job.tenant or DEFAULT_TENANT
        if self.cache is None:
            storage = self.storage.for_tenant(tenant)
            return JobFiles(storage, storage.resolve(job.model_dir))
        inputs = Storage(self.cache.root).for_tenant(tenant)
        bucket = sync.BucketDir(self.blobs, tenant, job.model_dir)
        return JobFiles(inputs, self._scratch(job.id) / "model_dir", bucket)

    def _storage_error(self, control: RunControl, exc: BaseException) -> JobError:
        """The failure of a job whose bucket stopped answering: what the bucket's
        checkpoints let a new run of it do."""
        return _error(
            "StorageUnavailable",
            f"storage unavailable: the bucket {self.blobs.url} did not answer while "
            f"{control.phase} ({exc}); the checkpoints published before are kept there",
        )

    def _scratch(self, job_id: str) -> Path:
        return self.scratch.folder(job_id)

    def _hold_scratch(self, job_id: str) -> AbstractContextManager[object]:
        """With bucket storage, the job's scratch folder while it runs (removed after),
        and no other: folders left by stopped processes go first."""
        if self.cache is None:
            return contextlib.nullcontext()
        self.scratch.sweep()
        return self.scratch.hold(job_id)

    def _disk_bytes(self, job: JobRecord) -> int | None:
        """The bytes of the job's model_dir; with bucket storage, the bucket's, and the
        cache files the job held are let go."""
        if self.cache is None:
            return disk_usage(self._files(job).model_dir)
        self.cache.release()
        files = self._files(job)
        try:
            return files.bucket.usage() if files.bucket is not None else None
        except Exception:  # the record of a size must not fail the job's end
            log.warning("job %s: could not size its model_dir", job.id, exc_info=True)
            return None

    def _pick_up(self, job_id: str) -> tuple[JobRecord, str] | None:
        """Lease the job (its first or next attempt); None when it is not this worker's."""
        job = self.store.get(job_id, ANY_TENANT)
        # Jobs sent without the header (older releases) carry the stored id all the same.
        logs.bind_process(
            tenant=job.tenant, request_id=logs.current().get("request_id") or job.request_id
        )
        if job.status not in (JobStatus.queued, JobStatus.running):
            log.info("job %s is %s: not running it", job_id, job.status.value)
            return None
        if self.store.fail_exhausted(job_id, self.settings.max_attempts):
            log.error("job %s: failed after %d attempts", job_id, job.attempts)
            return None
        owner = new_owner()
        started = self.store.start(job_id, owner, self.settings.lease_s)
        if started is None:
            log.info("job %s: leased by a live worker or finished; not running it", job_id)
            return None
        log.info("job %s: attempt %d as %s", job_id, started.attempts, owner)
        return started, owner

    def _deadline(self, job: JobRecord) -> float | None:
        if job.timeout_s is None or job.started_at is None:
            return None
        elapsed = time.time() - job.started_at.timestamp()
        return time.monotonic() + job.timeout_s - elapsed

    def _record_out_of_memory(self, job: JobRecord, owner: str, rss: int) -> None:
        """The job's end, written before its worker process is killed (lease.Heartbeat)."""
        self.store.finish(job.id, JobStatus.failed, owner, error=self._out_of_memory(rss))

    def _out_of_memory(self, rss: int, member: str | None = None) -> JobError:
        bound = f"the job memory bound K2E_JOB_MEMORY_BYTES={self.settings.job_memory_bytes}"
        grew = f"the worker process grew to {rss} bytes, past {bound}"
        if member is not None:  # worker/cluster_chief.py
            grew = f"cluster member {member} grew past {bound} (its size is in the job log)"
        return _error("MemoryError", grew, "out_of_memory")

    def _stopped(self, job: JobRecord, control: RunControl, step: int) -> RunResult:
        """The result of a job that stopped because RunControl said so."""
        if control.out_of_memory.is_set():
            return RunResult(
                JobStatus.failed,
                global_step=step,
                error=self._out_of_memory(control.peak_rss, control.out_of_memory_in),
            )
        if control.lease_lost.is_set():
            return RunResult(JobStatus.failed, global_step=step)
        if control.cancel_requested.is_set():
            return RunResult(JobStatus.cancelled, global_step=step)
        if control.yield_requested.is_set():
            # Not an end: JobRunner.run releases the job (k2e.jobs.yielding).
            return RunResult(JobStatus.suspended, global_step=step)
        if control.timed_out:
            return RunResult(JobStatus.failed, global_step=step, error=_timed_out(job))
        return RunResult(JobStatus.failed, global_step=step, error=_error("Interrupted", ""))

    def _attempt(self, job: JobRecord, owner: str, control: RunControl) -> RunResult:
        spec = ConvertRequest.model_validate(job.spec)
        if job.provenance is not None:  # the seeds chosen at submission
            spec = seeded(spec, job.provenance.seeds)
        files: JobFiles | None = None
        try:
            control.arm()
            files = self._files(job)
            return self._phases(job, owner, spec, control, files)
        except JobInterrupted:
            control.disarm()
            log.info("job %s: stopped while %s", job.id, control.phase)
            return self._stopped(job, control, self._step(files))
        except K2EError as exc:
            control.disarm()
            if control.must_stop():
                return self._stopped(job, control, self._step(files))
            return RunResult(JobStatus.failed, error=_error("InvalidSpec", exc.detail))
        except MemoryError:
            control.disarm()
            log.exception("job %s: out of memory", job.id)
            control.out_of_memory.set()
            return self._stopped(job, control, self._step(files))
        except Exception as exc:
            control.disarm()
            if control.must_stop():
                # A failure caused by the stop (an interrupted load, a closed session).
                log.info("job %s: stopped while %s (%s)", job.id, control.phase, exc)
                return self._stopped(job, control, self._step(files))
            log.exception("job %s failed", job.id)
            if not self.blobs.local and blobstore_s3.unavailable(exc):
                error = self._storage_error(control, exc)
                return RunResult(JobStatus.failed, global_step=self._step(files), error=error)
            timed_out = type(exc).__name__ == "SoftTimeLimitExceeded"
            reason: JobErrorReason = "timed_out" if timed_out else "error"
            return RunResult(JobStatus.failed, error=_error(type(exc).__name__, str(exc), reason))
        finally:
            control.disarm()

    @staticmethod
    def _step(files: JobFiles | None) -> int:
        if files is None:
            return 0
        try:
            return checkpoint_step(tf.train.latest_checkpoint(str(files.model_dir)))
        except Exception:
            return 0

    def _phases(
        self, job: JobRecord, owner: str, spec: ConvertRequest, control: RunControl, files: JobFiles
    ) -> RunResult:
        tenant = job.tenant or DEFAULT_TENANT
        if self.cache is not None and files.bucket is not None:
            # The bucket is the truth: the job's uploads into the cache, its model_dir's
            # checkpoints (an earlier attempt's, a reused model_dir's) into scratch.
            control.phase = "fetching inputs"
            fetch_job_inputs(self.cache, self.catalog, tenant, spec)
            sync.restore_checkpoints(files.bucket, files.model_dir)
        # Defence in depth: the files are checked again before TensorFlow sees them.
        # Only the job's tenant's uploads resolve: its storage is the tenant's folder.
        # An upload whose bytes match the job store's sha256 keeps its stored inspection.
        digest = recorded_sha256(self.catalog, spec.keras_model_path, tenant)
        resolved = check_spec(spec, files.storage, self.settings, recorded_sha256=digest)
        phases = JobPhases(self.store, self.settings, job, owner, spec, resolved, control, files)
        if spec.warm_start_from is not None and job.warm_start_from is not None:
            scratch = self._scratch(job.id) / "start"
            phases.warm_start_checkpoint = start_checkpoint(files, job.warm_start_from, scratch)
        if trains_on_cluster(spec):
            phases.train_on_cluster = ChiefCluster(self, phases, control).train
        try:
            run = lambda: phases.run(lambda step: self._stopped(job, control, step))  # noqa: E731
            return run_recorded(self.store, job, owner, spec, run)
        except ExportMismatch as exc:
            log.error("job %s: %s", job.id, exc)
            error = mismatch_error(exc.check, exc.tolerance)
            return RunResult(JobStatus.failed, error=error, global_step=self._step(files))


def _error(error_type: str, message: str, reason: JobErrorReason = "error") -> JobError:
    return JobError(type=error_type, message=message, reason=reason)


def _timed_out(job: JobRecord) -> JobError:
    return _error("TimeoutError", f"training exceeded timeout_s={job.timeout_s}", "timed_out")
