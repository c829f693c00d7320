"""Checks a ConvertRequest against its limits (k2e.spec.limits), its model and its datasets
before anything is queued.

The API runs this on every submission; the worker runs it again before it loads
anything (defence in depth). Everything here reads files with h5py/numpy only.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2e.custom_registry import registry
from k2e.errors import FieldError, InvalidSpec, InvalidUpload, NotFound
from k2e.schemas import ConvertRequest, DatasetInfo, TensorInfo
from k2e.settings import Settings
from k2e.spec import rules
from k2e.spec.custom import check_custom_objects, check_shared_names
from k2e.spec.distribution import distribution_errors
from k2e.spec.dtypes import check_dtype
from k2e.spec.limits import Limits, check_limits, check_model_params
from k2e.storage import Storage, is_upload_id
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.feature_columns import column_shape_error
from k2e.vetting.inspection import H5Summary, sorted_uses
from k2e.vetting.metric_names import compiled_metric_names
from k2e.vetting.model_config import ModelSummary, parse_model_config
from k2e.vetting.sandbox import SandboxLimits, inspect_model_file
from k2e.vetting.stored import verified_inspection

log = logging.getLogger("k2e.spec")


@dataclass(frozen=True)
class ResolvedModel:
    """What the spec's model is, as far as can be known without TensorFlow."""

    summary: ModelSummary
    compiled: bool
    metric_names: list[str]
    path: Path | None  # the model file (HDF5 or .keras), for keras_model_path
    # The file's compile arguments with plain metric names (see inspection.plain_compile_args).
    compile_args: dict[str, Any] | None = None
    # The upload's classes that custom_objects must map (H5Summary.custom_names).
    custom_names: tuple[str, ...] = ()
    # How the model uses the names Keras resolves through custom_objects first
    # (H5Summary.custom_uses); empty for an inspection stored before it was recorded.
    custom_uses: dict[str, list[str]] = field(default_factory=dict)


def resolve_model(
    spec: ConvertRequest,
    storage: Storage,
    settings: Settings,
    reinspect: bool = True,
    recorded_sha256: str | None = None,
) -> ResolvedModel:
    """The spec's model, vetted (k2e.vetting.configs) before anything could load it.

    A file is inspected in the sandbox (k2e.vetting.sandbox). Besides the registry's names, the
    config may use the names ``custom_objects`` maps to registry entries. ``settings``
    give the plugin manifests, ``allow_lambda`` and the sandbox limits. Without
    ``reinspect``, a model uploaded through POST /models is described by the inspection
    stored at upload (it passed a stricter vetting then: registry names only). With
    ``reinspect`` and the upload's ``recorded_sha256`` (the job store's record), the stored
    inspection is used if the file still has that digest (k2e.vetting.stored).
    """
    known = registry(settings.plugins)
    mapped = [name for name, target in (spec.custom_objects or {}).items() if target in known]
    policy = VetPolicy.of([*known, *mapped], settings.allow_lambda)
    if spec.keras_model is not None:
        compile_args = spec.keras_model.compile
        parts = [("config", spec.keras_model.config)]
        parts += [("compile", compile_args.model_dump())] if compile_args is not None else []
        uses: dict[str, set[str]] = {}
        for part, value in parts:
            try:
                vet_model_config(value, policy, f"keras_model.{part}", uses)
            except InvalidUpload as exc:
                loc = ("keras_model", part)
                raise InvalidSpec(exc.detail, [FieldError(loc, exc.detail)]) from exc
        summary = parse_model_config(spec.keras_model.config)
        names = (
            compiled_metric_names(compile_args.model_dump(), [o.name for o in summary.outputs])
            if compile_args
            else []
        )
        return ResolvedModel(
            summary, compile_args is not None, names, None, None, (), sorted_uses(uses)
        )

    assert spec.keras_model_path is not None
    path = model_path(spec.keras_model_path, storage)
    stored = None if reinspect else _stored_inspection(spec.keras_model_path, storage)
    if reinspect and recorded_sha256 is not None and _is_model_id(spec.keras_model_path):
        kept = storage.model_summary(spec.keras_model_path)
        stored = verified_inspection(path, kept, recorded_sha256, policy)
        if stored is not None:  # bench/e2e.py reads this line from the worker's log
            log.info(
                "model %s: its sha256 matches the upload's, stored inspection kept",
                path.parent.name,
            )
    if stored is not None:
        return ResolvedModel(
            stored.summary,
            stored.compiled,
            stored.metric_names,
            path,
            stored.compile_args,
            tuple(stored.custom_names),
            stored.custom_uses,
        )
    fmt = "keras" if path.suffix.lower() == ".keras" else "h5"
    try:
        with storage.local_copy(path) as local:
            h5 = inspect_model_file(local, fmt, policy, SandboxLimits.from_settings(settings))
    except InvalidUpload as exc:
        raise InvalidSpec(exc.detail, [FieldError(("keras_model_path",), exc.detail)]) from exc
    return ResolvedModel(
        h5.summary, h5.compiled, h5.metric_names, path, h5.compile_args, (), h5.custom_uses
    )


