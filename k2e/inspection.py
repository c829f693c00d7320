"""What a Keras 2.15 model is, read from its JSON config or HDF5 file without TensorFlow.

Metric names follow what ``model_to_estimator``'s Estimator reports (and so what
``metric_names_map`` must map), which is ``model.metrics_names`` minus the losses
except where the two differ (see ``compiled_metric_names``).
"""

import json
import os
import re
from dataclasses import dataclass
from math import prod
from typing import Any

import h5py

from k2e.custom_objects import registry
from k2e.errors import FieldError, InvalidSpec, InvalidUpload
from k2e.h5safety import vet_h5_structure
from k2e.safety import VetPolicy, vet_model_config
from k2e.schemas import TensorInfo

Shape = list[int | None] | None  # None: even the rank is unknown

_SAME_SHAPE = frozenset(
    "Activation Dropout ReLU Softmax LeakyReLU PReLU ELU ThresholdedReLU BatchNormalization "
    "LayerNormalization UnitNormalization GaussianNoise GaussianDropout AlphaDropout "
    "SpatialDropout1D SpatialDropout2D SpatialDropout3D ActivityRegularization Masking".split()
)
_ELEMENTWISE = frozenset("Add Subtract Multiply Average Maximum Minimum".split())
# Strings model.compile re-resolves from the output's shape; the stored fn is the resolution.
_SPECIAL = {
    "accuracy": "_accuracy",
    "acc": "_accuracy",
    "crossentropy": "_crossentropy",
    "ce": "_crossentropy",
}
# keras.metrics.get aliases whose function has another name (Keras 2.15).
_ALIASES = {
    "mae": "mean_absolute_error",
    "mse": "mean_squared_error",
    "logcosh": "log_cosh",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "kullback_leibler_divergence": "kl_divergence",
    "cosine_proximity": "cosine_similarity",
}
# Parameterless metric classes that equal the function named like their default name.
_FUNCTION_CLASSES = frozenset(
    "CategoricalAccuracy SparseCategoricalAccuracy MeanSquaredError MeanAbsoluteError Poisson "
    "MeanAbsolutePercentageError MeanSquaredLogarithmicError Hinge SquaredHinge CategoricalHinge "
    "KLDivergence".split()
)


@dataclass(frozen=True)
class ModelSummary:
    """A model's class, inputs and outputs (as ``model.input_names``/``output_names``), layers."""

    model_class: str
    inputs: list[TensorInfo]
    # A shape whose rank cannot be inferred is reported as [None].
    outputs: list[TensorInfo]
    layer_classes: dict[str, str]
    is_graph_network: bool


@dataclass(frozen=True)
class H5Summary:
    summary: ModelSummary
    compiled: bool
    training_config: dict[str, Any] | None
    metric_names: list[str]
    keras_version: str | None
    # plain_compile_args(training_config): what the worker compiles a loaded model with.
    compile_args: dict[str, Any] | None = None
    format: str = "h5"  # or "keras" (a Keras v3 archive; training_config is its compile_config)


def _spec_error(message: str) -> InvalidSpec:
    return InvalidSpec(message, [FieldError(("keras_model", "config"), message)])


def _is_ref(x: Any) -> bool:
    """A ``[layer_name, node_index, tensor_index(, kwargs)]`` tensor reference."""
    return (
        isinstance(x, list | tuple)
        and len(x) >= 3
        and isinstance(x[0], str)
        and all(isinstance(i, int) for i in x[1:3])
    )


def _refs(struct: Any) -> list[list[Any]]:
    """Flatten nested references in ``tf.nest`` order (dicts by sorted key)."""
    if _is_ref(struct):
        return [struct]
    if isinstance(struct, dict):
        return [r for key in sorted(struct) for r in _refs(struct[key])]
    if isinstance(struct, list | tuple):
        return [r for item in struct for r in _refs(item)]
    return []


def _merge_dims(dims: list[int | None]) -> int | None:
    """One dimension of broadcast inputs: the known size, a size other than 1, or None."""
    known = {d for d in dims if d is not None}
    if len(known) == 1:
        return known.pop()
    rest = known - {1}
    return rest.pop() if len(rest) == 1 else None


