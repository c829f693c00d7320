"""Keras models with a DenseFeatures layer (feature columns) train and export; a column
that reads a vocabulary file is refused."""

import numpy as np
import pytest

from tests.integration.test_feature_types import COLOURS
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.dataset_files import write_npz  # noqa: E402
from tests.support.job_outputs import assert_close, extract_savedmodel  # noqa: E402
from tests.support.uploads import upload_dataset  # noqa: E402

pytestmark = pytest.mark.integration

L = tf.keras.layers


def dense_features_model(vocabulary_file: str | None = None) -> tf.keras.Model:
    """Feature columns, the classic way Keras met Estimators: numeric, bucketized, hashed,
    inline-vocabulary and identity categorical columns, embeddings and a cross."""
    fc = tf.feature_column
    inputs = {
        "age": tf.keras.Input((1,), name="age"),
        "city": tf.keras.Input((1,), dtype="string", name="city"),
        "colour": tf.keras.Input((1,), dtype="string", name="colour"),
        "item": tf.keras.Input((1,), dtype="int64", name="item"),
    }
    age = fc.numeric_column("age")
    colour = (
        fc.categorical_column_with_vocabulary_file("colour", vocabulary_file)
        if vocabulary_file
        else fc.categorical_column_with_vocabulary_list("colour", ["red", "green", "blue"])
    )
    columns = [
        age,
        fc.bucketized_column(age, [0.0, 1.0]),
        fc.indicator_column(colour),
        fc.embedding_column(fc.categorical_column_with_hash_bucket("city", 10), 3),
        fc.indicator_column(fc.crossed_column([colour, "city"], 16)),
        fc.embedding_column(fc.categorical_column_with_identity("item", 10), 2),
    ]
    features = L.DenseFeatures(columns, name="features")(inputs)
    model = tf.keras.Model(inputs, L.Dense(1, name="y")(features))
    model.compile(optimizer="adam", loss="mse")
    return model


def _dense_features_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    colour = COLOURS[rng.integers(0, 4, n)]
    city = np.array(["oslo", "lima", "pune", "bern"])[rng.integers(0, 4, n)]
    age = rng.normal(size=(n, 1)).astype("float32")
    item = rng.integers(0, 10, (n, 1))
    y = age[:, 0] + (colour == "red") - 0.5 * (city == "pune") + 0.1 * item[:, 0]
    return {"age": age, "city": city, "colour": colour, "item": item, "y": y.astype("float32")}


def test_a_dense_features_model_trains_and_exports(client, worker, tmp_path) -> None:
    h5 = keras_models.save_h5(dense_features_model(), tmp_path / "columns.h5")
    response = client.post("/models", files={"file": ("columns.h5", h5.read_bytes())})
    assert response.status_code == 201, response.text
    model = response.json()
    data = upload_dataset(
        client, write_npz(_dense_features_arrays(128, seed=1), tmp_path / "c.npz")
    )
    spec = {
        "keras_model_path": model["id"],
        "export_outputs": {"y": "regression"},
        "train": {"dataset": data["id"], "max_steps": 40, "batch_size": 16},
        "eval": {"dataset": data["id"]},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 40

    loaded = tf.saved_model.load(str(extract_savedmodel(client, job["id"], tmp_path / "sm")))
    fresh = _dense_features_arrays(8, seed=5)
    examples = []
    for i in range(8):
        feature = {
            "age": tf.train.Feature(float_list=tf.train.FloatList(value=fresh["age"][i])),
            "item": tf.train.Feature(int64_list=tf.train.Int64List(value=fresh["item"][i])),
            **{
                key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[fresh[key][i].encode()]))
                for key in ("city", "colour")
            },
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        examples.append(example.SerializeToString())
    parsed = loaded.signatures["serving_default"](examples=tf.constant(examples))["y"].numpy()
    raw = loaded.signatures["raw:serving_default"](
        age=tf.constant(fresh["age"]),
        item=tf.constant(fresh["item"]),
        city=tf.constant(fresh["city"].reshape(-1, 1)),
        colour=tf.constant(fresh["colour"].reshape(-1, 1)),
    )["y"].numpy()
    assert_close(raw, parsed, "raw and parsing signatures")
    assert np.ptp(parsed) > 0, "predictions depend on the features"


def test_a_vocabulary_file_column_is_refused_naming_the_layer(client, tmp_path) -> None:
    vocabulary = tmp_path / "colours.txt"
    vocabulary.write_text("red\ngreen\nblue\n")
    h5 = keras_models.save_h5(dense_features_model(str(vocabulary)), tmp_path / "file.h5")
    response = client.post("/models", files={"file": ("file.h5", h5.read_bytes())})
    assert response.status_code == 422, response.text
    assert "layer 'features' (DenseFeatures)" in response.text
    assert "vocabulary" in response.text
