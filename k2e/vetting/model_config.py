"""What a Keras 2.15 model is from its JSON config, without TensorFlow: inputs, outputs
(with the shapes that can be inferred), layers, and whether it is a graph network."""

from math import prod
from typing import Any

from pydantic import BaseModel, ConfigDict

from k2e.errors import FieldError, InvalidSpec
from k2e.schemas import TensorInfo
from k2e.vetting.feature_columns import (
    ColumnReads,
    column_inputs,
    dense_features_width,
    is_tensor_ref,
)

Shape = list[int | None] | None  # None: even the rank is unknown

_SAME_SHAPE = frozenset(
    "Activation Dropout ReLU Softmax LeakyReLU PReLU ELU ThresholdedReLU BatchNormalization "
    "LayerNormalization UnitNormalization GaussianNoise GaussianDropout AlphaDropout "
    "SpatialDropout1D SpatialDropout2D SpatialDropout3D ActivityRegularization Masking".split()
)
_ELEMENTWISE = frozenset("Add Subtract Multiply Average Maximum Minimum".split())


class ModelSummary(BaseModel):
    """A model's class, inputs and outputs (as ``model.input_names``/``output_names``), layers."""

    model_config = ConfigDict(frozen=True)

    model_class: str
    inputs: list[TensorInfo]
    # A shape whose rank cannot be inferred is reported as [None].
    outputs: list[TensorInfo]
    layer_classes: dict[str, str]
    is_graph_network: bool
    # The model's parameters as far as its config tells (count_params below): a lower
    # bound, None for summaries stored before it was counted.
    param_count: int | None = None
    # Layers model_to_estimator cannot convert, each with why (see unconvertible_layers).
    unconvertible: list[str] = []
    # Inputs that feed only DenseFeatures layers: what their feature columns read of each
    # example (k2e.vetting.feature_columns); the Input's shape does not constrain them.
    column_inputs: ColumnReads = {}


def spec_error(message: str) -> InvalidSpec:
    return InvalidSpec(message, [FieldError(("keras_model", "config"), message)])


def _refs(struct: Any) -> list[list[Any]]:
    """Flatten nested references in ``tf.nest`` order (dicts by sorted key)."""
    if is_tensor_ref(struct):
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
    if cls == "DenseFeatures":
        width = dense_features_width(cfg)
        return None if width is None else [None, width]
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


_CONV = frozenset(
    "Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose "
    "Convolution1D Convolution2D Convolution3D".split()
)
_RNN_GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}


