"""What the feature columns of a model's ``DenseFeatures`` layers read, from its config.

``model_to_estimator`` hands the Keras model the input_fn's features as they are; an input
that feeds only ``DenseFeatures`` layers is read by their columns, not shaped by its
``Input``: the library trains a model whose ``Input(shape=(4,), dtype="int64")`` feeds an
``indicator_column(categorical_column_with_identity("cp", 4))`` on scalar features
(tensorflow-estimator 2.15's own test). Keras checks such a feature against the ``Input``
loosely (``InputSpec`` with ``allow_last_axis_squeeze``: a trailing 1 is dropped from both
shapes, then the dimensions both have are compared); the columns then take what they can: a
numeric column reshapes each example to its ``shape`` (the element counts must agree), a
categorical column takes a scalar or a list of ids per example.
"""

from math import prod
from typing import Any

from k2e.schemas import TensorInfo

# Input name -> the elements a numeric column reads of each example, or None when only
# categorical columns (or a weighted column's weights) read it: a scalar or a list.
ColumnReads = dict[str, int | None]

_CATEGORICAL = frozenset(
    "IdentityCategoricalColumn HashedCategoricalColumn VocabularyListCategoricalColumn".split()
)


def _reads(column: Any, found: dict[str, int | None]) -> None:
    if not isinstance(column, dict):
        if isinstance(column, str):  # a crossed column's raw key
            found.setdefault(column, None)
        return
    cls, cfg = column.get("class_name"), column.get("config")
    if not isinstance(cfg, dict):
        return
    if cls == "NumericColumn" and isinstance(cfg.get("key"), str):
        shape = cfg.get("shape") or [1]
        if isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape):
            found[cfg["key"]] = prod(shape)  # a numeric read is the stricter one
    elif cls in _CATEGORICAL and isinstance(cfg.get("key"), str):
        found.setdefault(cfg["key"], None)
    elif cls == "WeightedCategoricalColumn":
        _reads(cfg.get("categorical_column"), found)
        if isinstance(cfg.get("weight_feature_key"), str):
            found.setdefault(cfg["weight_feature_key"], None)
    elif cls == "CrossedColumn":
        for key in cfg.get("keys") or []:
            _reads(key, found)
    else:  # bucketized, indicator and embedding columns wrap another column
        for inner in ("source_column", "categorical_column"):
            _reads(cfg.get(inner), found)


def _buckets(column: Any) -> int | None:
    """How many ids a categorical column can give (its indicator's width)."""
    if not isinstance(column, dict) or not isinstance(column.get("config"), dict):
        return None
    cls, cfg = column.get("class_name"), column["config"]
    if cls == "IdentityCategoricalColumn":
        return _positive(cfg.get("number_buckets", cfg.get("num_buckets")))
    if cls in ("HashedCategoricalColumn", "CrossedColumn"):
        return _positive(cfg.get("hash_bucket_size"))
    if cls == "VocabularyListCategoricalColumn":
        vocabulary = cfg.get("vocabulary_list")
        oov = cfg.get("num_oov_buckets") or 0
        size = len(vocabulary) if isinstance(vocabulary, list) else None
        return size + oov if size is not None and isinstance(oov, int) else None
    if cls == "WeightedCategoricalColumn":
        return _buckets(cfg.get("categorical_column"))
    if cls == "BucketizedColumn":
        return _dense_width(column)
    return None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _dense_width(column: Any) -> int | None:
    """The values a dense column adds to each example of DenseFeatures' output; None when
    the config does not tell."""
    if not isinstance(column, dict) or not isinstance(column.get("config"), dict):
        return None
    cls, cfg = column.get("class_name"), column["config"]
    if cls == "NumericColumn":
        shape = cfg.get("shape") or [1]
        ok = isinstance(shape, list) and all(_positive(d) for d in shape)
        return prod(shape) if ok else None
    if cls == "BucketizedColumn":
        source, boundaries = _dense_width(cfg.get("source_column")), cfg.get("boundaries")
        if source is None or not isinstance(boundaries, list):
            return None
        return source * (len(boundaries) + 1)
    if cls == "IndicatorColumn":
        return _buckets(cfg.get("categorical_column"))
    if cls in ("EmbeddingColumn", "SharedEmbeddingColumn"):
        return _positive(cfg.get("dimension"))
    return None


def dense_features_width(config: dict[str, Any]) -> int | None:
    """The width of a DenseFeatures layer's output (``[batch, width]``): its columns'
    values side by side; None when one column's is not known."""
    columns = config.get("feature_columns")
    if not isinstance(columns, list) or not columns:
        return None
    widths = [_dense_width(column) for column in columns]
    return None if None in widths else sum(w for w in widths if w is not None)


