"""What the property-based fuzzes of the API share: byte mutations of a valid file,
random JSON values, and the check that an error is a documented problem (docs/api.md)."""

import json
from typing import Any

from hypothesis import strategies as st

PROBLEM_JSON = "application/problem+json"

# Numbers past what JSON, the store's columns or TensorFlow hold, and path- or URL-like
# strings: what a careless or hostile client puts where a config expects a small number.
EDGE_VALUES = st.sampled_from(
    [0, -1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**40, 1e308, "/etc/passwd", "https://x.example/"]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | EDGE_VALUES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with bytes overwritten, cut, inserted or repeated; or random bytes."""
    content = bytearray(seed)
    how = draw(st.sampled_from(["random", "flip", "truncate", "splice", "repeat"]))
    if how == "random":
        return draw(st.binary(min_size=1, max_size=4096))
    if how == "flip":
        for _ in range(draw(st.integers(1, 16))):
            at = draw(st.integers(0, len(content) - 1))
            content[at] = draw(st.integers(0, 255))
    elif how == "truncate":
        content = content[: draw(st.integers(1, len(content)))]
    elif how == "splice":
        at = draw(st.integers(0, len(content)))
        content[at:at] = draw(st.binary(min_size=1, max_size=64))
    else:
        at = draw(st.integers(0, len(content) - 1))
        content = content[:at] + content[at:] * draw(st.integers(2, 5))
    return bytes(content or b"\0")


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) to a value inside ``value``, ``()`` included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += json_paths(child, (*prefix, index))
    return paths


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any, edits: int = 3) -> Any:
    """A copy of ``seed`` with up to ``edits`` values replaced by random ones or removed."""
    document = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, edits))):
        path = draw(st.sampled_from(json_paths(document)))
        if not path:
            return draw(JSON_VALUES)
        *parents, leaf = path
        node = document
        for part in parents:
            node = node[part]
        if draw(st.booleans()) or not isinstance(node, dict):
            node[leaf] = draw(JSON_VALUES)
        else:
            del node[leaf]
    return document


def assert_problem(response: Any) -> None:
    """An error answer is a problem+json with the fields docs/api.md documents."""
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body = response.json()
    assert body["type"] == "about:blank", body
    assert body["status"] == response.status_code, body
    for text in (body["title"], body["detail"]):
        assert isinstance(text, str), body
        assert text.strip(), body
    assert isinstance(body["errors"], list), body
    for error in body["errors"]:
        assert isinstance(error["loc"], list), body
        assert isinstance(error["msg"], str), body
        assert error["msg"].strip(), body
