"""String, integer and float features through every dataset format, into preprocessing
layers with inline vocabularies, exported with both the parsing and the raw signatures;
the preprocessing layers model_to_estimator cannot convert refused at submission."""

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.dataset_files import write_npz  # noqa: E402
from tests.support.job_outputs import assert_close, extract_savedmodel, keras_from_checkpoint  # noqa: E402
from tests.support.uploads import upload_dataset  # noqa: E402

pytestmark = pytest.mark.integration

L = tf.keras.layers
COLOURS = np.array(["red", "green", "blue", "purple"])  # purple: out of the vocabulary
SIZES = np.array([3, 5, 7, 9])
PHRASES = np.array(["big cat", "small", "cat", "big small dog"])


def feature_model() -> tf.keras.Model:
    """A string input (looked up, and hashed), an integer one (looked up), a second string
    one (looked up into an embedding), floats."""
    colour = tf.keras.Input((1,), dtype="string", name="colour")
    size = tf.keras.Input((1,), dtype="int64", name="size")
    text = tf.keras.Input((1,), dtype="string", name="text")
    f = tf.keras.Input((2,), name="f")
    colour_ids = L.StringLookup(vocabulary=["red", "green", "blue"], name="colours")(colour)
    size_ids = L.IntegerLookup(vocabulary=[3, 5, 7], name="sizes")(size)
    text_ids = L.StringLookup(vocabulary=[str(p) for p in PHRASES[:3]], name="phrases")(text)
    parts = [
        L.CategoryEncoding(num_tokens=4, output_mode="one_hot")(colour_ids),
        L.Hashing(num_bins=4, output_mode="one_hot")(colour),
        L.CategoryEncoding(num_tokens=4, output_mode="one_hot")(size_ids),
        L.Flatten()(L.Embedding(4, 2, name="phrase_vectors")(text_ids)),
        f,
    ]
    hidden = L.Dense(8, activation="relu", name="h")(L.Concatenate(name="all")(parts))
    model = tf.keras.Model([colour, size, text, f], L.Dense(1, name="y")(hidden))
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def feature_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c, s, t = (rng.integers(0, 4, n) for _ in range(3))
    f = rng.normal(size=(n, 2)).astype("float32")
    y = (c == 0) * 2.0 + (s == 1) - (t == 3) + f[:, 0]
    return {
        "colour": COLOURS[c],  # unicode (<U6)
        "size": SIZES[s].reshape(n, 1),
        "text": np.char.encode(PHRASES[t], "utf-8"),  # bytes (|S13)
        "f": f,
        "y": y.astype("float32"),
    }


def _csv(arrays: dict[str, np.ndarray], path: Path) -> Path:
    n = len(arrays["y"])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["colour", "size", "text", "f_0", "f_1", "y"])
        for i in range(n):
            writer.writerow(
                [
                    arrays["colour"][i],
                    int(arrays["size"][i, 0]),
                    arrays["text"][i].decode(),
                    *arrays["f"][i].tolist(),
                    float(arrays["y"][i]),
                ]
            )
    return path


def _example(arrays: dict[str, np.ndarray], i: int) -> bytes:
    def text(value: object) -> tf.train.Feature:
        raw = value.encode() if isinstance(value, str) else value
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))

    feature = {
        "colour": text(str(arrays["colour"][i])),
        "size": tf.train.Feature(int64_list=tf.train.Int64List(value=arrays["size"][i])),
        "text": text(bytes(arrays["text"][i])),
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=arrays["f"][i])),
        "y": tf.train.Feature(float_list=tf.train.FloatList(value=[arrays["y"][i]])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _tfrecord(arrays: dict[str, np.ndarray], path: Path) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(arrays["y"])):
            writer.write(_example(arrays, i))
    return path


@pytest.fixture(scope="module")
def model_id(client, tmp_path_factory) -> str:
    h5 = keras_models.save_h5(feature_model(), tmp_path_factory.mktemp("features") / "f.h5")
    response = client.post("/models", files={"file": ("features.h5", h5.read_bytes())})
    assert response.status_code == 201, response.text
    dtypes = {i["name"]: i["dtype"] for i in response.json()["inputs"]}
    assert dtypes == {"colour": "string", "size": "int64", "text": "string", "f": "float32"}
    return response.json()["id"]


