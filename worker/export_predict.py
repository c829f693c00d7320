"""Predictions of a job's exported SavedModel for POST /jobs/{id}/predict."""

from pathlib import Path
from typing import Any

import numpy as np

from worker.signatures import loaded, run_signature
from worker.tfrt import tf

RAW_DEFAULT = "raw:serving_default"


class BadInstances(ValueError):
    """The instances do not fit the signature: the message goes back to the client."""


def predict(export_dir: Path, instances: list[Any], signature_name: str | None) -> dict[str, Any]:
    """Run ``instances`` (TF Serving's row format) through a signature of the SavedModel."""
    with loaded(export_dir) as (session, signatures):
        name = signature_name or _raw_signature(signatures)
        if name not in signatures:
            raise BadInstances(f"no signature {name!r}; the export has {sorted(signatures)}")
        signature = signatures[name]
        inputs = input_columns(signature, instances)
        try:
            outputs = run_signature(session, signature, inputs)
        except (ValueError, tf.errors.OpError) as exc:
            raise BadInstances(f"the signature {name!r} refused the instances: {exc}") from None
    keys = sorted(outputs)
    rows = []
    for i in range(len(instances)):
        row = {k: _json_value(outputs[k][i]) for k in keys}
        rows.append(row[keys[0]] if len(keys) == 1 else row)
    return {"signature_name": name, "predictions": rows}


def _raw_signature(signatures: dict[str, Any]) -> str:
    # With classify/regress heads, serving_default parses serialized tf.Examples; the raw
    # tensors are under raw:serving_default.
    return RAW_DEFAULT if RAW_DEFAULT in signatures else "serving_default"


def input_columns(signature: Any, instances: list[Any]) -> dict[str, np.ndarray]:
    """One array per signature input, from the instances' rows."""
    keys = sorted(signature.inputs)
    columns: dict[str, list[Any]] = {k: [] for k in keys}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            if len(keys) != 1:
                raise BadInstances(
                    f"instances[{index}] must be an object keyed by input name {keys}"
                )
            instance = {keys[0]: instance}
        missing = [k for k in keys if k not in instance]
        extra = sorted(set(instance) - set(keys))
        if missing or extra:
            raise BadInstances(
                f"instances[{index}] has inputs {sorted(instance)}; the signature takes {keys}"
            )
        for k in keys:
            columns[k].append(instance[k])
    arrays = {}
    for k in keys:
        info = signature.inputs[k]
        dtype = tf.as_dtype(info.dtype)
        try:
            value = np.asarray(columns[k], dtype=object if dtype == tf.string else dtype.name)
        except (TypeError, ValueError, OverflowError) as exc:
            # OverflowError: a number beyond the dtype (the API refuses the ones it can see).
            raise BadInstances(f"input {k!r} is not a {dtype.name} array: {exc}") from None
        if dtype == tf.string:
            try:
                value = np.vectorize(_as_bytes, otypes=[object])(value)
            except TypeError as exc:
                raise BadInstances(f"input {k!r}: {exc}") from None
        want = [d.size for d in info.tensor_shape.dim]
        have = list(value.shape)
        fits = len(want) == len(have) and all(w in (-1, h) for w, h in zip(want, have, strict=True))
        if not info.tensor_shape.unknown_rank and not fits:
            shape = ["batch" if w == -1 else w for w in want]
            raise BadInstances(f"input {k!r} has shape {have}; the signature takes {shape}")
        arrays[k] = value
    return arrays


def _as_bytes(value: Any) -> bytes:
    # Never bytes(value) of a number: bytes(10**12) would allocate a terabyte of zeros.
    if not isinstance(value, str):
        raise TypeError(f"a string input takes strings; got {type(value).__name__}")
    return value.encode()


def _json_value(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda v: v.decode(errors="replace"), otypes=[object])(array).tolist()
    return array.tolist()
