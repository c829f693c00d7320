"""Builds a fresh, compiled Keras model for one job."""

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import h5py

from k2e.schemas import ConvertRequest
from worker.tfrt import tf


def build_keras_model(
    spec: ConvertRequest,
    h5_path: Path | None,
    h5_compile_args: dict[str, Any] | None,
    allow_lambda: bool = False,
    custom_names: Collection[str] = (),
) -> Any:
    """A new model object per job: the Estimator's conversion invalidates earlier ones.

    Models from files (HDF5 or ``.keras``) are compiled again from their plain compile
    arguments, because the metric objects HDF5 stores come back with doubly prefixed
    names. Call inside ``tf.keras.utils.custom_object_scope``.

    The config was vetted just before (k2e.spec.checks.check_spec). Loading also runs in
    Keras's safe mode unless the operator allows Lambda layers (``allow_lambda``):
    ``load_model``'s own ``safe_mode`` covers only ``.keras`` files, but the scope makes
    Keras refuse Lambda bytecode from HDF5 files and JSON configs too (measured on
    Keras 2.15).
    """
    # Keras 2.15 exports no alias; imported here, after worker.tfrt configured TensorFlow.
    from keras.src.saving.serialization_lib import SafeModeScope

    safe = not allow_lambda
    with SafeModeScope(safe):
        if spec.keras_model is not None:
            config = plain_function_refs(spec.keras_model.config, custom_names)
            model = tf.keras.models.model_from_json(json.dumps(config))
        else:
            assert h5_path is not None
            model = _load(h5_path, safe, custom_names)
    if spec.keras_model is not None:
        compile_args = spec.keras_model.compile
        assert compile_args is not None, "the API refuses uncompiled models"
        _compile(model, compile_args.model_dump(exclude_none=True))
        return model
    assert h5_compile_args is not None
    _compile(model, h5_compile_args)
    return model


def _load(path: Path, safe: bool, custom_names: Collection[str]) -> Any:
    """A model file, loaded by Keras; an HDF5 file whose config refers to a custom function
    the way Keras 2.15 saves one is built from its config rewritten (plain_function_refs),
    then given the file's weights."""
    if path.suffix.lower() != ".keras" and custom_names:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        config = json.loads(text) if isinstance(text, str) else None
        fixed = plain_function_refs(config, custom_names)
        if config is not None and fixed != config:
            model = tf.keras.models.model_from_json(json.dumps(fixed))
            model.load_weights(str(path))
            return model
    return tf.keras.models.load_model(str(path), compile=False, safe_mode=safe)


def plain_function_refs(config: Any, custom_names: Collection[str]) -> Any:
    """``config`` with each reference to a custom function (``{"class_name": "function",
    "config": name}``, how Keras 2.15 serializes ``activation=custom_relu`` in HDF5 and
    ``to_json``) replaced by the plain name. Keras 2.15 cannot read its own form back
    ("Unknown activation function: 'function'", even with the function in
    ``custom_objects``); the plain name it resolves through ``custom_objects``."""
    if isinstance(config, dict):
        if config.get("class_name") == "function" and config.get("config") in custom_names:
            return config["config"]
        return {k: plain_function_refs(v, custom_names) for k, v in config.items()}
    if isinstance(config, list):
        return [plain_function_refs(v, custom_names) for v in config]
    return config


def _compile(model: Any, args: dict[str, Any]) -> None:
    args = {k: v for k, v in args.items() if v is not None}
    optimizer = args.pop("optimizer", "rmsprop")
    # Estimators run the legacy (v1 graph) optimizers; choosing one here avoids a
    # conversion inside model_to_estimator.
    if isinstance(optimizer, dict):
        optimizer = tf.keras.optimizers.deserialize(optimizer, use_legacy_optimizer=True)
    else:
        optimizer = tf.keras.optimizers.get(optimizer, use_legacy_optimizer=True)
    # Metrics stay serialized configs ({"class_name", "config"}), never objects: the
    # conversion's clones (the first checkpoint's, then one per train and evaluate call)
    # re-compile from the model's compile arguments, and compiling a metric object renames
    # it in place with its output's prefix, so AUC(name="auc") on output d would reach
    # evaluation as d_d_d_auc. A config is deserialized afresh by every compile: d_auc.
    if "loss" in args:
        args["loss"] = _objects(args["loss"], tf.keras.losses.deserialize)
    model.compile(optimizer=optimizer, **args)


def _objects(value: Any, deserialize: Any) -> Any:
    """Serialized configs (``{"class_name", "config"}``) become objects; names stay names."""
    if isinstance(value, dict) and "class_name" in value:
        return deserialize(value)
    if isinstance(value, dict):
        return {k: _objects(v, deserialize) for k, v in value.items()}
    if isinstance(value, list):
        return [_objects(v, deserialize) for v in value]
    return value
