"""What a Keras 2.15 model file is (HDF5 here; ``.keras`` archives in keras_archive), read
without TensorFlow and after vetting its structure and configs.

The result, ``H5Summary``, is what the sandbox answers in JSON and what POST /models keeps
beside the upload, so that later checks need not open the file again.
"""

import json
import os
from typing import Any

import h5py
from pydantic import BaseModel, ConfigDict

from k2e.custom_registry import registry
from k2e.errors import InvalidSpec, InvalidUpload
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.h5structure import vet_h5_structure
from k2e.vetting.metric_names import compiled_metric_names, plain_compile_args
from k2e.vetting.model_config import ModelSummary, parse_model_config


class H5Summary(BaseModel):
    """A model file's inspection: its summary, compile state and metric names."""

    model_config = ConfigDict(frozen=True)

    summary: ModelSummary
    compiled: bool
    training_config: dict[str, Any] | None
    metric_names: list[str]
    keras_version: str | None
    # plain_compile_args(training_config): what the worker compiles a loaded model with.
    compile_args: dict[str, Any] | None = None
    format: str = "h5"  # or "keras" (a Keras v3 archive; training_config is its compile_config)
    # Classes neither Keras's nor the registry's, left for a spec's custom_objects to map
    # (an upload's inspection defers them: VetPolicy.defer_custom).
    custom_names: list[str] = []
    # Names Keras resolves through custom_objects first, each with how the model uses them
    # (k2e.vetting.configs.use_kind): a spec's mapping of the name must be of that kind.
    custom_uses: dict[str, list[str]] = {}


def sorted_uses(uses: dict[str, set[str]]) -> dict[str, list[str]]:
    return {name: sorted(kinds) for name, kinds in sorted(uses.items())}


def _attr_json(attrs: Any, key: str) -> dict[str, Any] | None:
    if key not in attrs:
        return None
    value = attrs[key]  # str, or bytes in files from older h5py/Keras
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        parsed = json.loads(text) if isinstance(text, str) else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidUpload(f"HDF5 attribute `{key}` is not UTF-8 JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidUpload(f"HDF5 attribute `{key}` is not a JSON object")
    return parsed


def inspect_h5(path: str | os.PathLike[str], policy: VetPolicy | None = None) -> H5Summary:
    """Read a Keras HDF5 model's config and training config; raises InvalidUpload if unusable.

    The file's structure and both configs are vetted first (k2e.vetting.h5structure,
    k2e.vetting.configs), with
    ``policy`` (default: the built-in registry's names, no Lambda layers). Runs in the
    inspection sandbox (k2e.vetting.sandbox) when the file is an upload.
    """
    policy = policy if policy is not None else VetPolicy.of(registry())
    try:
        if not h5py.is_hdf5(path):
            raise InvalidUpload("not an HDF5 file")
        with h5py.File(path, "r") as h5:
            vet_h5_structure(h5, os.path.getsize(path))
            config = _attr_json(h5.attrs, "model_config")
            training_config = _attr_json(h5.attrs, "training_config")
            version = h5.attrs.get("keras_version")
    except InvalidUpload:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InvalidUpload(f"corrupt or truncated HDF5 file: {exc}") from exc
    if config is None:
        raise InvalidUpload(
            "HDF5 file has no `model_config` attribute: not a Keras model "
            "(a file from save_weights holds weights only)"
        )
    uses: dict[str, set[str]] = {}
    custom_names = vet_model_config(config, policy, "model_config", uses)
    if training_config is not None:
        custom_names += vet_model_config(training_config, policy, "training_config", uses)
    try:
        summary = parse_model_config(config)
        output_names = [o.name for o in summary.outputs]
        # include_optimizer=False and uncompiled models both save no training_config.
        args = None
        if training_config is not None and "optimizer_config" in training_config:
            args = plain_compile_args(training_config, output_names)
        metric_names = compiled_metric_names(args, output_names)
    except InvalidSpec as exc:
        raise InvalidUpload(f"HDF5 model: {exc.detail}") from exc
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return H5Summary(
        summary=summary,
        compiled=args is not None,
        training_config=training_config,
        metric_names=metric_names,
        keras_version=version if isinstance(version, str) else None,
        compile_args=args,
        custom_names=sorted(set(custom_names)),
        custom_uses=sorted_uses(uses),
    )
