"""Builds a fresh, compiled Keras model for one job."""

import json
from pathlib import Path
from typing import Any

from k2e.inspection import plain_compile_args
from k2e.schemas import CompileSpec, ConvertRequest
from worker.tfrt import tf


def build_keras_model(spec: ConvertRequest, h5_path: Path | None,
                      training_config: dict[str, Any] | None) -> Any:
    """A new model object per job: the Estimator's conversion invalidates earlier ones.

    Models from HDF5 are compiled again from their plain training config, because
    the metric objects HDF5 stores come back with doubly prefixed names.
    Call inside ``tf.keras.utils.custom_object_scope``.
    """
    if spec.keras_model is not None:
        model = tf.keras.models.model_from_json(json.dumps(spec.keras_model.config))
        compile_args = spec.keras_model.compile
        assert compile_args is not None, "the API refuses uncompiled models"
        _compile(model, compile_args.model_dump(exclude_none=True))
        return model
    assert h5_path is not None and training_config is not None
    model = tf.keras.models.load_model(str(h5_path), compile=False)
    _compile(model, plain_compile_args(training_config))
    return model


def _compile(model: Any, args: dict[str, Any]) -> None:
    args = dict(args)
    optimizer = args.pop("optimizer", "rmsprop")
    # Estimators run the legacy (v1 graph) optimizers; choosing one here avoids a
    # conversion inside model_to_estimator.
    if isinstance(optimizer, dict):
        optimizer = tf.keras.optimizers.deserialize(optimizer, use_legacy_optimizer=True)
    else:
        optimizer = tf.keras.optimizers.get(optimizer, use_legacy_optimizer=True)
    model.compile(optimizer=optimizer, **{k: v for k, v in args.items() if v is not None})


def compile_spec_of(args: dict[str, Any]) -> CompileSpec:
    return CompileSpec.model_validate(args)