def _output_shape(cls: str, cfg: dict[str, Any], ins: list[Shape]) -> Shape:
    """One layer's output shape from its input shapes; None where this module can't tell."""
    shapes = [list(s) for s in ins if s is not None]
    if not shapes or len(shapes) != len(ins):
        return None
    x, same_rank = shapes[0], len({len(s) for s in shapes}) == 1
    if cls in _SAME_SHAPE:
        return x
    if cls == "Embedding":
        return [*x, cfg.get("output_dim")]
    if not x:
        return None
    if cls == "Dense":
        return [*x[:-1], cfg.get("units")]
    if cls in _ELEMENTWISE and same_rank:
        return [_merge_dims(list(dims)) for dims in zip(*shapes, strict=True)]
    if cls == "Concatenate" and same_rank:
        axis = cfg.get("axis", -1) % len(x)
        out = [_merge_dims([s[i] for s in shapes]) for i in range(len(x))]
        joined = [s[axis] for s in shapes]
        out[axis] = sum(d for d in joined if d is not None) if None not in joined else None
        return out
    tail = [d for d in x[1:] if d is not None]
    tail_size = prod(tail) if len(tail) == len(x) - 1 else None
    if cls == "Flatten":
        return [x[0], tail_size]
    if cls == "Reshape":
        target: list[int | None] = list(cfg.get("target_shape", []))
        if -1 in target:
            rest = prod(d for d in target if d is not None and d != -1)
            target[target.index(-1)] = tail_size // rest if tail_size is not None and rest else None
        return [x[0], *target]
    return None


def _layer_name(layer: dict[str, Any]) -> str:
    return str(layer.get("name") or layer["config"]["name"])


def _input_info(layer: dict[str, Any]) -> TensorInfo:
    cfg = layer.get("config", {})
    shape = cfg.get("batch_input_shape", cfg.get("batch_shape"))
    dtype = cfg.get("dtype")
    return TensorInfo(
        name=cfg.get("name", layer.get("name")),
        shape=list(shape),
        dtype=dtype if isinstance(dtype, str) else "float32",
    )


def _output_info(name: str, shape: Shape) -> TensorInfo:
    return TensorInfo(name=name, shape=shape if shape is not None else [None], dtype="float32")


def _functional(cfg: dict[str, Any]) -> tuple[list[TensorInfo], list[TensorInfo]]:
    layers = {_layer_name(layer): layer for layer in cfg["layers"]}
    shapes: dict[tuple[str, int], Shape] = {}
    todo = []
    for name, layer in layers.items():
        if layer["class_name"] == "InputLayer":
            shapes[(name, 0)] = _input_info(layer).shape
        todo += [(name, i, node) for i, node in enumerate(layer.get("inbound_nodes") or [])]
    # Layers are listed in a topological order, so one sweep usually resolves everything.
    while todo:
        pending = []
        for name, i, node in todo:
            refs = [r for r in _refs(node) if r[1] >= 0]  # node -1: a constant argument
            if all((r[0], r[1]) in shapes for r in refs):
                ins = [shapes[(r[0], r[1])] if r[2] == 0 else None for r in refs]
                layer = layers[name]
                shapes[(name, i)] = _output_shape(layer["class_name"], layer["config"], ins)
            else:
                pending.append((name, i, node))
        if len(pending) == len(todo):
            break
        todo = pending
    inputs = [_input_info(layers[r[0]]) for r in _refs(cfg["input_layers"])]
    outputs, taken = [], set()
    for layer_name, node, tensor in (r[:3] for r in _refs(cfg["output_layers"])):
        # Functional._set_output_names: a repeated layer name gets _1, _2, ...
        name, count = layer_name, 1
        while name in taken:
            name, count = f"{layer_name}_{count}", count + 1
        taken.add(name)
        outputs.append(_output_info(name, shapes.get((layer_name, node)) if tensor == 0 else None))
    return inputs, outputs