def _is_model_id(value: str) -> bool:
    return is_upload_id(value)


def _stored_inspection(value: str, storage: Storage) -> H5Summary | None:
    if not _is_model_id(value):
        return None
    data = storage.model_summary(value)
    return H5Summary.model_validate(data) if data is not None else None


def model_path(value: str, storage: Storage) -> Path:
    """A model id from POST /models, or a file under the storage root."""
    loc = ("keras_model_path",)
    if _is_model_id(value):
        try:
            return storage.model_file(value)
        except NotFound as exc:
            raise InvalidSpec(exc.detail, [FieldError(loc, exc.detail)]) from exc
    try:
        path = storage.resolve_under_root(value, "keras_model_path")
        found = path.is_file() if storage.local else storage.exists(path)
    except InvalidSpec as exc:
        raise InvalidSpec(exc.detail, [FieldError(loc, exc.detail)]) from exc
    except OSError as exc:  # e.g. ENAMETOOLONG under a storage root deeper than usual
        msg = f"`keras_model_path` cannot be opened: {exc.strerror}"
        raise InvalidSpec(msg, [FieldError(loc, msg)]) from None
    if not found:
        msg = f"no model id or file {value!r} under the storage root"
        raise InvalidSpec(msg, [FieldError(loc, msg)])
    return path


def check_spec(
    spec: ConvertRequest,
    storage: Storage,
    settings: Settings,
    reinspect: bool = True,
    recorded_sha256: str | None = None,
    quotas: EffectiveQuotas | None = None,
) -> ResolvedModel:
    """The one check of a parsed spec: its limits (k2e.spec.limits: the server's, and
    the tenant's ``quotas`` when given), its cluster's rules (k2e.spec.distribution), then
    every rule that needs the model or the
    datasets; raises InvalidSpec listing all.

    The API passes ``reinspect=False`` (uploads were inspected when they arrived) and the
    tenant's quotas; the worker checks every file again before loading it: an upload whose
    bytes still match ``recorded_sha256`` (the job store's record) by its stored
    inspection, re-vetted, any other file in the sandbox.
    """
    limits = Limits.of(settings, quotas)
    check_limits(spec, limits)
    cluster = distribution_errors(spec)
    if cluster:
        raise InvalidSpec(cluster[0].msg, cluster)
    model = resolve_model(spec, storage, settings, reinspect, recorded_sha256)
    loc_model = ("keras_model",) if spec.keras_model is not None else ("keras_model_path",)
    check_model_params(loc_model, model.summary.param_count, limits)
    not_compiled = rules.compiled_errors(loc_model, model.compiled)
    if not_compiled:
        raise InvalidSpec(not_compiled[0].msg, not_compiled)
    if model.summary.unconvertible:
        layer_errors = [FieldError(loc_model, why) for why in model.summary.unconvertible]
        raise InvalidSpec(layer_errors[0].msg, layer_errors)

    errors = check_custom_objects(
        spec.custom_objects, model.custom_names, model.custom_uses, settings.plugins
    )
    errors += check_shared_names(loc_model, model.summary)
    errors += rules.checkpoint_format_errors(spec.checkpoint_format, model.summary.is_graph_network)
    errors += rules.check_metric_names_map(spec.metric_names_map, model.metric_names)
    errors += rules.deterministic_errors(spec.deterministic, spec.distribution is not None)
    errors += rules.check_export_outputs(
        spec.export_outputs, [(o.name, o.shape) for o in model.summary.outputs]
    )
    if spec.train is not None:
        errors += check_dataset(("train", "dataset"), spec.train.dataset, model.summary, storage)
    if spec.eval is not None:
        errors += check_dataset(("eval", "dataset"), spec.eval.dataset, model.summary, storage)
    if errors:
        raise InvalidSpec(errors[0].msg, errors)
    return model


