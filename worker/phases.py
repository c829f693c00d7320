"""A job's phases on one worker: build the Estimator, train, evaluate, export (verified,
with TF Serving warm-up requests). worker/training.py runs them under a lease."""

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k2e import tracing
from k2e.formats.read_limits import ReadLimits
from k2e.jobs.leases import JobLeases
from k2e.jobs.records import JobRecord
from k2e.schemas import (
    ConvertRequest,
    JobError,
    JobStatus,
    TensorInfo,
)
from k2e.settings import Settings
from k2e.spec.checks import ResolvedModel
from k2e.spec.export_plan import needs_example_parsing
from k2e.storage import Storage
from k2e.vetting.feature_columns import fed_inputs
from worker import builtin_objects, export, sync
from worker.estimator import JobEstimator, build_estimator
from worker.heartbeat import RunControl
from worker.hooks import LossCurve, ProgressHook, StopHook
from worker.inputs import Batching, first_features, input_fn_for
from worker.reference import Reference, ReferenceHook
from worker.signatures import loaded
from worker.tfrt import tf
from worker.verify import (
    MAX_EXAMPLES,
    ExamplesFrom,
    ExportMismatch,
    check_signatures,
    estimator_predictions,
    first_examples,
    generated_examples,
)
from worker.warmup import write_warmup

log = logging.getLogger("k2e.worker")


@dataclass(frozen=True)
class JobFiles:
    """Where a job's files are: its tenant's storage (with bucket storage, the worker's
    cached copy of the uploads), and its model_dir (with bucket storage, local scratch
    that ``bucket`` publishes to the bucket)."""

    storage: Storage
    model_dir: Path
    bucket: sync.BucketDir | None = None


@dataclass
class RunResult:
    status: JobStatus
    eval_metrics: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    error: JobError | None = None


