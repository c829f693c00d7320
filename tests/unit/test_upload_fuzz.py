"""Property-based fuzz of POST /models with random and mutated valid models.

The seeds are the seed document's multi-IO model saved as HDF5 and as ``.keras``. Each
case is either a byte mutation of a seed (flips, cuts, insertions, repeats, or random
bytes) or a structural one: the model's config (``model_config`` / ``training_config`` in
the HDF5 attributes, ``config.json`` / ``metadata.json`` in the archive) with values
replaced by random JSON, huge numbers, paths and URLs, or removed, in an otherwise valid
file, which is what reaches the vetting code past the file-format checks. Every answer
must be a 201 or a documented problem (413, 422), never a 5xx, and the API must still
answer /healthz. The datasets' and POST /convert's fuzzes live beside their limits
(test_hostile_datasets.py, test_spec_limits.py).
"""

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.fuzz_inputs import assert_problem, mutated_bytes, mutated_json

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

H5_CONFIGS = ("model_config", "training_config")
KERAS_CONFIGS = ("config.json", "metadata.json")


def _seeds(folder: Path) -> dict[str, bytes]:
    model = keras_models.seed_multi_io_model()
    h5 = keras_models.save_h5(model, folder / "seed.h5")
    model.save(folder / "seed.keras")
    return {"m.h5": h5.read_bytes(), "m.keras": (folder / "seed.keras").read_bytes()}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _seeds(tmp_path_factory.mktemp("fuzz-seeds"))


def h5_configs(content: bytes) -> dict[str, Any]:
    with h5py.File(io.BytesIO(content), "r") as h5:
        return {name: json.loads(h5.attrs[name]) for name in H5_CONFIGS}


def keras_configs(content: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: json.loads(archive.read(name)) for name in KERAS_CONFIGS}


def with_h5_config(content: bytes, name: str, document: Any, scratch: Path) -> bytes:
    path = scratch / "edited.h5"
    path.write_bytes(content)
    with h5py.File(path, "a") as h5:
        h5.attrs[name] = json.dumps(document)
    return path.read_bytes()


def with_keras_member(content: bytes, name: str, document: Any) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(content)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            data = json.dumps(document).encode() if item.filename == name else source.read(item)
            target.writestr(item.filename, data)
    return out.getvalue()


@st.composite
def model_uploads(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, str, Any]:
    """(file name, what was changed, the bytes or the (member, document) to write)."""
    name = draw(st.sampled_from(sorted(seeds)))
    if draw(st.booleans()):
        return name, "bytes", draw(mutated_bytes(seeds[name]))
    if name.endswith(".h5"):
        member = draw(st.sampled_from(H5_CONFIGS))
        original = h5_configs(seeds[name])[member]
    else:
        member = draw(st.sampled_from(KERAS_CONFIGS))
        original = keras_configs(seeds[name])[member]
    return name, member, draw(mutated_json(original))


def build(seeds: dict[str, bytes], upload: tuple[str, str, Any], scratch: Path) -> bytes:
    name, member, payload = upload
    if member == "bytes":
        return bytes(payload)
    if name.endswith(".h5"):
        return with_h5_config(seeds[name], member, payload, scratch)
    return with_keras_member(seeds[name], member, payload)


def test_the_seeds_are_accepted(client: TestClient, seeds: dict[str, bytes], tmp_path) -> None:
    """The mutations start from files the API takes, rewritten the way the fuzz does."""
    for name, content in seeds.items():
        configs = h5_configs(content) if name.endswith(".h5") else keras_configs(content)
        member, document = next(iter(configs.items()))
        rewritten = build(seeds, (name, member, document), tmp_path)
        for body in (content, rewritten):
            response = client.post("/models", files={"file": (name, body)})
            assert response.status_code == 201, response.text


def test_fuzzed_models_never_answer_5xx(
    client: TestClient, seeds: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    scratch = tmp_path_factory.mktemp("fuzz-edits")
    answers: dict[int, int] = {}

    # Each case runs the real inspection child (~1 s): 30 cases keep this under a minute.
    @given(upload=model_uploads(seeds))
    @hypothesis_settings(
        max_examples=30,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def run(upload: tuple[str, str, Any]) -> None:
        name, member, _ = upload
        response = client.post("/models", files={"file": (name, build(seeds, upload, scratch))})
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
        assert response.status_code in (201, 413, 422), (name, member, response.text)
        if response.status_code >= 400:
            assert_problem(response)
        assert client.get("/healthz").status_code == 200

    run()
    print(f"\nPOST /models answers: {answers}")
    assert client.get("/healthz").status_code == 200