def check_dataset(
    loc: tuple[str, ...], dataset_id: str, model: ModelSummary, storage: Storage
) -> list[FieldError]:
    """Every input and output has an array of a compatible shape; weights name real outputs."""
    try:
        info = storage.dataset_info(dataset_id)
    except NotFound as exc:
        return [FieldError(loc, exc.detail)]
    errors = []
    for tensor in model.inputs:
        if tensor.name in model.column_inputs:
            errors += _check_column_array(loc, info, tensor, model.column_inputs[tensor.name])
        else:
            errors += _check_array(loc, info, tensor)
    for tensor in model.outputs:
        errors += _check_array(loc, info, tensor)
    outputs = [o.name for o in model.outputs]
    for name in info.arrays:
        if name == "sample_weights" and len(outputs) != 1:
            errors.append(
                FieldError(
                    (*loc, name),
                    f"a single `sample_weights` array needs a single-output model; this model "
                    f"has outputs {outputs}: use `sample_weights.<output>`",
                )
            )
        elif name.startswith("sample_weights.") and name.split(".", 1)[1] not in outputs:
            errors.append(
                FieldError((*loc, name), f"{name!r} names no output of the model {outputs}")
            )
    return errors


def _check_column_array(
    loc: tuple[str, ...], info: DatasetInfo, tensor: TensorInfo, reads: int | None
) -> list[FieldError]:
    """An input only feature columns read: checked against what they read
    (k2e.vetting.feature_columns), not against the Input's shape."""
    if tensor.name not in info.arrays:
        return _check_array(loc, info, tensor)
    dtype_error = check_dtype(info, tensor)
    if dtype_error is not None:
        return [FieldError((*loc, tensor.name), dtype_error)]
    why = column_shape_error(tensor.name, info.arrays[tensor.name][1:], tensor.shape[1:], reads)
    return [FieldError((*loc, tensor.name), why)] if why is not None else []


def _check_array(loc: tuple[str, ...], info: DatasetInfo, tensor: TensorInfo) -> list[FieldError]:
    if tensor.name not in info.arrays:
        return [
            FieldError(
                (*loc, tensor.name),
                f"the dataset has no array {tensor.name!r}; it has {sorted(info.arrays)}",
            )
        ]
    dtype_error = check_dtype(info, tensor)
    if dtype_error is not None:
        return [FieldError((*loc, tensor.name), dtype_error)]
    have = list(info.arrays[tensor.name][1:])
    want = list(tensor.shape[1:])
    if tensor.shape == [None]:
        # Inspection could not infer this tensor's rank (e.g. after a custom layer).
        return []
    # A [batch, 1] tensor also takes a flat [n] array.
    if want == [1] and have == []:
        return []
    if len(have) != len(want) or any(
        w is not None and w != h for w, h in zip(want, have, strict=True)
    ):
        return [
            FieldError(
                (*loc, tensor.name),
                f"{tensor.name!r} has per-example shape {have}; the model expects {want}",
            )
        ]
    return []
