"""Numbers a JSON body can carry that k2e cannot use.

``json.loads`` reads ``1e400`` as infinity and an integer of any length as a Python int;
TensorFlow, numpy and the job store take neither. A body holding one is refused where it
arrives, naming where the number is, rather than failing later in a worker.
"""

import math
import re
from typing import Any

from k2e.errors import FieldError

# The integers k2e's numbers fit in: TensorFlow's int64 (steps, sizes, seeds) and the job
# store's INTEGER columns (int32: timeout_s). The schema's bounds (k2e.schemas) are these.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1
# A body with many such numbers: the first few name the problem well enough.
MAX_REPORTED = 20


def number_problem(value: Any) -> str | None:
    """Why ``value`` (a number parsed from JSON) is unusable, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return (
            f"{value} is not a finite number (a JSON number beyond ±1.8e308 reads as "
            "infinity): k2e takes finite numbers only"
        )
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        digits = len(str(abs(value)))
        return (
            f"an integer of {digits} digits is outside int64, beyond its limits [-2**63, 2**63-1]"
        )
    return None


# Where an unusable number can be in JSON text: an integer beyond int64 has 19 digits or
# more; a float reaches infinity only with a 3-digit exponent or 210 digits before its
# point. Text without either holds none, and is not walked.
_MAYBE_UNUSABLE = re.compile(r"[0-9]{19}|[eE][-+]?[0-9]{3}")
_SHORT = 16


def may_hold_unusable(text: str) -> bool:
    """False when JSON ``text`` cannot hold an unusable number (a linear scan)."""
    return _MAYBE_UNUSABLE.search(text) is not None


def unusable_numbers(value: Any, loc: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Every unusable number in parsed JSON (at most MAX_REPORTED), each with its path.

    One pass over the values, as deep as they nest (the caller bounds that: parse_json's
    depth scan). A long array of numbers alone is checked by its least and greatest.
    """
    found: list[FieldError] = []
    if type(value) is list or type(value) is dict:
        _walk(value, list(loc), found)
    else:
        problem = number_problem(value) if isinstance(value, int | float) else None
        found += [FieldError(loc, problem)] if problem is not None else []
    return found


def _walk(node: list[Any] | dict[str, Any], path: list[str | int], found: list[FieldError]) -> None:
    if isinstance(node, list):
        if len(node) > _SHORT:
            try:
                if INT64_MIN <= min(node) and max(node) <= INT64_MAX:
                    return  # numbers only, all within int64's range (so finite)
            except (TypeError, ValueError):  # other types mixed in
                pass
        items: Any = enumerate(node)
    else:
        items = node.items()
    for key, child in items:
        if len(found) >= MAX_REPORTED:
            return
        kind = type(child)
        if kind is dict or kind is list:
            path.append(key)
            _walk(child, path, found)
            path.pop()
        elif kind is not str and child is not None:
            problem = number_problem(child)
            if problem is not None:
                found.append(FieldError((*path, key), problem))
