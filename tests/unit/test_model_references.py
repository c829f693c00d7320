"""How a spec names files and folders: `keras_model_path` within what a file system takes,
model_dir names matched whole, and a model named by its path counted as a use of the
upload (DELETE /models/{id} answers 409 while the job has not ended), as its id is.
"""

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client, admin_files

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    scratch = tmp_path_factory.mktemp("references")
    model = keras_models.save_h5(keras_models.seed_multi_io_model(), scratch / "seed.h5")
    data = keras_models.npz_bytes(keras_models.seed_multi_io_data(n=16))
    return {"model": model.read_bytes(), "data": data}


@pytest.fixture
def setup(tmp_path: Path, redis_server, seed: dict[str, bytes]) -> Iterator[dict[str, Any]]:
    # No worker consumes this Redis: a submitted job stays queued.
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        model = client.post("/models", files={"file": ("seed.h5", seed["model"])})
        data = client.post("/datasets", files={"file": ("d.npz", seed["data"])})
        assert model.status_code == data.status_code == 201, (model.text, data.text)
        yield {
            "client": client,
            "model": model.json()["id"],
            "data": data.json()["id"],
            "files": admin_files(settings.storage_root),
        }


def _spec(path: str, data: str, **extra: Any) -> dict[str, Any]:
    return {"keras_model_path": path, "train": {"dataset": data, "max_steps": 2}, **extra}


def _refused(response, loc: list[Any], words: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["errors"][0]["loc"] == loc, body
    assert words in body["errors"][0]["msg"], body
    return body


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("a" * 300, "component of 300 bytes"),
        ("models/" + "\u00e9" * 128 + "/model.h5", "component of 256 bytes"),
        ("a/" * 3000, "characters long"),
        ("a/" * 40 + "m.h5", "41 components"),
    ],
)
def test_a_model_path_beyond_what_a_file_system_takes_is_422(setup, path: str, words) -> None:
    client = setup["client"]
    _refused(client.post("/convert", json=_spec(path, setup["data"])), ["keras_model_path"], words)
    # The connection is still served (a 500 from ENAMETOOLONG reset it).
    assert client.get("/healthz").status_code == 200
    assert client.get("/jobs").json()["items"] == []


@pytest.mark.parametrize("name", ["name\n", "a\nb", "name\r", "x" * 129, ".."])
def test_a_model_dir_name_is_matched_whole(setup, name: str) -> None:
    client, model, data = setup["client"], setup["model"], setup["data"]
    for spec, loc in (
        (_spec(model, data, model_dir=name), ["model_dir"]),
        (_spec(model, data, config={"model_dir": name}), ["config", "model_dir"]),
    ):
        _refused(client.post("/convert", json=spec), loc, "plain folder name")
    assert client.get("/jobs").json()["items"] == []
    assert list((setup["files"] / "model_dirs").iterdir()) == []


@pytest.mark.parametrize(
    "reference",
    [
        "{id}",
        "models/{id}/model.h5",
        "models/./{id}//model.h5",
        "jobs/../models/{id}/model.h5",
        "link/{id}/model.h5",
    ],
)
def test_a_model_in_use_cannot_be_deleted_whichever_way_the_spec_names_it(
    setup, reference: str
) -> None:
    client, model, data = setup["client"], setup["model"], setup["data"]
    (setup["files"] / "link").symlink_to(setup["files"] / "models")
    path = reference.format(id=model)
    submitted = client.post("/convert", json=_spec(path, data))
    if ".." in path.split("/"):
        _refused(submitted, ["keras_model_path"], "without `..`")
        return
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["id"]
    refused = client.delete(f"/models/{model}")
    assert refused.status_code == 409, refused.text
    assert job in refused.json()["detail"]
    assert (setup["files"] / "models" / model / "model.h5").is_file()
    assert client.post(f"/jobs/{job}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/models/{model}").status_code == 204
    assert not (setup["files"] / "models" / model).exists()


def _h5_with(seed: bytes, tmp: Path, attr: str, change) -> bytes:
    path = tmp / "changed.h5"
    path.write_bytes(seed)
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs[attr])
        change(config)
        # Keras writes float("inf") as the JSON extension `Infinity`, as json.dumps does.
        h5.attrs[attr] = json.dumps(config)
    return path.read_bytes()


def _regularized(config: dict[str, Any]) -> None:
    layer = next(x for x in config["config"]["layers"] if x["name"] == "dense_2")
    layer["config"]["kernel_regularizer"] = {"class_name": "L2", "config": {"l2": math.inf}}


def _weighted(config: dict[str, Any]) -> None:
    config["loss_weights"] = [math.nan, 1.0]


@pytest.mark.parametrize(
    ("attr", "change", "words"),
    [
        ("model_config", _regularized, "l2 is inf"),
        ("training_config", _weighted, "loss_weights is nan"),
    ],
)
def test_an_upload_whose_config_holds_infinity_or_nan_is_422(
    setup, seed, tmp_path, attr, change, words
) -> None:
    client = setup["client"]
    content = _h5_with(seed["model"], tmp_path, attr, change)
    response = client.post("/models", files={"file": ("m.h5", content)})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert words in response.json()["detail"]
    assert "only finite numbers" in response.json()["detail"]


@pytest.mark.parametrize("name", ["a" * 300, "a/" * 3000, "js/" + "b" * 256 + ".js"])
def test_a_dashboard_file_name_beyond_what_a_file_system_takes_is_404(setup, name) -> None:
    response = setup["client"].get(f"/ui/static/{name}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM
