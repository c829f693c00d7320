"""Which dataset dtypes feed which model inputs: strings feed string inputs, numbers
numeric ones."""

import numpy as np

from k2e.schemas import DatasetInfo, TensorInfo


def value_kind(dtype: str) -> str | None:
    """``string``, ``integer`` or ``float`` for a dataset's or a model's dtype (numpy's
    spellings, ``bytes`` for a tf.Example's bytes_list, Keras's ``string``); None for
    what no input takes (complex numbers, dates, records)."""
    if dtype in ("string", "bytes"):
        return "string"
    if dtype == "bfloat16":
        return "float"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return None
    return {"U": "string", "S": "string", "i": "integer", "u": "integer", "b": "integer"}.get(
        kind, "float" if kind == "f" else None
    )


def check_dtype(info: DatasetInfo, tensor: TensorInfo) -> str | None:
    """Why the dataset's array cannot feed ``tensor`` (an input, or an output's labels),
    or None: strings feed string inputs only, and numbers numeric ones; an integer input
    takes integers (a float would be truncated). A CSV column is text, so it feeds a
    string input whatever it holds."""
    name, have = tensor.name, info.dtypes.get(tensor.name, "float32")
    want = tensor.dtype or "float32"
    have_kind, want_kind = value_kind(have), value_kind(want)
    if have_kind is None:
        return f"{name!r} has dtype {have}, which no model input takes"
    if want_kind == "string":
        if have_kind == "string" or info.format == "csv":
            return None
        return f"{name!r} holds {have} numbers; the model's input {name!r} takes strings"
    if have_kind == "string":
        return f"{name!r} has non-numeric dtype {have} (strings); the model's {name!r} takes {want}"
    if want_kind == "integer" and have_kind == "float":
        return (
            f"{name!r} holds {have} values; the model's input {name!r} takes integers ({want}): "
            "store integers"
        )
    return None
