"""Limits of what one POST /convert may send and ask for, through the real API.

Hostile or careless bodies (deep JSON, huge bodies, integers beyond the store's columns,
many multipart parts, oversized fields), specs beyond the server's limits (batch size,
shuffle buffer, steps, checkpoints, model parameters) and model configs that name files
on the server each answer a 4xx problem naming the field or the limit, and create no job.
A property-based fuzz of bodies checks that nothing answers 5xx.
"""

import copy
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from k2e.settings import Settings
from k2e.vetting.model_config import parse_model_config
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.fuzz_inputs import JSON_VALUES, assert_problem, mutated_json

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

PROBLEM = "application/problem+json"
Spec = dict[str, Any]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _upload(client: TestClient, path: str, name: str, content: bytes) -> str:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _vocabulary_file(tmp: Path) -> Path:
    path = tmp / "vocab.txt"
    path.write_text("a\nb\n")
    return path


def _lookup_model(vocabulary: Any) -> dict[str, Any]:
    """A real Keras config whose StringLookup layer has ``vocabulary`` (a path or a list)."""
    x = tf.keras.Input((1,), dtype="string", name="x")
    ids = tf.keras.layers.StringLookup(vocabulary=vocabulary, name="lookup")(x)
    out = tf.keras.layers.Dense(1, name="out")(tf.keras.layers.Embedding(4, 2, name="emb")(ids))
    return json.loads(tf.keras.Model(x, out).to_json())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("limits")
    # The tenant's max_steps quota is raised above the server's K2E_MAX_STEPS, so that the
    # server-wide ceiling is what a huge max_steps meets.
    settings = Settings(data_dir=root, redis_url=redis_server.url, quota_max_steps=10**15)
    scratch = tmp_path_factory.mktemp("limit-models")
    seed = keras_models.save_h5(keras_models.seed_multi_io_model(), scratch / "seed.h5")
    vocab = _vocabulary_file(scratch)
    with admin_client(create_app(settings)) as client:
        ids = {
            "model": _upload(client, "/models", "seed.h5", seed.read_bytes()),
            "data": _upload(
                client, "/datasets", "d.npz", _npz(keras_models.seed_multi_io_data(n=32))
            ),
        }
        yield {
            "client": client,
            "ids": ids,
            "settings": settings,
            "seed": seed,
            "scratch": scratch,
            "vocab": vocab,
            "inline": json.loads(keras_models.seed_multi_io_model().to_json()),
        }


def base(ids: dict[str, str]) -> Spec:
    return {
        "keras_model_path": ids["model"],
        "train": {"dataset": ids["data"], "max_steps": 5},
        "eval": {"dataset": ids["data"]},
    }


def _jobs(client: TestClient) -> list[Any]:
    return client.get("/jobs").json()["items"]


def _refused(
    client: TestClient,
    send: Callable[[], Any],
    status: int | tuple[int, ...],
    loc: list[Any] | None,
    *texts: str,
) -> dict[str, Any]:
    """Send, and check: the status, a problem+json body, ``loc`` among errors[].loc (when
    given), every text in detail or a msg, and no job created."""
    before = _jobs(client)
    response = send()
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    if loc is not None:
        locs = [e["loc"] for e in body["errors"]]
        assert any(found[: len(loc)] == loc for found in locs), locs
    messages = [body["detail"], *(e["msg"] for e in body["errors"])]
    for text in texts:
        assert any(text in m for m in messages), messages
    assert _jobs(client) == before, "no job may be created"
    assert client.get("/healthz").status_code == 200
    return body


def _post_json(client: TestClient, content: bytes | Iterator[bytes]) -> Callable[[], Any]:
    headers = {"Content-Type": "application/json"}
    return lambda: client.post("/convert", content=content, headers=headers)


# --- the body: size, depth, numbers ---------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 2_000, 200_000])
def test_deeply_nested_json_is_refused_before_parsing(env, depth: int) -> None:
    client = env["client"]
    body = b"[" * depth + b"]" * depth
    _refused(client, _post_json(client, body), 422, [], f"{depth} deep", "limit is 64")


def test_deep_nesting_inside_a_valid_spec(env) -> None:
    client, ids = env["client"], env["ids"]
    text = json.dumps(base(ids))[:-1] + ', "metric_names_map": ' + "[" * 5000 + "]" * 5000 + "}"
    _refused(client, _post_json(client, text.encode()), 422, [], "limit is 64")


def test_brackets_inside_strings_do_not_count(env) -> None:
    client, ids = env["client"], env["ids"]
    spec = {**base(ids), "model_dir": "x", "metric_names_map": {"[" * 500: "{" * 500}}
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    assert "deep" not in response.json()["detail"]
    assert "metric_names_map" in response.text


def test_huge_json_body_is_refused(env) -> None:
    client, ids = env["client"], env["ids"]
    limit = env["settings"].max_json_bytes
    spec = {**base(ids), "pad": "x" * (limit + 1)}
    _refused(client, _post_json(client, json.dumps(spec).encode()), 413, None, "K2E_MAX_JSON_BYTES")


def test_huge_json_body_without_a_length_is_refused_while_it_streams(env) -> None:
    client = env["client"]
    limit = env["settings"].max_json_bytes
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(limit // 65536 + 64):
            sent.append(1)
            yield b"x" * 65536
        yield b'"}'

    _refused(client, _post_json(client, chunks()), 413, None, "K2E_MAX_JSON_BYTES")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("timeout_s", 2**31),
        ("timeout_s", 10**30),
        ("train.max_steps", 2**63),
        ("train.batch_size", 2**63),
        ("train.shuffle_buffer", 2**64),
        ("train.shuffle_seed", 2**63),
        ("train.shuffle_seed", -(2**63) - 1),
        ("eval.steps", 2**63),
        ("eval.batch_size", 2**70),
        ("config.tf_random_seed", 2**64),
        ("config.save_summary_steps", 2**63),
        ("config.save_checkpoints_steps", 2**63),
        ("config.save_checkpoints_secs", 2**31),
        ("config.keep_checkpoint_max", 2**31),
        ("config.log_step_count_steps", 2**63),
        ("config.keep_checkpoint_every_n_hours", 1e300),
    ],
)
def test_integers_beyond_the_store_and_tensorflow(env, path: str, value: int) -> None:
    client, ids = env["client"], env["ids"]
    spec = copy.deepcopy(base(ids))
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    body = _refused(client, lambda: client.post("/convert", json=spec), 422, path.split("."))
    assert "than or equal to" in body["detail"] or "limit" in body["detail"]


