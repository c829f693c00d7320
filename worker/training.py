"""One job: build the Estimator, train, evaluate, export. Runs inside a worker process."""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k2e.errors import K2EError
from k2e.jobstore import JobStore
from k2e.schemas import ConvertRequest, Job, JobStatus
from k2e.settings import Settings
from k2e.storage import Storage
from k2e.validation import ResolvedModel, check_spec
from worker import custom_objects, export
from worker.hooks import LossCurve, ProgressHook
from worker.inputs import npz_input_fn
from worker.models import build_keras_model
from worker.tfrt import tf

log = logging.getLogger("k2e.worker")


@dataclass
class RunResult:
    status: JobStatus
    eval_metrics: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    export_path: Path | None = None


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
        self.store = JobStore(settings.sqlalchemy_url)
        self.storage = Storage(settings.storage_root)

    def run(self, job_id: str) -> None:
        """Run a job to a terminal state. Never raises for a job's own failure."""
        job = self.store.get(job_id)
        if job.status not in (JobStatus.queued, JobStatus.running):
            log.info("job %s is %s: not running it", job_id, job.status.value)
            return
        spec = ConvertRequest.model_validate(job.spec)
        try:
            # Defence in depth: the files are checked again before TensorFlow sees them.
            resolved = check_spec(spec, self.storage, self.settings.plugins)
        except K2EError as exc:
            self._fail(job_id, "InvalidSpec", exc.detail)
            return
        started = self.store.start(job_id)
        if started is None:
            return
        log.info("job %s: attempt %d, model_dir %s", job_id, started.attempts, started.model_dir)
        try:
            result = self._train_evaluate_export(started, spec, resolved)
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._fail(job_id, type(exc).__name__, str(exc))
            return
        last = self.store.get(job_id).progress.model_dump()
        progress = {**last, "global_step": result.global_step, "eta_s": 0.0}
        self.store.finish(
            job_id, result.status, eval_metrics=result.eval_metrics, progress=progress
        )
        log.info("job %s %s at step %d", job_id, result.status.value, result.global_step)

    def _fail(self, job_id: str, error_type: str, message: str) -> None:
        self.store.finish(
            job_id,
            JobStatus.failed,
            error={"type": error_type, "message": message, "reason": "error"},
        )

    def _train_evaluate_export(
        self, job: Job, spec: ConvertRequest, resolved: ResolvedModel
    ) -> RunResult:
        tf.keras.backend.clear_session()
        model_dir = Path(job.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        objects = custom_objects.resolve(spec.custom_objects, self.settings.plugins)
        with tf.keras.utils.custom_object_scope(objects):
            keras_model = build_keras_model(spec, resolved.path, resolved.compile_args)
            estimator = tf.keras.estimator.model_to_estimator(
                keras_model=keras_model,
                custom_objects=objects or None,
                config=run_config(spec, model_dir),
                checkpoint_format=spec.checkpoint_format,
                metric_names_map=spec.metric_names_map,
                export_outputs=export.export_output_classes(spec.export_outputs),
            )
            inputs, outputs = resolved.summary.inputs, resolved.summary.outputs
            hook = self._progress_hook(job, spec)
            train = spec.train
            estimator.train(
                npz_input_fn(
                    str(self.storage.dataset_file(train.dataset)),
                    inputs,
                    outputs,
                    train.batch_size,
                    training=True,
                    shuffle=train.shuffle,
                    shuffle_buffer=train.shuffle_buffer,
                    shuffle_seed=train.shuffle_seed,
                    drop_remainder=train.drop_remainder,
                ),
                hooks=[hook],
                max_steps=train.max_steps,
            )
            step = _checkpoint_step(estimator.latest_checkpoint())
            if hook.stopped:
                return RunResult(JobStatus.cancelled, global_step=step)
            result = RunResult(JobStatus.succeeded, global_step=step)
            if spec.eval is not None:
                ev = spec.eval
                metrics = estimator.evaluate(
                    npz_input_fn(
                        str(self.storage.dataset_file(ev.dataset)),
                        inputs,
                        outputs,
                        ev.batch_size,
                        training=False,
                    ),
                    steps=ev.steps,
                )
                result.eval_metrics = {k: _scalar(v) for k, v in metrics.items()}
            if spec.export:
                receiver = export.serving_input_fn(
                    inputs, export.needs_example_parsing(spec.export_outputs, inputs)
                )
                result.export_path = export.export_atomically(estimator, model_dir, receiver)
        return result

    def _progress_hook(self, job: Job, spec: ConvertRequest) -> ProgressHook:
        curve = LossCurve()
        max_steps = spec.train.max_steps
        every = spec.config.log_step_count_steps if spec.config else 100
        started = time.monotonic()

        def report(step: int, loss: float, rate: float | None) -> bool:
            curve.add(step, loss)
            eta = (max_steps - step) / rate if rate else None
            status = self.store.record_progress(
                job.id,
                {
                    "global_step": step,
                    "max_steps": max_steps,
                    "steps_per_sec": rate,
                    "eta_s": eta,
                    "elapsed_s": time.monotonic() - started,
                },
                curve.points,
            )
            return status == JobStatus.cancelling.value

        return ProgressHook(report, every_steps=every)


def _checkpoint_step(path: str | None) -> int:
    # Object-based checkpoints don't store a `global_step` key; the file name has it.
    return int(path.rsplit("-", 1)[1]) if path else 0


def _scalar(value: Any) -> float:
    return float(np.asarray(value).item())