@dataclass
class JobPhases:
    """One attempt at one job; each phase checks ``control`` before it starts."""

    store: JobLeases
    settings: Settings
    job: JobRecord
    owner: str
    spec: ConvertRequest
    resolved: ResolvedModel
    control: RunControl
    files: JobFiles
    warm_start_checkpoint: str | None = None
    # A cluster job's training on its gang, run by the chief (worker/cluster_chief.py).
    train_on_cluster: Callable[[JobEstimator], None] | None = None
    # The evaluated checkpoint, and its evaluation's examples and predictions.
    _reference: tuple[str, Reference] | None = field(default=None, init=False)
    _phase_span: Any = field(default=None, init=False)  # the current phase's (k2e.tracing)

    @property
    def inputs(self) -> list[TensorInfo]:
        """The model's inputs as the job feeds them: an input only feature columns read
        takes the shape of the job's data (k2e.vetting.feature_columns)."""
        summary = self.resolved.summary
        if not summary.column_inputs:
            return summary.inputs
        section = self.spec.train or self.spec.eval
        arrays = self.files.storage.dataset_info(section.dataset).arrays if section else None
        return fed_inputs(summary.inputs, summary.column_inputs, arrays)

    @property
    def outputs(self) -> list[TensorInfo]:
        return self.resolved.summary.outputs

    def run(self, stopped: Any) -> RunResult:
        """Every phase; ``stopped(step)`` is the result of a job that must stop."""
        try:
            return self._run(stopped)
        finally:
            self._end_phase()

    def _run(self, stopped: Any) -> RunResult:
        control = self.control
        self._enter("building the model")
        cfg = self.spec.config
        if self.spec.model_dir and cfg and cfg.model_dir and cfg.model_dir != self.spec.model_dir:
            log.info(
                "job %s: model_dir %r wins over config.model_dir %r, as model_to_estimator's "
                "documentation says (the library itself raises when both are set and differ)",
                self.job.id,
                self.spec.model_dir,
                cfg.model_dir,
            )
        tf.keras.backend.clear_session()
        self.files.model_dir.mkdir(parents=True, exist_ok=True)
        objects = builtin_objects.resolve(
            self.spec.custom_objects, self.settings.plugins, self.resolved.custom_uses
        )
        with tf.keras.utils.custom_object_scope(objects):
            built = build_estimator(
                self.spec,
                self.resolved,
                self.settings,
                self.files.model_dir,
                objects,
                self.warm_start_checkpoint,
            )
            step = 0
            if self.spec.train is not None:
                step = self.train(built)
                if control.must_stop() or (step < self.spec.train.max_steps and control.timed_out):
                    return stopped(step)
            result = RunResult(JobStatus.succeeded, global_step=step)
            if self.spec.eval is not None:
                result.eval_metrics = self.evaluate(built)
            if self.spec.export and not self._already_exported():
                self.export(built)
            control.phase = "finishing"
        return result

    def train(self, built: JobEstimator) -> int:
        train = self.spec.train
        assert train is not None
        reached = checkpoint_step(built.newest_checkpoint())
        if reached >= train.max_steps:
            # A retry of a job that had trained to the end (it died evaluating or
            # exporting), or a reused model_dir that is there already. The Estimator reads
            # the step from the checkpoint's `global_step`, which object-based checkpoints
            # do not have: it would train one step more.
            log.info("job %s: the model_dir is at step %d: no training", self.job.id, reached)
            return reached
        if self.train_on_cluster is not None:
            # The gang trains all but the last few steps (worker/cluster_chief.py); this
            # process trains those alone, from the gang's newest checkpoint, so that the
            # job ends at exactly max_steps.
            self._enter("training on the cluster")
            self.train_on_cluster(built)
            self.control.check()
            reached = checkpoint_step(built.newest_checkpoint())
            if reached >= train.max_steps or self.control.timed_out:
                return reached
        self._enter("loading the training data")
        train_input = self.train_input()
        self._enter("training")
        bucket = self.files.bucket
        publisher: sync.CheckpointPublisher | None = None
        if bucket is not None:
            # An attempt that lost its lease stops publishing: the job is another's now.
            owned = lambda: not self.control.lease_lost.is_set()  # noqa: E731
            publisher = sync.CheckpointPublisher(bucket, self.files.model_dir, owned)
        # However training ends (finished, failed, cancelled, timed out), it ends once the
        # checkpoints it queued for the bucket are there, or their upload has failed.
        with publisher or contextlib.nullcontext():
            built.estimator.train(
                train_input,
                hooks=[self._progress_hook(train.max_steps)],
                max_steps=train.max_steps,
                saving_listeners=[publisher] if publisher else [],
            )
        self._publish_files()
        return checkpoint_step(built.newest_checkpoint())

    def train_input(self) -> Any:
        """The input_fn of the job's training data."""
        train = self.spec.train
        assert train is not None
        batching = Batching(
            train.batch_size,
            training=True,
            shuffle=train.shuffle,
            shuffle_buffer=train.shuffle_buffer,
            shuffle_seed=train.shuffle_seed,
            drop_remainder=train.drop_remainder,
            cache_bytes=self.settings.dataset_cache_bytes,
        )
        return self._input_fn(train.dataset, batching)

    def eval_input(self) -> Any:
        """The input_fn of the job's evaluation data."""
        ev = self.spec.eval
        assert ev is not None
        return self._input_fn(ev.dataset, Batching(ev.batch_size, training=False))

    def evaluate(self, built: JobEstimator) -> dict[str, float]:
        ev = self.spec.eval
        assert ev is not None
        self._enter("loading the evaluation data")
        eval_input = self.eval_input()
        self._enter("evaluating")
        # Without training, the uploaded weights (global_step 0) or a reused model_dir's.
        checkpoint = built.weights_checkpoint()
        reference = ReferenceHook(self.inputs, MAX_EXAMPLES)
        metrics = built.estimator.evaluate(
            eval_input,
            steps=ev.steps,
            hooks=[StopHook(self.control), reference],
            checkpoint_path=checkpoint,
        )
        self._publish_files()
        self.control.check()
        if reference.reference is not None:
            self._reference = (checkpoint, reference.reference)
        return {k: float(np.asarray(v).item()) for k, v in metrics.items()}

    def export(self, built: JobEstimator) -> None:
        """Export, verify against the Estimator's own predictions, add warm-up requests,
        then publish; a mismatch raises ExportMismatch and publishes nothing, and so does
        a cancel seen before publishing (the job ends cancelled with no export)."""
        self._enter("exporting")
        model_dir = self.files.model_dir
        try:
            self._export(built, model_dir)
        finally:
            export.discard_staging(model_dir)

    def _export(self, built: JobEstimator, model_dir: Path) -> None:
        receiver = export.serving_input_fn(
            self.inputs, needs_example_parsing(self.spec.export_outputs, self.inputs)
        )
        checkpoint = built.weights_checkpoint()
        written = export.export_to_staging(built.estimator, model_dir, receiver, checkpoint)
        self._enter("verifying the export")
        if self._reference is not None and self._reference[0] == checkpoint:
            # The evaluation's own predictions from this checkpoint (worker/reference.py).
            features, predictions = self._reference[1].features, self._reference[1].predictions
            source: ExamplesFrom = "eval"
        else:
            features, source = self._examples()
            predictions = estimator_predictions(built.estimator, features, checkpoint)
        # One load of the export for both its check and its TF Serving warm-up requests.
        with loaded(written) as (session, signatures):
            check = check_signatures(
                session, signatures, features, predictions, self.settings.export_tolerance, source
            )
            if not check.verified:
                raise ExportMismatch(check, self.settings.export_tolerance)
            check.warmup_requests = write_warmup(written, signatures, features)
        self.control.check()
        path = export.publish(written, model_dir)
        bucket = self.files.bucket
        if bucket is None:
            relative = self.files.storage.relative(path)
        else:  # uploaded whole, then recorded: the record names a complete export
            relative = sync.publish_export(bucket, path)
        if not self.store.record_export(self.job.id, self.owner, relative, check.model_dump()):
            if bucket is not None and self.store.export_path(self.job.id) != relative:
                # Not this attempt's to publish: its upload goes again.
                bucket.store.delete_prefix(f"{bucket.tenant_key(relative)}/")
            self.control.lease_lost.set()  # another attempt owns the job now

    def _enter(self, phase: str) -> None:
        """Each phase starts with a stop check and says so in the job's logs."""
        self.control.check()
        self.control.phase = phase
        self._end_phase()
        self._phase_span = tracing.start(phase, job_id=self.job.id)
        log.info("job %s: %s", self.job.id, phase)

    def _end_phase(self) -> None:
        if self._phase_span is not None:
            self._phase_span.end()
            self._phase_span = None

    def _examples(self) -> tuple[dict[str, np.ndarray], ExamplesFrom]:
        """Up to MAX_EXAMPLES examples of the job's data (evaluation data first), or
        generated ones when the job has none."""
        for section, source in ((self.spec.eval, "eval"), (self.spec.train, "train")):
            if section is not None:
                examples_from: ExamplesFrom = "eval" if source == "eval" else "train"
                storage = self.files.storage
                info = storage.dataset_info(section.dataset)
                path = storage.dataset_file(section.dataset)
                read = first_features(info, path, self.inputs, MAX_EXAMPLES, self._read_limits())
                if read is not None:
                    return read, examples_from
                input_fn = self._input_fn(section.dataset, Batching(MAX_EXAMPLES, training=False))
                return first_examples(input_fn, self.inputs), examples_from
        return generated_examples(self.inputs), "generated"

    def _input_fn(self, dataset_id: str, batching: Batching) -> Any:
        storage = self.files.storage
        info = storage.dataset_info(dataset_id)
        path = storage.dataset_file(dataset_id)
        return input_fn_for(info, path, self.inputs, self.outputs, batching, self._read_limits())

    def _read_limits(self) -> ReadLimits:
        # The bounds the API's inspection kept, from this worker's settings.
        return ReadLimits.from_settings(self.settings)

    def _already_exported(self) -> bool:
        # An earlier attempt may have exported and died before finishing: one export per job.
        path = self.store.export_path(self.job.id)
        if path is None:
            return False
        if self.files.bucket is not None:
            return sync.export_in_bucket(self.files.bucket, path)
        return self.files.storage.resolve(path).is_dir()

    def _publish_files(self) -> None:
        """With bucket storage, the model_dir's event files at the end of a phase."""
        if self.files.bucket is not None and not self.control.lease_lost.is_set():
            sync.publish_files(self.files.bucket, self.files.model_dir)

    def _progress_hook(self, max_steps: int) -> ProgressHook:
        return ProgressHook(
            self.progress_report(max_steps),
            self.control,
            every_steps=self.spec.config.log_step_count_steps if self.spec.config else 100,
            min_interval_s=self.settings.progress_min_interval_s,
        )

    def progress_report(self, max_steps: int) -> Callable[[int, float, float | None], None]:
        """``report(step, loss, steps_per_sec)``: the job's progress and loss curve into
        the store (fenced on the lease); a cancel or a lost lease it reveals stops the job."""
        curve = LossCurve()
        curve.points = [p.model_dump() for p in self.job.metrics.train]  # resume keeps it
        control = self.control

        def report(step: int, loss: float, rate: float | None) -> None:
            curve.add(step, loss)
            eta = (max_steps - step) / rate if rate else None
            progress = {
                "global_step": step,
                "max_steps": max_steps,
                "steps_per_sec": rate,
                "eta_s": eta,
            }
            status = self.store.record_progress(self.job.id, self.owner, progress, curve.points)
            if status is None:
                control.lease_lost.set()
            elif status == JobStatus.cancelling.value:
                control.cancel_requested.set()

        return report


def checkpoint_step(path: str | None) -> int:
    # Object-based checkpoints don't store a `global_step` key; the file name has it.
    return int(path.rsplit("-", 1)[1]) if path else 0