@pytest.mark.parametrize(
    ("name", "writer", "kinds"),
    [
        ("features.npz", write_npz, {"colour": "<U6", "size": "int64", "text": "|S13"}),
        ("features.csv", _csv, {"colour": "string", "size": "int64", "text": "string"}),
        ("features.tfrecord", _tfrecord, {"colour": "bytes", "size": "int64", "text": "bytes"}),
    ],
)
def test_string_integer_and_float_features_train_export_and_serve(
    client, worker, model_id, tmp_path, name, writer, kinds
) -> None:
    dataset = upload_dataset(client, writer(feature_arrays(160, seed=1), tmp_path / name))
    assert {k: dataset["dtypes"][k] for k in kinds} == kinds
    spec = {
        "keras_model_path": model_id,
        "export_outputs": {"y": "regression"},
        "config": {"tf_random_seed": 4},
        "train": {"dataset": dataset["id"], "max_steps": 30, "batch_size": 16},
        "eval": {"dataset": dataset["id"]},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert {"mae", "loss"} <= set(job["metrics"]["eval"])

    keras = keras_from_checkpoint(client, job["id"], 30, feature_model(), tmp_path / "ckpt")
    fresh = feature_arrays(8, seed=9)
    expected = keras(
        [fresh["colour"].reshape(-1, 1), fresh["size"], fresh["text"].reshape(-1, 1), fresh["f"]]
    ).numpy()

    loaded = tf.saved_model.load(str(extract_savedmodel(client, job["id"], tmp_path / "sm")))
    assert set(loaded.signatures.keys()) == {"serving_default", "y", "raw:serving_default"}
    parsing = loaded.signatures["serving_default"]
    _, parsing_inputs = parsing.structured_input_signature
    assert {k: v.dtype for k, v in parsing_inputs.items()} == {"examples": tf.string}
    examples = tf.constant([_example(fresh, i) for i in range(8)])
    assert_close(parsing(examples=examples)["y"], expected, "parsing signature")

    raw = loaded.signatures["raw:serving_default"]
    _, raw_inputs = raw.structured_input_signature
    assert {k: v.dtype for k, v in raw_inputs.items()} == {
        "colour": tf.string,
        "size": tf.int64,
        "text": tf.string,
        "f": tf.float32,
    }
    out = raw(
        colour=tf.constant(fresh["colour"].reshape(-1, 1)),
        size=tf.constant(fresh["size"]),
        text=tf.constant(fresh["text"].reshape(-1, 1)),
        f=tf.constant(fresh["f"]),
    )
    assert_close(out["y"], expected, "raw signature")


@pytest.mark.parametrize(
    ("change", "where", "text"),
    [
        ({"colour": np.zeros(16, "float32")}, "colour", "takes strings"),
        ({"f": np.array([["a", "b"]] * 16)}, "f", "non-numeric"),
        ({"size": np.full((16, 1), 3.5, "float32")}, "size", "takes integers"),
    ],
)
def test_an_input_fed_the_wrong_kind_of_value_is_a_422_naming_it(
    client, model_id, tmp_path, change, where, text
) -> None:
    arrays = {**feature_arrays(16, seed=2), **change}
    dataset = upload_dataset(client, write_npz(arrays, tmp_path / "wrong.npz"))
    spec = {"keras_model_path": model_id, "train": {"dataset": dataset["id"], "max_steps": 1}}
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["loc"] for e in errors] == [["train", "dataset", where]], errors
    assert text in errors[0]["msg"]


def test_a_csv_text_column_for_a_float_input_is_a_422(client, model_id, tmp_path) -> None:
    path = _csv(feature_arrays(16, seed=3), tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    lines[1] = ",".join([*lines[1].split(",")[:3], "n/a", *lines[1].split(",")[4:]])
    path.write_text("\n".join(lines) + "\n")
    dataset = upload_dataset(client, path)
    assert dataset["dtypes"]["f"] == "string"
    spec = {"keras_model_path": model_id, "train": {"dataset": dataset["id"], "max_steps": 1}}
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["train", "dataset", "f"]


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        (
            lambda: L.TextVectorization(vocabulary=["big", "cat"], output_mode="multi_hot"),
            "cannot clone a TextVectorization layer",
        ),
        (
            lambda: L.StringLookup(vocabulary=["red", "blue"], output_mode="one_hot"),
            "use output_mode 'int' followed by a CategoryEncoding layer",
        ),
    ],
)
def test_layers_the_estimator_cannot_convert_are_a_422_at_submission(
    client, tmp_path, layer, text
) -> None:
    words = tf.keras.Input((1,), dtype="string", name="words")
    encoded = layer()
    model = tf.keras.Model(words, L.Dense(1, name="y")(encoded(words)))
    model.compile(optimizer="adam", loss="mse")
    h5 = keras_models.save_h5(model, tmp_path / "text.h5")
    response = client.post("/models", files={"file": ("text.h5", h5.read_bytes())})
    assert response.status_code == 201, response.text  # a safe config: kept
    arrays = {"words": np.array(["big cat"] * 4), "y": np.zeros(4, "float32")}
    dataset = upload_dataset(client, write_npz(arrays, tmp_path / "w.npz"))
    spec = {
        "keras_model_path": response.json()["id"],
        "train": {"dataset": dataset["id"], "max_steps": 1},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["loc"] == ["keras_model_path"]
    assert f"layer {encoded.name!r}" in error["msg"]
    assert text in error["msg"]