@pytest.mark.parametrize("literal", [b"9" * 5000, b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_numbers_json_cannot_hold(env, literal: bytes) -> None:
    client, ids = env["client"], env["ids"]
    text = json.dumps(base(ids)).replace('"max_steps": 5', '"max_steps": __N__')
    body = text.encode().replace(b"__N__", literal)
    _refused(client, _post_json(client, body), 422, None)


# --- multipart -----------------------------------------------------------------------------


def test_too_many_multipart_parts(env) -> None:
    client, ids = env["client"], env["ids"]
    data = {f"extra{i}": "x" for i in range(40)} | {"spec": json.dumps(base(ids))}
    _refused(
        client,
        lambda: client.post("/convert", data=data, files={"model": ("m.h5", b"x")}),
        422,
        None,
        "K2E_MAX_MULTIPART_PARTS",
    )


def test_oversized_multipart_field(env) -> None:
    client, ids = env["client"], env["ids"]
    limit = env["settings"].max_field_bytes
    spec = json.dumps({**base(ids), "pad": "x" * limit})
    _refused(
        client,
        lambda: client.post("/convert", data={"spec": spec}, files={"model": ("m.h5", b"x")}),
        413,
        None,
        "'spec'",
        "K2E_MAX_FIELD_BYTES",
    )


def test_oversized_part_headers(env) -> None:
    client = env["client"]
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=spec\r\n"
        f"X-Pad: {'x' * 20000}\r\n\r\n{{}}\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    _refused(
        client,
        lambda: client.post("/convert", content=body, headers=headers),
        422,
        None,
        "header",
    )


def test_deep_multipart_spec(env) -> None:
    client = env["client"]
    spec = "[" * 100_000 + "]" * 100_000
    _refused(
        client,
        lambda: client.post("/convert", data={"spec": spec}, files={"model": ("m.h5", b"x")}),
        422,
        [],
        "limit is 64",
    )


# --- the server's spec limits --------------------------------------------------------------


def _set(spec: Spec, path: str, value: Any) -> Spec:
    spec = copy.deepcopy(spec)
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return spec


LIMITS = [
    ("batch-size", {"train.batch_size": 65_537}, ["train", "batch_size"], "K2E_MAX_BATCH_SIZE"),
    ("eval-batch", {"eval.batch_size": 10**9}, ["eval", "batch_size"], "K2E_MAX_BATCH_SIZE"),
    (
        "shuffle-buffer",
        {"train.shuffle_buffer": 1_000_001},
        ["train", "shuffle_buffer"],
        "K2E_MAX_SHUFFLE_BUFFER",
    ),
    ("max-steps", {"train.max_steps": 10**12}, ["train", "max_steps"], "K2E_MAX_STEPS"),
    ("eval-steps", {"eval.steps": 10**12}, ["eval", "steps"], "K2E_MAX_STEPS"),
    (
        "keep-all-checkpoints",
        {"config.keep_checkpoint_max": 0},
        ["config", "keep_checkpoint_max"],
        "keeps every checkpoint",
    ),
    (
        "keep-many-checkpoints",
        {"config.keep_checkpoint_max": 101},
        ["config", "keep_checkpoint_max"],
        "K2E_MAX_KEEP_CHECKPOINTS",
    ),
    (
        "checkpoint-every-step",
        {"config.save_checkpoints_steps": 1, "train.max_steps": 200_000},
        ["config", "save_checkpoints_steps"],
        "K2E_MAX_CHECKPOINTS_PER_JOB",
    ),
    (
        "keep-one-per-minute",
        {"config.keep_checkpoint_every_n_hours": 0.01},
        ["config", "keep_checkpoint_every_n_hours"],
        "K2E_MIN_KEEP_CHECKPOINT_EVERY_N_HOURS",
    ),
]


@pytest.mark.parametrize(
    ("changes", "loc", "text"), [pytest.param(c, loc, t, id=case) for case, c, loc, t in LIMITS]
)
def test_spec_limit(env, changes: dict[str, Any], loc: list[str], text: str) -> None:
    client, ids = env["client"], env["ids"]
    spec = base(ids)
    for path, value in changes.items():
        spec = _set(spec, path, value)
    _refused(client, lambda: client.post("/convert", json=spec), 422, loc, text)


def test_specs_at_the_limits_are_accepted(env) -> None:
    client, ids = env["client"], env["ids"]
    spec = base(ids)
    for path, value in {
        "train.batch_size": 65_536,
        "train.shuffle_buffer": 1_000_000,
        "config.keep_checkpoint_max": 100,
        "config.save_checkpoints_steps": 5,
        "train.max_steps": 5_000,
        "config.keep_checkpoint_every_n_hours": 1.0,
        "timeout_s": 2**31 - 1,
        "config.tf_random_seed": 2**63 - 1,
    }.items():
        spec = _set(spec, path, value)
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["timeout_s"] <= 2**31 - 1


def _inline(config: dict[str, Any], ids: dict[str, str]) -> Spec:
    spec = {k: v for k, v in base(ids).items() if k != "keras_model_path"}
    return {
        **spec,
        "keras_model": {"config": config, "compile": {"optimizer": "sgd", "loss": "mse"}},
    }


def _layer(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


def test_params_counted_from_the_config_match_keras() -> None:
    model = keras_models.seed_multi_io_model()
    assert parse_model_config(json.loads(model.to_json())).param_count == model.count_params()


def test_inline_model_with_too_many_parameters(env) -> None:
    client, ids = env["client"], env["ids"]
    config = copy.deepcopy(env["inline"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["units"] = 10**9
    _refused(
        client,
        lambda: client.post("/convert", json=_inline(config, ids)),
        422,
        ["keras_model"],
        "K2E_MAX_MODEL_PARAMS",
    )


def test_inline_embedding_with_too_many_parameters(env) -> None:
    client, ids = env["client"], env["ids"]
    config = _lookup_model(["a", "b"])
    emb = _layer(config, "emb")
    emb["config"]["input_dim"], emb["config"]["output_dim"] = 10**6, 10**3
    _refused(
        client,
        lambda: client.post("/convert", json=_inline(config, ids)),
        422,
        ["keras_model"],
        "K2E_MAX_MODEL_PARAMS",
    )


def _with_config(seed: Path, tmp: Path, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The seed HDF5 with its model_config edited."""
    path = tmp / f"edited-{os.urandom(4).hex()}.h5"
    path.write_bytes(seed.read_bytes())
    with h5py.File(path, "a") as h5:
        config = json.loads(h5.attrs["model_config"])
        edit(config)
        h5.attrs["model_config"] = json.dumps(config)
    return path.read_bytes()


def test_uploaded_model_with_too_many_parameters(env) -> None:
    client, ids = env["client"], env["ids"]

    def widen(config: dict[str, Any]) -> None:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 10**9
                return

    content = _with_config(env["seed"], env["scratch"], widen)
    # Uploaded alone: its summary keeps the count, and POST /convert refuses it.
    model_id = _upload(client, "/models", "wide.h5", content)
    assert client.get(f"/models/{model_id}").status_code == 200
    spec = _set(base(ids), "keras_model_path", model_id)
    _refused(
        client,
        lambda: client.post("/convert", json=spec),
        422,
        ["keras_model_path"],
        "K2E_MAX_MODEL_PARAMS",
    )
    # Uploaded with the spec: refused, and the upload is not kept.
    before = client.get("/models").json()["items"]
    spec = {k: v for k, v in base(ids).items() if k != "keras_model_path"}
    _refused(
        client,
        lambda: client.post(
            "/convert", data={"spec": json.dumps(spec)}, files={"model": ("w.h5", content)}
        ),
        422,
        ["keras_model_path"],
        "K2E_MAX_MODEL_PARAMS",
    )
    assert client.get("/models").json()["items"] == before


# --- file references in model configs ------------------------------------------------------


def test_inline_lookup_with_a_vocabulary_path_is_refused(env) -> None:
    client, ids = env["client"], env["ids"]
    config = _lookup_model(str(env["vocab"]))
    assert _layer(config, "lookup")["config"]["vocabulary"] == str(env["vocab"])
    _refused(
        client,
        lambda: client.post("/convert", json=_inline(config, ids)),
        422,
        ["keras_model", "config"],
        "layer 'lookup' (StringLookup)",
        "vocabulary",
        "names a file",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("vocabulary", "/etc/passwd"),
        ("vocabulary", "relative/vocab.txt"),
        ("vocabulary", "gs://bucket/vocab.txt"),
        ("idf_weights", "/etc/shadow"),
    ],
)
def test_inline_file_fields_are_refused(env, key: str, value: str) -> None:
    client, ids = env["client"], env["ids"]
    config = _lookup_model(["a", "b"])
    _layer(config, "lookup")["config"][key] = value
    _refused(
        client,
        lambda: client.post("/convert", json=_inline(config, ids)),
        422,
        ["keras_model", "config"],
        "layer 'lookup' (StringLookup)",
        key,
    )


def test_urls_anywhere_in_a_config_are_refused(env) -> None:
    client, ids = env["client"], env["ids"]
    config = _lookup_model(["a", "b"])
    _layer(config, "emb")["config"]["embeddings_initializer"]["config"] = {
        "seed": None,
        "source": "https://attacker.example/weights",
    }
    _refused(
        client,
        lambda: client.post("/convert", json=_inline(config, ids)),
        422,
        ["keras_model", "config"],
        "is a URL",
    )


def test_an_inline_vocabulary_stays_allowed(env) -> None:
    """The list form passes the vetting: the 422 is the dataset's (no array 'x')."""
    client, ids = env["client"], env["ids"]
    response = client.post("/convert", json=_inline(_lookup_model(["a", "b"]), ids))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == ["train", "dataset"], response.text


def test_uploaded_hdf5_with_a_vocabulary_path_is_refused(env) -> None:
    client, ids = env["client"], env["ids"]
    lookup = _layer(_lookup_model(str(env["vocab"])), "lookup")

    def add_lookup(config: dict[str, Any]) -> None:
        config["config"]["layers"].append({**lookup, "inbound_nodes": []})

    content = _with_config(env["seed"], env["scratch"], add_lookup)
    before = client.get("/models").json()["items"]
    for send in (
        lambda: client.post("/models", files={"file": ("lookup.h5", content)}),
        lambda: client.post(
            "/convert",
            data={"spec": json.dumps({"train": {"dataset": ids["data"], "max_steps": 5}})},
            files={"model": ("lookup.h5", content)},
        ),
    ):
        _refused(client, send, 422, None, "layer 'lookup' (StringLookup)", "vocabulary")
    assert client.get("/models").json()["items"] == before


# --- progress writes -----------------------------------------------------------------------


def test_progress_writes_are_throttled_and_cancel_is_still_per_step() -> None:
    from worker.heartbeat import RunControl
    from worker.hooks import ProgressHook

    reports: list[int] = []
    control = RunControl()
    with tf.Graph().as_default():
        step = tf.compat.v1.train.get_or_create_global_step()
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.LOSSES, tf.constant(1.0))
        train_op = tf.compat.v1.assign_add(step, 1)
        # log_step_count_steps: 1 asks for a report every step.
        hook = ProgressHook(
            lambda s, _l, _r: reports.append(s), control, every_steps=1, min_interval_s=0.25
        )
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
            started = time.monotonic()
            runs = 0
            while time.monotonic() - started < 1.0:
                session.run(train_op)
                runs += 1
            assert runs > 50, "the loop must outpace the throttle for this test to mean much"
            # At most one write per 0.25 s (K2E_PROGRESS_MIN_INTERVAL_S's default), plus the first.
            assert 1 <= len(reports) <= 1 + 1.0 / 0.25 + 1, reports
            control.cancel_requested.set()
            session.run(train_op)
            assert session.should_stop()
    assert hook.stopped


# --- fuzz ----------------------------------------------------------------------------------

_SPEC_PATHS = [
    "timeout_s",
    "model_dir",
    "keras_model_path",
    "custom_objects",
    "metric_names_map",
    "export_outputs",
    "train.max_steps",
    "train.batch_size",
    "train.shuffle_buffer",
    "train.shuffle_seed",
    "eval.steps",
    "eval.batch_size",
    "config.tf_random_seed",
    "config.keep_checkpoint_max",
    "config.save_checkpoints_steps",
    "config.save_checkpoints_secs",
    "config.keep_checkpoint_every_n_hours",
    "config.log_step_count_steps",
    "keras_model",
]
_INLINE_CONFIG = json.loads(keras_models.seed_multi_io_model().to_json())
_BIG = st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40])


@st.composite
def _bodies(draw: st.DrawFn, ids: dict[str, str]) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "bytes", "deep", "edited", "inline"]))
    if kind == "random":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=50_000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"train":']))
        return (opener * depth).encode()
    if kind == "edited":  # anywhere in a valid spec: values replaced or removed
        return json.dumps(draw(mutated_json(base(ids)))).encode()
    if kind == "inline":  # anywhere in an inline model's Keras config
        spec = _inline(_INLINE_CONFIG, ids)
        spec["keras_model"]["config"] = draw(mutated_json(_INLINE_CONFIG))
        return json.dumps(spec).encode()
    spec = base(ids)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_SPEC_PATHS))
        spec = _set(spec, path, draw(_BIG | JSON_VALUES))
    return json.dumps(spec).encode()


def test_fuzzed_bodies_never_answer_5xx(env) -> None:
    client, ids = env["client"], env["ids"]

    @given(body=_bodies(ids))
    @hypothesis_settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def run(body: bytes) -> None:
        response = client.post(
            "/convert", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code < 500, (body[:300], response.text)
        if response.status_code >= 400:
            assert_problem(response)
        assert client.get("/healthz").status_code == 200

    run()
    assert client.get("/healthz").status_code == 200
