"""JSON bodies before and as they are parsed: the depth pre-scan is linear whatever the
body holds, and numbers k2e cannot use (``1e400``, integers beyond int64) are refused
with their location, for POST /convert (JSON and multipart ``spec``) and predictions.
"""

import json
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from k2e.errors import InvalidSpec
from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from service.main import create_app
from service.submission import json_depth, parse_json
from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY, admin_client
from tests.support.api_server import running_api

MIB = 1024 * 1024


def _depth(value: Any) -> int:
    """How deep ``value``'s arrays and objects nest, from the parsed value."""
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


# Strings full of what the scan must skip: quotes, backslashes, brackets, non-ASCII.
_TEXT = st.text(alphabet=st.sampled_from('"\\[]{}ab/\n\u00e9\u2028\U0001f600'), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=40,
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(value=_JSON, ensure_ascii=st.booleans(), indent=st.sampled_from([None, 0, 2]))
def test_json_depth_is_the_parsed_values_depth(value: Any, ensure_ascii: bool, indent) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    assert json_depth(text.encode()) == _depth(value)


@pytest.mark.parametrize("size", [100, (1 << 18) - 3, 1 << 18, (1 << 18) + 1])
def test_json_depth_carries_its_state_across_chunks(size: int) -> None:
    # Escapes, strings and brackets that straddle the scan's chunk boundaries.
    for filler in ("\\", '\\"', "[", "a"):
        value = [[filler * (size // len(filler))], ["[[[", {"k": [[["x"]]]}]]
        text = json.dumps(value).encode()
        assert json_depth(text) == _depth(value) == 6, (size, filler)


# Bodies that made the old depth scan's string regex backtrack (quadratic in their
# length), and others of the same family: (name, first bytes, repeated bytes).
HOSTILE = [
    ("unterminated escaped quotes", b'"', b'\\"'),
    ("unterminated quote and backslash", b'"', b'"\\'),
    ("backslash runs before quotes", b'"', b'\\\\\\"'),
    ("a backslash run", b'"', b"\\"),
    ("short strings without commas", b'["', b'","'),
    ("brackets", b"", b"["),
]


def _hostile(head: bytes, unit: bytes, size: int) -> bytes:
    return (head + unit * (size // len(unit)))[:size]


@pytest.mark.parametrize(("name", "head", "unit"), HOSTILE)
def test_hostile_bodies_of_the_largest_size_are_refused(name: str, head: bytes, unit: bytes):
    with pytest.raises(InvalidSpec) as refused:
        parse_json(_hostile(head, unit, 4 * MIB), "the request body")
    assert "not valid JSON" in refused.value.detail or "deep" in refused.value.detail, name


def test_a_body_that_is_not_utf8_is_refused() -> None:
    utf16 = json.dumps({"a": [1]}).encode("utf-16")
    with pytest.raises(InvalidSpec, match="not UTF-8"):
        parse_json(utf16, "the request body")


# --- numbers k2e cannot use ----------------------------------------------------------------------


@pytest.fixture
def client(tmp_path, redis_server) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url)
    with admin_client(create_app(settings)) as test_client:
        yield test_client


INLINE = {
    "config": {"class_name": "Sequential", "config": {"name": "m", "layers": []}},
    "compile": {
        "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.001}},
        "loss": "mse",
        "loss_weights": [1.0],
    },
}


def _spec_text(learning_rate: str = "0.001", loss_weight: str = "1.0") -> str:
    text = json.dumps({"keras_model": INLINE, "train": {"dataset": "d" * 32, "max_steps": 1}})
    text = text.replace('"learning_rate": 0.001', f'"learning_rate": {learning_rate}')
    return text.replace('"loss_weights": [1.0]', f'"loss_weights": [{loss_weight}]')


OPTIMIZER = ["keras_model", "compile", "optimizer", "config", "learning_rate"]
WEIGHTS = ["keras_model", "compile", "loss_weights", 0]


@pytest.mark.parametrize(
    ("text", "loc", "words"),
    [
        (_spec_text(learning_rate="1e400"), OPTIMIZER, "not a finite number"),
        (_spec_text(learning_rate="-1E+999"), OPTIMIZER, "not a finite number"),
        (_spec_text(loss_weight="1e400"), WEIGHTS, "not a finite number"),
        (_spec_text(loss_weight="1" * 400), WEIGHTS, "outside int64"),
        (_spec_text(learning_rate=str(2**63)), OPTIMIZER, "outside int64"),
    ],
)
def test_unusable_numbers_in_a_spec_are_422_at_their_location(client, text, loc, words) -> None:
    headers = {"content-type": "application/json"}
    for response in (
        client.post("/convert", content=text, headers=headers),
        client.post("/convert", files={"spec": (None, text)}),
    ):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        errors = response.json()["errors"]
        assert errors[0]["loc"] == loc
        assert words in errors[0]["msg"]
    assert client.get("/jobs").json()["items"] == []


def test_the_largest_int64_is_not_refused_as_a_number(client) -> None:
    text = _spec_text(learning_rate=str(2**63 - 1))
    response = client.post("/convert", content=text, headers={"content-type": "application/json"})
    # Refused, but for the unknown dataset (the spec's own rules), not for the number.
    assert response.status_code == 422, response.text
    assert all(error["loc"] != OPTIMIZER for error in response.json()["errors"])


# --- a real API process --------------------------------------------------------------------------


def test_a_hostile_body_of_the_limit_is_refused_while_healthz_answers(tmp_path, redis_server):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "K2E_DATABASE_URL")}
    env.update(
        K2E_DATA_DIR=str(tmp_path / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        PYTHONUNBUFFERED="1",
    )
    with running_api(env, tmp_path / "api.log") as (base, process):
        limit = Settings(data_dir=tmp_path).max_json_bytes
        body = _hostile(b'"', b'\\"', limit)  # the shape, at K2E_MAX_JSON_BYTES
        answers: list[httpx.Response] = []
        headers = {**ADMIN, "content-type": "application/json"}

        def send() -> None:
            # The old scan needed hours for this body: a minute is a generous bound.
            answers.append(httpx.post(f"{base}/convert", content=body, headers=headers, timeout=60))

        sender = threading.Thread(target=send)
        sender.start()
        health = []
        while sender.is_alive() or not health:
            # Each must answer while the hostile body is scanned (the old scan held the GIL).
            health.append(httpx.get(f"{base}/healthz", timeout=30).status_code)
        sender.join()
        assert process.poll() is None
        assert set(health) == {200}
        assert len(answers) == 1
        assert answers[0].status_code == 422, answers[0].text
        assert "not valid JSON" in answers[0].json()["detail"]


def test_the_schema_itself_takes_finite_floats_only() -> None:
    # What the worker validates a stored spec with, whatever the API let through.
    spec = json.loads(_spec_text())
    spec["keras_model"]["compile"]["loss_weights"] = [math.inf]
    with pytest.raises(ValidationError) as refused:
        ConvertRequest.model_validate(spec)
    assert refused.value.errors()[0]["loc"] == (
        "keras_model",
        "compile",
        "loss_weights",
        "list[float]",
        0,
    )
