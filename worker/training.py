"""One job: build the Estimator, train, evaluate, export. Runs inside a worker process."""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k2e.catalog import Catalog, recorded_sha256
from k2e.errors import K2EError
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.leases import JobLeases
from k2e.jobs.queueing import TaskSender
from k2e.schemas import ConvertRequest, Job, JobError, JobErrorReason, JobStatus, TensorInfo
from k2e.settings import Settings
from k2e.spec.checks import ResolvedModel, check_spec
from k2e.storage import Storage, disk_usage
from k2e.tenancy.models import DEFAULT_TENANT
from worker import custom_objects, export
from worker.hooks import LossCurve, ProgressHook, StopHook
from worker.inputs import Batching, input_fn_for
from worker.joblog import JobLogCapture
from worker.lease import Heartbeat, JobInterrupted, RunControl, new_owner
from worker.models import build_keras_model
from worker.tfrt import tf

log = logging.getLogger("k2e.worker")


@dataclass(frozen=True)
class JobFiles:
    """Where a job's files are: its tenant's storage, and its model_dir in it."""

    storage: Storage
    model_dir: Path


@dataclass
class RunResult:
    status: JobStatus
    eval_metrics: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    error: JobError | None = None


def run_config(spec: ConvertRequest, model_dir: Path) -> Any:
    """The spec's RunConfig. ``model_dir`` is already resolved with the documented
    precedence (the argument wins over ``config.model_dir``)."""
    cfg = spec.config
    kwargs: dict[str, Any] = {"model_dir": str(model_dir)}
    if cfg is not None:
        kwargs.update(
            tf_random_seed=cfg.tf_random_seed,
            save_summary_steps=cfg.save_summary_steps,
            keep_checkpoint_max=cfg.keep_checkpoint_max,
            keep_checkpoint_every_n_hours=cfg.keep_checkpoint_every_n_hours,
            log_step_count_steps=cfg.log_step_count_steps,
        )
        if cfg.save_checkpoints_steps is not None:
            kwargs.update(
                save_checkpoints_steps=cfg.save_checkpoints_steps, save_checkpoints_secs=None
            )
        elif cfg.save_checkpoints_secs is not None:
            kwargs["save_checkpoints_secs"] = cfg.save_checkpoints_secs
        if cfg.train_distribute == "mirrored":
            kwargs["train_distribute"] = tf.distribute.MirroredStrategy()
    if spec.accelerator == "gpu":
        # Let several processes share a GPU node: take memory as needed, not all of it.
        kwargs["session_config"] = tf.compat.v1.ConfigProto(
            gpu_options=tf.compat.v1.GPUOptions(allow_growth=True), allow_soft_placement=True
        )
    return tf.estimator.RunConfig(**kwargs)