def _size(value: Any, default: int = 1) -> int:
    """A positive size from a config value; what the config does not tell counts as 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return default
    return value


def _sizes(value: Any, rank: int) -> int:
    if isinstance(value, list | tuple):
        return prod(_size(v) for v in value)
    return _size(value) ** rank


def layer_params(cls: str, cfg: Any, ins: list[Shape]) -> int:
    """A layer's trainable weights from its config and the last dimension of its first
    input (1 when unknown): Dense, Embedding, convolutions, recurrent layers, and the
    layers (Bidirectional, TimeDistributed) that wrap them. Other layers count 0."""
    if not isinstance(cfg, dict):
        return 0
    shape = ins[0] if ins else None
    last = _size(shape[-1]) if shape else 1
    if cls == "Dense":
        return _size(cfg.get("units")) * (last + 1)
    if cls == "Embedding":
        return _size(cfg.get("input_dim")) * _size(cfg.get("output_dim"))
    if cls in _CONV:
        rank = int(next(ch for ch in cls if ch.isdigit()))
        filters = _size(cfg.get("filters"))
        return filters * _sizes(cfg.get("kernel_size"), rank) * last + filters
    if cls in _RNN_GATES:
        units = _size(cfg.get("units"))
        return _RNN_GATES[cls] * units * (units + last + 1)
    if cls in ("Bidirectional", "TimeDistributed"):
        inner = cfg.get("layer")
        if isinstance(inner, dict) and isinstance(inner.get("class_name"), str):
            count = layer_params(inner["class_name"], inner.get("config"), ins)
            return 2 * count if cls == "Bidirectional" else count
    if cls in ("Functional", "Sequential", "Model"):  # a model used as a layer
        try:
            inner_summary = parse_model_config({"class_name": cls, "config": cfg})
        except InvalidSpec:
            return 0
        return inner_summary.param_count or 0
    return 0


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


def _functional(cfg: dict[str, Any]) -> tuple[list[TensorInfo], list[TensorInfo], int]:
    layers = {_layer_name(layer): layer for layer in cfg["layers"]}
    params: dict[str, int] = {}
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
                params.setdefault(name, layer_params(layer["class_name"], layer["config"], ins))
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
    for name, layer in layers.items():  # layers no resolved node reached
        if name not in params:
            params[name] = layer_params(layer["class_name"], layer.get("config"), [])
    return inputs, outputs, sum(params.values())


def _sequential(layers: list[dict[str, Any]]) -> tuple[list[TensorInfo], list[TensorInfo], int]:
    if not layers:
        return [], [], 0
    first = layers[0]
    if first["class_name"] == "InputLayer":
        info, rest = _input_info(first), layers[1:]
    elif "batch_input_shape" in first["config"]:
        # No InputLayer in the config: Keras names the input after the first layer.
        info = _input_info(first).model_copy(update={"name": first["config"]["name"] + "_input"})
        rest = layers
    else:
        count = sum(layer_params(layer["class_name"], layer.get("config"), []) for layer in layers)
        return [], [_output_info(layers[-1]["config"]["name"], None)], count
    shape: Shape = info.shape
    count = 0
    for layer in rest:
        count += layer_params(layer["class_name"], layer["config"], [shape])
        shape = _output_shape(layer["class_name"], layer["config"], [shape])
    output = _output_info(rest[-1]["config"]["name"] if rest else info.name, shape)
    return [info], [output], count


def unconvertible_layers(layers: list[dict[str, Any]]) -> list[str]:
    """Layers whose config is fine but that ``model_to_estimator`` fails on, measured on
    TF 2.15.1: its graph-mode clone of a ``TextVectorization`` reads the vocabulary size
    from the eager lookup table ("Attempting to capture an EagerTensor"), and a
    ``StringLookup``/``IntegerLookup`` that encodes (``output_mode`` other than ``int``)
    fails to compare its vocabulary size while being rebuilt."""
    found = []
    for layer in layers:
        cls, cfg = layer.get("class_name"), layer.get("config")
        if not isinstance(cfg, dict):
            continue
        name = f"layer {_layer_name(layer)!r} ({cls})"
        if cls == "TextVectorization":
            found.append(
                f"{name}: model_to_estimator cannot clone a TextVectorization layer (TF 2.15); "
                "split and look up the text before the model, or use StringLookup"
            )
        elif cls in ("StringLookup", "IntegerLookup") and cfg.get("output_mode", "int") != "int":
            found.append(
                f"{name}: model_to_estimator cannot clone a {cls} with output_mode "
                f"{cfg.get('output_mode')!r} (TF 2.15); use output_mode 'int' followed by a "
                "CategoryEncoding layer"
            )
        elif cls in ("Functional", "Sequential", "Model") and isinstance(cfg.get("layers"), list):
            found += unconvertible_layers(cfg["layers"])
    return found


def parse_model_config(config: dict[str, Any]) -> ModelSummary:
    """Summarise a ``model.to_json()`` config; raises InvalidSpec when it is malformed."""
    try:
        model_class, cfg = config["class_name"], config.get("config")
        # Keras < 2.2 wrote a Sequential config as the bare list of layers.
        layers = cfg if isinstance(cfg, list) else (cfg or {}).get("layers")
        columns: ColumnReads = {}
        if model_class == "Sequential" and isinstance(layers, list):
            inputs, outputs, count = _sequential(layers)
        elif isinstance(cfg, dict) and {"layers", "input_layers", "output_layers"} <= set(cfg):
            layers = cfg["layers"]
            inputs, outputs, count = _functional(cfg)
            named = {
                _layer_name(layer): _input_info(layer).name
                for layer in layers
                if layer.get("class_name") == "InputLayer"
            }
            columns = column_inputs(layers, named)
        else:  # A subclassed model: its graph is code, not config.
            return ModelSummary(
                model_class=str(model_class),
                inputs=[],
                outputs=[],
                layer_classes={},
                is_graph_network=False,
            )
        classes = {_layer_name(layer): layer["class_name"] for layer in layers}
        return ModelSummary(
            model_class=model_class,
            inputs=inputs,
            outputs=outputs,
            layer_classes=classes,
            is_graph_network=True,
            param_count=count,
            unconvertible=unconvertible_layers(layers),
            column_inputs=columns,
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise spec_error(f"malformed Keras model config ({type(exc).__name__}: {exc})") from exc
