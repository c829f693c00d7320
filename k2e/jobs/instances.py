"""Prediction instances against the dtypes of the model's inputs, before any worker sees
them: a number the input's dtype cannot hold would wrap around (int32, uint8), turn into
infinity (float32) or stop the worker's conversion (OverflowError); a string input takes
strings only. Each refusal names its place in ``instances``.
"""

from typing import Any

import numpy as np

from k2e.errors import FieldError
from k2e.spec.numbers import MAX_REPORTED

Loc = tuple[str | int, ...]


def check_instances(instances: list[Any], dtypes: dict[str, str]) -> list[FieldError]:
    """What in ``instances`` (TF Serving's row format) the inputs' ``dtypes`` (input name
    -> dtype name, as the upload's inspection gives them) cannot take. Inputs of an
    unknown dtype, and names the model does not have, are left to the worker."""
    found: list[FieldError] = []
    single = next(iter(dtypes)) if len(dtypes) == 1 else None
    for index, instance in enumerate(instances):
        if isinstance(instance, dict):
            for name, value in instance.items():
                if name in dtypes:
                    _check(value, dtypes[name], ("instances", index, name), found)
        elif single is not None:
            _check(instance, dtypes[single], ("instances", index), found)
        if len(found) >= MAX_REPORTED:
            break
    return found[:MAX_REPORTED]


def _check(value: Any, dtype: str, loc: Loc, found: list[FieldError]) -> None:
    problem = _rule(dtype)
    if problem is None:
        return
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack and len(found) < MAX_REPORTED:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((child, (*where, i)) for i, child in reversed(list(enumerate(node))))
            continue
        message = problem(node)
        if message is not None:
            found.append(FieldError(where, message))


def _rule(dtype: str) -> Any:
    """The check of one value for ``dtype``, or None (a dtype k2e does not check)."""
    if dtype == "string":
        return _string
    try:
        kind = np.dtype(dtype)
    except TypeError:
        return None
    if kind.kind in "iu":
        info = np.iinfo(kind)
        return lambda v: _in_range(v, int(info.min), int(info.max), dtype)
    if kind.kind == "f":
        most = float(np.finfo(kind).max)
        return lambda v: _in_range(v, -most, most, dtype)
    return None


def _string(value: Any) -> str | None:
    if isinstance(value, str) or value is None:
        return None
    return f"a string input takes strings; got {type(value).__name__}"


def _in_range(value: Any, least: float, most: float, dtype: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # not a number: the worker's conversion answers for it
    if least <= value <= most:
        return None
    long = isinstance(value, int) and abs(value) >= 10**30
    shown = f"an integer of {len(str(abs(value)))} digits" if long else str(value)
    return f"{shown} is outside what the input's dtype {dtype} holds [{least:g}, {most:g}]"