class JobRunner:
    """Runs jobs for one worker process, with its own store and storage handles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = JobLeases(settings.sqlalchemy_url)
        self.storage = Storage(settings.storage_root)
        self.catalog = Catalog(self.store.engine)
        self.dispatcher = Dispatcher(
            self.store.engine, TaskSender(settings), settings.tenant_inflight_jobs
        )

    def run(self, job_id: str) -> None:
        """Run a job to a terminal state, unless another worker holds it.

        Never raises for a job's own failure: the worker lives on for the next job.
        """
        job = self.store.get(job_id)
        if job.status not in (JobStatus.queued, JobStatus.running):
            log.info("job %s is %s: not running it", job_id, job.status.value)
            return
        if self.store.fail_exhausted(job_id, self.settings.max_attempts):
            log.error("job %s: failed after %d attempts", job_id, job.attempts)
            return
        owner = new_owner()
        started = self.store.start(job_id, owner, self.settings.lease_s)
        if started is None:
            log.info("job %s: leased by a live worker or finished; not running it", job_id)
            return
        log.info("job %s: attempt %d as %s", job_id, started.attempts, owner)
        control = RunControl(self._deadline(started))
        if control.timed_out:
            self.store.finish(job_id, JobStatus.failed, owner, error=_timed_out(started))
            return
        with (
            JobLogCapture(self.store, job_id) as logs,
            Heartbeat(
                self.store,
                job_id,
                owner,
                self.settings.lease_s,
                self.settings.heartbeat_s,
                control,
                on_beat=logs.flush_to_store,
                memory_bytes=self.settings.job_memory_bytes,
                sample_s=self.settings.job_memory_sample_s,
                grace_s=self.settings.job_stop_grace_s,
                on_out_of_memory=lambda rss: self._record_out_of_memory(started, owner, rss),
            ),
        ):
            try:
                result = self._attempt(started, owner, control)
            except JobInterrupted:  # landed between the attempt's own handlers
                result = self._stopped(started, control, 0)
            finally:
                control.disarm()
        if control.lease_lost.is_set():
            log.error("job %s: lease lost; leaving the job to its new owner", job_id)
            return
        current = self.store.get(job_id)
        if current.status == JobStatus.cancelling and result.status != JobStatus.cancelled:
            # Cancelled after the last check (the heartbeat had not seen it yet): a cancel
            # that reached the store before the job ended wins.
            result = RunResult(JobStatus.cancelled, global_step=result.global_step)
        if control.peak_rss:
            log.info("job %s: peak worker memory %d bytes", job_id, control.peak_rss)
        last = current.progress.model_dump()
        progress = {**last, "global_step": result.global_step, "eta_s": 0.0}
        self.store.finish(
            job_id,
            result.status,
            owner,
            eval_metrics=result.eval_metrics,
            error=result.error,
            progress=progress,
            disk_bytes=disk_usage(self._files(started).model_dir),
        )
        log.info("job %s %s at step %d", job_id, result.status.value, result.global_step)
        try:
            # This job's turn has ended: its tenant's next waiting job may go to the broker.
            self.dispatcher.pump(started.tenant)
        except Exception:  # the reconciler hands it over on its next round
            log.warning("job %s: handing over the next job failed", job_id, exc_info=True)

    def _files(self, job: Job) -> JobFiles:
        storage = self.storage.for_tenant(job.tenant or DEFAULT_TENANT)
        return JobFiles(storage, storage.resolve(self.store.stored_model_dir(job.id)))

    def _deadline(self, job: Job) -> float | None:
        if job.timeout_s is None or job.started_at is None:
            return None
        elapsed = time.time() - job.started_at.timestamp()
        return time.monotonic() + job.timeout_s - elapsed

    def _record_out_of_memory(self, job: Job, owner: str, rss: int) -> None:
        """The job's end, written before its worker process is killed (lease.Heartbeat)."""
        self.store.finish(job.id, JobStatus.failed, owner, error=self._out_of_memory(rss))

    def _out_of_memory(self, rss: int) -> JobError:
        return _error(
            "MemoryError",
            f"the worker process grew to {rss} bytes, past the job memory bound "
            f"K2E_JOB_MEMORY_BYTES={self.settings.job_memory_bytes}",
            "out_of_memory",
        )

    def _stopped(self, job: Job, control: RunControl, step: int) -> RunResult:
        """The result of a job that stopped because RunControl said so."""
        if control.out_of_memory.is_set():
            return RunResult(
                JobStatus.failed, global_step=step, error=self._out_of_memory(control.peak_rss)
            )
        if control.lease_lost.is_set():
            return RunResult(JobStatus.failed, global_step=step)
        if control.cancel_requested.is_set():
            return RunResult(JobStatus.cancelled, global_step=step)
        if control.timed_out:
            return RunResult(JobStatus.failed, global_step=step, error=_timed_out(job))
        return RunResult(JobStatus.failed, global_step=step, error=_error("Interrupted", ""))

    def _attempt(self, job: Job, owner: str, control: RunControl) -> RunResult:
        spec = ConvertRequest.model_validate(job.spec)
        files: JobFiles | None = None
        try:
            control.arm()
            files = self._files(job)
            # Defence in depth: the files are checked again before TensorFlow sees them.
            # Only the job's tenant's uploads resolve: its storage is the tenant's folder.
            # An upload whose bytes match the job store's sha256 keeps its stored inspection.
            digest = recorded_sha256(
                self.catalog, spec.keras_model_path, job.tenant or DEFAULT_TENANT
            )
            resolved = check_spec(spec, files.storage, self.settings, recorded_sha256=digest)
            return self._train_evaluate_export(job, owner, spec, resolved, control, files)
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
            return _checkpoint_step(tf.train.latest_checkpoint(str(files.model_dir)))
        except Exception:
            return 0

    def _train_evaluate_export(
        self,
        job: Job,
        owner: str,
        spec: ConvertRequest,
        resolved: ResolvedModel,
        control: RunControl,
        files: JobFiles,
    ) -> RunResult:
        control.check()
        control.phase = "building the model"
        tf.keras.backend.clear_session()
        model_dir = files.model_dir
        model_dir.mkdir(parents=True, exist_ok=True)
        objects = custom_objects.resolve(spec.custom_objects, self.settings.plugins)
        with tf.keras.utils.custom_object_scope(objects):
            keras_model = build_keras_model(
                spec, resolved.path, resolved.compile_args, self.settings.allow_lambda
            )
            estimator = tf.keras.estimator.model_to_estimator(
                keras_model=keras_model,
                custom_objects=objects or None,
                config=run_config(spec, model_dir),
                checkpoint_format=spec.checkpoint_format,
                metric_names_map=spec.metric_names_map,
                export_outputs=export.export_output_classes(spec.export_outputs),
            )
            inputs, outputs = resolved.summary.inputs, resolved.summary.outputs
            train = spec.train
            control.check()
            control.phase = "loading the training data"
            train_input = self._input_fn(
                files.storage,
                train.dataset,
                inputs,
                outputs,
                Batching(
                    train.batch_size,
                    training=True,
                    shuffle=train.shuffle,
                    shuffle_buffer=train.shuffle_buffer,
                    shuffle_seed=train.shuffle_seed,
                    drop_remainder=train.drop_remainder,
                ),
            )
            control.check()
            control.phase = "training"
            estimator.train(
                train_input,
                hooks=[self._progress_hook(job, owner, spec, control)],
                max_steps=train.max_steps,
            )
            step = _checkpoint_step(estimator.latest_checkpoint())
            if control.must_stop() or (step < train.max_steps and control.timed_out):
                return self._stopped(job, control, step)
            result = RunResult(JobStatus.succeeded, global_step=step)
            if spec.eval is not None:
                ev = spec.eval
                control.phase = "loading the evaluation data"
                eval_input = self._input_fn(
                    files.storage,
                    ev.dataset,
                    inputs,
                    outputs,
                    Batching(ev.batch_size, training=False),
                )
                control.check()
                control.phase = "evaluating"
                metrics = estimator.evaluate(eval_input, steps=ev.steps, hooks=[StopHook(control)])
                control.check()
                result.eval_metrics = {k: _scalar(v) for k, v in metrics.items()}
            if spec.export and not self._already_exported(job.id, files):
                control.phase = "exporting"
                receiver = export.serving_input_fn(
                    inputs, export.needs_example_parsing(spec.export_outputs, inputs)
                )
                path = export.export_atomically(estimator, model_dir, receiver)
                control.check()
                self.store.record_export(job.id, owner, files.storage.relative(path))
            control.phase = "finishing"
        return result

    @staticmethod
    def _input_fn(
        storage: Storage,
        dataset_id: str,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
        batching: Batching,
    ) -> Any:
        info = storage.dataset_info(dataset_id)
        return input_fn_for(info, storage.dataset_file(dataset_id), inputs, outputs, batching)

    def _already_exported(self, job_id: str, files: JobFiles) -> bool:
        # An earlier attempt may have exported and died before finishing: one export per job.
        path = self.store.export_path(job_id)
        return path is not None and files.storage.resolve(path).is_dir()

    def _progress_hook(
        self, job: Job, owner: str, spec: ConvertRequest, control: RunControl
    ) -> ProgressHook:
        curve = LossCurve()
        curve.points = [p.model_dump() for p in job.metrics.train]  # resume keeps the curve
        max_steps = spec.train.max_steps
        every = spec.config.log_step_count_steps if spec.config else 100

        def report(step: int, loss: float, rate: float | None) -> None:
            curve.add(step, loss)
            eta = (max_steps - step) / rate if rate else None
            status = self.store.record_progress(
                job.id,
                owner,
                {"global_step": step, "max_steps": max_steps, "steps_per_sec": rate, "eta_s": eta},
                curve.points,
            )
            if status is None:
                control.lease_lost.set()
            elif status == JobStatus.cancelling.value:
                control.cancel_requested.set()

        return ProgressHook(report, control, every_steps=every)


def _error(error_type: str, message: str, reason: JobErrorReason = "error") -> JobError:
    return JobError(type=error_type, message=message, reason=reason)


def _timed_out(job: Job) -> JobError:
    return _error("TimeoutError", f"training exceeded timeout_s={job.timeout_s}", "timed_out")


def _checkpoint_step(path: str | None) -> int:
    # Object-based checkpoints don't store a `global_step` key; the file name has it.
    return int(path.rsplit("-", 1)[1]) if path else 0


def _scalar(value: Any) -> float:
    return float(np.asarray(value).item())