def column_inputs(layers: list[dict[str, Any]], input_names: dict[str, str]) -> ColumnReads:
    """The model inputs (``input_names``: input layer name -> input name) that feed only
    DenseFeatures layers, each with what their columns read of it."""
    consumers: dict[str, set[str]] = {}
    reads: dict[str, list[int | None]] = {}
    for layer in layers:
        cls = layer.get("class_name")
        cfg = layer.get("config")
        cfg = cfg if isinstance(cfg, dict) else {}
        columns: dict[str, int | None] = {}
        if cls == "DenseFeatures":
            for column in cfg.get("feature_columns") or []:
                _reads(column, columns)
        for node in layer.get("inbound_nodes") or []:
            refs = node.items() if isinstance(node, dict) else [(None, r) for r in _flat(node)]
            for key, ref in refs:
                if not is_tensor_ref(ref) or ref[0] not in input_names:
                    continue
                consumers.setdefault(ref[0], set()).add(str(cls))
                if cls == "DenseFeatures" and key in columns:
                    reads.setdefault(ref[0], []).append(columns[key])
    found: ColumnReads = {}
    for layer_name, input_name in input_names.items():
        if consumers.get(layer_name) == {"DenseFeatures"} and layer_name in reads:
            numeric = [n for n in reads[layer_name] if n is not None]
            found[input_name] = numeric[0] if numeric else None
    return found


def is_tensor_ref(x: Any) -> bool:
    """A ``[layer_name, node_index, tensor_index(, kwargs)]`` tensor reference in a config."""
    return (
        isinstance(x, list | tuple)
        and len(x) >= 3
        and isinstance(x[0], str)
        and all(isinstance(i, int) for i in x[1:3])
    )


def _flat(node: Any) -> list[Any]:
    if is_tensor_ref(node):
        return [node]
    if isinstance(node, dict):
        return [r for v in node.values() for r in _flat(v)]
    if isinstance(node, list | tuple):
        return [r for item in node for r in _flat(item)]
    return []


def column_shape_error(
    name: str, have: list[int], want: list[int | None], reads: int | None
) -> str | None:
    """Why a feature of per-example shape ``have`` cannot feed an input of per-example shape
    ``want`` that only feature columns read (``reads``: column_inputs); None when it can."""
    a, b = list(have), list(want)
    if a and a[-1] == 1:
        a = a[:-1]
    if b and b[-1] == 1:
        b = b[:-1]
    # Keras's InputSpec compares the dimensions both shapes have (the batch first).
    if any(w is not None and w != h for w, h in zip(b, a, strict=False)):
        return (
            f"{name!r} has per-example shape {have}; the model's Input expects {want} "
            "(a feature-column input takes a scalar, [1], or the Input's own shape)"
        )
    if reads is None:
        if len(have) > 1:
            return (
                f"{name!r} has per-example shape {have}; its categorical feature columns "
                "read a scalar or a list of ids per example"
            )
        return None
    if prod(have) != reads:
        return (
            f"{name!r} has per-example shape {have} ({prod(have)} values); its numeric "
            f"feature column reads {reads} values per example"
        )
    return None


def column_example_shape(want: list[int | None], reads: int | None) -> list[int]:
    """The per-example shape a feature-column input is exported with when no data says:
    one value (``[1]``) unless a numeric column reads more (then the Input's shape, if it
    holds that many values, else a flat list)."""
    if reads is None or reads == 1:
        return [1]
    if None not in want and prod(d for d in want if d is not None) == reads:
        return [d for d in want if d is not None]
    return [reads]


def fed_inputs(
    inputs: list[TensorInfo], reads: ColumnReads, arrays: dict[str, list[int]] | None
) -> list[TensorInfo]:
    """The model's inputs with the shapes a job feeds them. A feature-column input keeps
    its Input's shape when the job's data (``arrays``: a dataset's) has it (or is the flat
    form of a ``[batch, 1]`` input), or, without data, when its columns read that shape;
    otherwise it takes the data's per-example shape (the library's scalar ids for an
    ``Input((4,))``), or without data column_example_shape. Other inputs keep theirs."""
    fed = []
    for t in inputs:
        want = t.shape[1:]
        have = (arrays or {}).get(t.name)
        if t.name in reads and have is not None and not _input_shaped(have[1:], want):
            t = t.model_copy(update={"shape": [None, *have[1:]]})
        elif t.name in reads and have is None and not _columns_read(want, reads[t.name]):
            example = column_example_shape(want, reads[t.name])
            t = t.model_copy(update={"shape": [None, *example]})
        fed.append(t)
    return fed


def _input_shaped(have: list[int], want: list[int | None]) -> bool:
    if want == [1] and not have:
        return True
    if len(have) != len(want):
        return False
    return all(w is None or w == h for w, h in zip(want, have, strict=True))


def _columns_read(want: list[int | None], reads: int | None) -> bool:
    if reads is None:
        return len(want) <= 1
    return None not in want and prod(d for d in want if d is not None) == reads