def _sequential(layers: list[dict[str, Any]]) -> tuple[list[TensorInfo], list[TensorInfo]]:
    if not layers:
        return [], []
    first = layers[0]
    if first["class_name"] == "InputLayer":
        info, rest = _input_info(first), layers[1:]
    elif "batch_input_shape" in first["config"]:
        # No InputLayer in the config: Keras names the input after the first layer.
        info = _input_info(first).model_copy(update={"name": first["config"]["name"] + "_input"})
        rest = layers
    else:
        return [], [_output_info(layers[-1]["config"]["name"], None)]
    shape: Shape = info.shape
    for layer in rest:
        shape = _output_shape(layer["class_name"], layer["config"], [shape])
    return [info], [_output_info(rest[-1]["config"]["name"] if rest else info.name, shape)]


def parse_model_config(config: dict[str, Any]) -> ModelSummary:
    """Summarise a ``model.to_json()`` config; raises InvalidSpec when it is malformed."""
    try:
        model_class, cfg = config["class_name"], config.get("config")
        # Keras < 2.2 wrote a Sequential config as the bare list of layers.
        layers = cfg if isinstance(cfg, list) else (cfg or {}).get("layers")
        if model_class == "Sequential" and isinstance(layers, list):
            inputs, outputs = _sequential(layers)
        elif isinstance(cfg, dict) and {"layers", "input_layers", "output_layers"} <= set(cfg):
            layers = cfg["layers"]
            inputs, outputs = _functional(cfg)
        else:  # A subclassed model: its graph is code, not config.
            return ModelSummary(str(model_class), [], [], {}, False)
        classes = {_layer_name(layer): layer["class_name"] for layer in layers}
        return ModelSummary(model_class, inputs, outputs, classes, True)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise _spec_error(f"malformed Keras model config ({type(exc).__name__}: {exc})") from exc


def _snake(name: str) -> str:
    """keras.utils.generic_utils.to_snake_case: a metric class's default name."""
    name = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name))
    return name.lower() if not name.startswith("_") else "private" + name.lower()


def _metric_name(metric: Any) -> str:
    if isinstance(metric, str):
        return metric
    if isinstance(metric, dict) and isinstance(metric.get("class_name"), str):
        name = (metric.get("config") or {}).get("name")
        return name if isinstance(name, str) and name else _snake(metric["class_name"])
    raise _spec_error(f"metric {metric!r} is neither a name nor a serialized metric")


def _as_list(metric: Any) -> list[Any]:
    return metric if isinstance(metric, list) else ([] if metric is None else [metric])


def _per_output(metrics: Any, output_names: list[str]) -> list[list[Any]]:
    """training_utils_v1.collect_per_output_metric_info: the Estimator's metrics per output."""
    if not metrics:
        return [[] for _ in output_names]
    if isinstance(metrics, dict) and "class_name" not in metrics:
        unknown = sorted(set(metrics) - set(output_names))
        if unknown:
            raise _spec_error(f"metrics name unknown outputs {unknown}; outputs: {output_names}")
        return [_as_list(metrics.get(name)) for name in output_names]
    if not isinstance(metrics, list):
        raise _spec_error(f"metrics must be a list or a dict by output name, not {metrics!r}")
    if any(isinstance(m, list) for m in metrics):
        if len(metrics) != len(output_names):
            raise _spec_error(
                f"a list of lists of metrics needs one list per output "
                f"({len(output_names)}), got {len(metrics)}"
            )
        return [_as_list(m) for m in metrics]
    return [list(metrics) for _ in output_names]  # every metric applies to every output


def compiled_metric_names(
    compile_args: dict[str, Any] | None, output_names: list[str]
) -> list[str]:
    """The metric names the Estimator reports, i.e. the keys ``metric_names_map`` must map.

    Equal to ``model.metrics_names`` minus the losses, except that the Estimator keeps a
    string metric's spelling ('CategoricalAccuracy', where Keras says 'categorical_accuracy')
    and names a weighted metric that repeats a metric ``<name>_1`` (Keras: ``weighted_<name>``).
    """
    if not compile_args:
        return []
    metrics = _per_output(compile_args.get("metrics"), output_names)
    weighted = _per_output(compile_args.get("weighted_metrics"), output_names)
    names: list[str] = []
    for i, output in enumerate(output_names):
        for group in (metrics[i], weighted[i]):
            # One dict per output and group: a repeated name is one metric.
            for metric_name in dict.fromkeys(_metric_name(m) for m in group if m is not None):
                base = f"{output}_{metric_name}" if len(output_names) > 1 else metric_name
                name, j = base, 1
                while name in names:
                    name, j = f"{base}_{j}", j + 1
                names.append(name)
    return names


