"""The job's Estimator: ``model_to_estimator`` with the spec's parameters, and the
checkpoint the job's weights are in before (or without) training."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from k2e.spec.checks import ResolvedModel
from worker import export
from worker.cluster_saver import chief_saves
from worker.model_building import build_keras_model
from worker.reference import with_evaluation_reference
from worker.tfrt import tf

# Where model_to_estimator saves the Keras model's own weights (both checkpoint formats;
# the Estimator warm-starts from it). Measured on estimator 2.15.0: exporting or
# evaluating with this checkpoint_path gives the uploaded model's predictions exactly.
KERAS_CHECKPOINT = Path("keras") / "keras_model.ckpt"
log = logging.getLogger("k2e.worker")


@dataclass
class JobEstimator:
    estimator: Any
    # The weights before training: the uploaded ones as model_to_estimator saved them,
    # or the checkpoint of another job that a fine-tuning job starts from.
    start_checkpoint: str

    def newest_checkpoint(self) -> str | None:
        """The model_dir's newest checkpoint (training's, or a reused model_dir's)."""
        path: str | None = self.estimator.latest_checkpoint()
        return path

    def weights_checkpoint(self) -> str:
        """The checkpoint whose weights the job evaluates and exports: the newest of the
        model_dir, else the start weights (a convert-only or evaluate-only job)."""
        return self.newest_checkpoint() or self.start_checkpoint


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
    session = session_config(spec)
    if session is not None:
        kwargs["session_config"] = session
        # One line, read back by clients (and tests) from the job's log.
        log.info("session_config: %s", text_format.MessageToString(session, as_one_line=True))
    return tf.estimator.RunConfig(**kwargs)


def session_config(spec: ConvertRequest) -> Any:
    """The ConfigProto of the job's sessions: on a GPU, k2e's defaults (take memory as
    needed, not all of it, so that several processes share a node; soft placement), then
    the fields the spec's ``config.session_config`` sets; None for TensorFlow's default."""
    asked = spec.config.session_config if spec.config is not None else None
    if spec.accelerator != "gpu" and asked is None:
        return None
    proto = tf.compat.v1.ConfigProto()
    if spec.accelerator == "gpu":
        proto.allow_soft_placement = True
        proto.gpu_options.allow_growth = True
    if asked is not None:
        for name, value in asked.model_dump(exclude_none=True, exclude={"gpu_options"}).items():
            setattr(proto, name, value)
        if asked.gpu_options is not None:
            for name, value in asked.gpu_options.model_dump(exclude_none=True).items():
                setattr(proto.gpu_options, name, value)
    return proto


def build_estimator(
    spec: ConvertRequest,
    resolved: ResolvedModel,
    settings: Settings,
    model_dir: Path,
    objects: dict[str, Any],
    warm_start_checkpoint: str | None = None,
    chief_writes_checkpoints: bool = False,
) -> JobEstimator:
    """A fresh Keras model converted by ``model_to_estimator``. Call inside
    ``tf.keras.utils.custom_object_scope(objects)``: the Estimator clones the model in each
    of its graphs, so the scope must hold while it trains, evaluates and exports.

    With ``warm_start_checkpoint`` (fine-tuning from another job), the Estimator is built
    again from the converted model_fn with ``WarmStartSettings`` naming that checkpoint:
    its trainable variables start from it (object-based or name-based checkpoints alike:
    the warm-start utility maps object keys to variable names), while the global step and
    the optimizer's slots start afresh in the job's own model_dir.

    ``chief_writes_checkpoints`` (a cluster member's TensorFlow process): its training
    graphs save through one unsharded Saver on its own task (worker/cluster_saver.py), so
    that the chief writes every checkpoint, not the parameter servers.
    """
    keras_model = build_keras_model(
        spec, resolved.path, resolved.compile_args, settings.allow_lambda, set(objects)
    )
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=keras_model,
        custom_objects=objects or None,
        config=run_config(spec, model_dir),
        checkpoint_format=spec.checkpoint_format,
        metric_names_map=spec.metric_names_map,
        export_outputs=export.export_output_classes(spec.export_outputs),
    )
    # The converted model_fn, wrapped so that an evaluation can hand its predictions to
    # the export's verification (worker/reference.py), in an Estimator of the same config
    # that warm-starts as model_to_estimator's does (from the Keras weights it saved; the
    # attribute is the Estimator's own record of them, tensorflow-estimator 2.15.0), or
    # from the checkpoint a fine-tuning job starts from.
    warm_start = estimator._warm_start_settings
    if warm_start_checkpoint is not None:
        warm_start = tf.estimator.WarmStartSettings(ckpt_to_initialize_from=warm_start_checkpoint)
    model_fn = with_evaluation_reference(estimator.model_fn)
    if chief_writes_checkpoints:
        model_fn = chief_saves(model_fn)
    wrapped = tf.estimator.Estimator(
        model_fn=model_fn,
        config=estimator.config,
        warm_start_from=warm_start,
    )
    start = warm_start_checkpoint or str(model_dir / KERAS_CHECKPOINT)
    return JobEstimator(wrapped, start)
