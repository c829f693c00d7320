"""Running an exported SavedModel's signatures on example arrays, in a fresh graph.

Shared by the export's verification (worker/verify.py), its TF Serving warm-up
requests (worker/warmup.py) and POST /jobs/{id}/predict.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from worker.tfrt import tf

# Regress and classify signatures name their one output this way; the Estimator names
# such a signature after the model output it comes from (its export_outputs key).
HEAD_OUTPUTS = ("outputs", "scores")


@contextmanager
def loaded(path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A session on the SavedModel at ``path`` in a graph of its own, and its signatures
    (internal ones, ``__...``, left out)."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], str(path))
        signatures = {k: v for k, v in meta.signature_def.items() if not k.startswith("__")}
        yield session, signatures


def serialize_examples(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """One serialized ``tf.train.Example`` per row, a feature per array (flattened):
    what the parsing signatures (serving_default with heads, classify, regress) take."""
    n = len(next(iter(features.values())))
    rows = []
    for i in range(n):
        example = tf.train.Example()
        for name, array in features.items():
            values = np.asarray(array[i]).reshape(-1)
            feature = example.features.feature[name]
            if values.dtype.kind in "SUO":
                feature.bytes_list.value.extend(_as_bytes(v) for v in values)
            elif values.dtype.kind in "iub":
                feature.int64_list.value.extend(int(v) for v in values)
            else:
                feature.float_list.value.extend(float(v) for v in values)
        rows.append(example.SerializeToString())
    return np.array(rows, dtype=object)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def signature_inputs(signature: Any, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a signature takes, by its input keys: the features themselves (raw
    signatures), or serialized Examples for a lone string input that is not a feature."""
    keys = list(signature.inputs)
    if len(keys) == 1 and keys[0] not in features:
        info = signature.inputs[keys[0]]
        if info.dtype == tf.string.as_datatype_enum:
            return {keys[0]: serialize_examples(features)}
    missing = [k for k in keys if k not in features]
    if missing:
        raise KeyError(f"the signature takes {sorted(keys)}; no features for {missing}")
    return {k: np.asarray(features[k]) for k in keys}


def run_signature(
    session: Any, signature: Any, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A signature's outputs, by output key, for ``inputs`` (by input key)."""
    feed = {signature.inputs[k].name: v for k, v in inputs.items()}
    fetch = {k: v.name for k, v in signature.outputs.items()}
    result: dict[str, np.ndarray] = session.run(fetch, feed_dict=feed)
    return result


def expected_outputs(
    name: str, signature: Any, predictions: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What each output of signature ``name`` must equal among the Estimator's
    predictions (keyed by model output name). A classify signature's ``classes`` (label
    strings) has no prediction to compare with."""
    expected = {}
    for key in signature.outputs:
        if key in predictions:
            expected[key] = predictions[key]
        elif key in HEAD_OUTPUTS and name.split(":")[-1] in predictions:
            expected[key] = predictions[name.split(":")[-1]]
    return expected