def _plain_metric(metric: Any, name: str) -> Any:
    """The string compile turns back into ``metric`` named ``name``, else its config so named."""
    if not isinstance(metric, dict):
        return metric
    cls, cfg = metric.get("class_name"), dict(metric.get("config") or {})
    fn = cfg.get("fn") if cls == "MeanMetricWrapper" else None
    if cls in _FUNCTION_CLASSES and set(cfg) <= {"name", "dtype"}:
        fn = _snake(cls)
    if isinstance(fn, str) and cfg.get("dtype", "float32") == "float32":
        if cls == "MeanMetricWrapper" and name in _SPECIAL and fn.endswith(_SPECIAL[name]):
            return name
        if name == fn or _ALIASES.get(name) == fn:
            return name
    return {"class_name": cls, "config": {**cfg, "name": name}}


def _stored_groups(stored: Any, output_names: list[str]) -> list[list[Any]] | None:
    """Keras 2.15's stored form of metrics: one list of named metric configs per output."""
    if (
        isinstance(stored, list)
        and len(stored) == len(output_names) > 0
        and all(isinstance(group, list) for group in stored)
    ):
        return [[m for m in group if m is not None] for group in stored]
    return None


def _given_name(metric: Any, output: str, multi: bool) -> str:
    """The name the user gave: without the ``<output>_`` prefix compile added."""
    name = _metric_name(metric)
    return name[len(output) + 1 :] if multi and name.startswith(output + "_") else name


def _plain_metrics(stored: Any, output_names: list[str], repeated: list[set[str]]) -> Any:
    groups = _stored_groups(stored, output_names)
    if groups is None:  # Not the stored form: already what the user compiled with.
        return stored
    multi, plain = len(output_names) > 1, []
    for output, group, names in zip(output_names, groups, repeated, strict=True):
        items = []
        for metric in group:
            name = _given_name(metric, output, multi)
            # compile names a weighted metric that repeats a metric weighted_<name>.
            if name.startswith("weighted_") and name[len("weighted_") :] in names:
                name = name[len("weighted_") :]
            items.append(_plain_metric(metric, name))
        plain.append(items)
    if not multi:
        return plain[0] or None
    return {o: items for o, items in zip(output_names, plain, strict=True) if items} or None


def plain_compile_args(training_config: dict[str, Any], output_names: list[str]) -> dict[str, Any]:
    """``model.compile`` arguments from an HDF5 ``training_config``, metrics as plain names.

    HDF5 stores each metric as a config already named ``<output>_<metric>``: compiling with
    those would prefix them again (the Estimator reports ``dense_2_dense_2_...``), so each
    becomes the identifier the user gave ("categorical_accuracy", "mae"), or, when no string
    compiles back to it (an ``AUC(name="auc_roc")``), its config named as the user named it.
    """
    multi = len(output_names) > 1
    groups = _stored_groups(training_config.get("metrics"), output_names)
    groups = groups or [[] for _ in output_names]
    repeated = [
        {_given_name(m, o, multi) for m in g} for o, g in zip(output_names, groups, strict=True)
    ]
    args = {
        "loss": training_config.get("loss"),
        "metrics": _plain_metrics(training_config.get("metrics"), output_names, repeated),
        "loss_weights": training_config.get("loss_weights"),
        "optimizer": training_config.get("optimizer_config"),
    }
    weighted = _plain_metrics(training_config.get("weighted_metrics"), output_names, repeated)
    if weighted:
        args["weighted_metrics"] = weighted
    return args


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

    The file's structure and both configs are vetted first (k2e.h5safety, k2e.safety), with
    ``policy`` (default: the built-in registry's names, no Lambda layers). Runs in the
    inspection sandbox (k2e.sandbox) when the file is an upload.
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
    vet_model_config(config, policy, "model_config")
    if training_config is not None:
        vet_model_config(training_config, policy, "training_config")
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
        summary,
        args is not None,
        training_config,
        metric_names,
        version if isinstance(version, str) else None,
        args,
    )
