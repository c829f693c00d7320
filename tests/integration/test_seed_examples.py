"""The seed document's two examples, end to end through REST and a real worker.

What the job reports and exports is checked against an independent computation: the
seed's Keras model (built again from tests/support/keras_models.py) with the weights of the job's
final checkpoint. The exported SavedModel's every signature must give that model's
predictions, and the evaluation metrics must be that model's metrics on the eval data.
"""

import io
import json
import tarfile

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.job_outputs import (  # noqa: E402
    RTOL,
    assert_close,
    assert_differs,
    extract_savedmodel,
    keras_from_checkpoint,
)
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration


def test_multi_io_example_trains_evaluates_with_mapped_names_and_exports(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = upload(client, "/models", "seed.h5", h5.read_bytes())
    assert model["compiled"] is True
    assert [i["name"] for i in model["inputs"]] == ["input_a", "input_b"]
    assert model["metric_names"] == ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"]
    data = upload(
        client, "/datasets", "train.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data())
    )
    assert data["num_examples"] == 256

    # Evaluation data whose accuracies do not depend on the weights: every input row
    # appears 6 times, with dense_2's labels cycling over its 3 classes and dense_3's over
    # its 2. Whatever a head predicts for a row, exactly one of its copies is right, so
    # dense_2's accuracy is exactly 1/3 and dense_3's exactly 1/2: a swapped
    # metric_names_map gives acc_1 = 0.5.
    rows = keras_models.seed_multi_io_data(n=48, seed=3)
    index = np.repeat(np.arange(48), 6)
    cycle = np.arange(len(index))
    eval_arrays = {
        "input_a": rows["input_a"][index],
        "input_b": rows["input_b"][index],
        "dense_2": np.eye(3, dtype="float32")[cycle % 3],
        "dense_3": np.eye(2, dtype="float32")[cycle % 2],
    }
    eval_data = upload(client, "/datasets", "eval.npz", keras_models.npz_bytes(eval_arrays))
    assert eval_data["num_examples"] == 288

    spec = {
        "keras_model_path": model["id"],
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"tf_random_seed": 1, "save_checkpoints_steps": 20, "log_step_count_steps": 10},
        "train": {"dataset": data["id"], "max_steps": 60, "batch_size": 32},
        "eval": {"dataset": eval_data["id"], "batch_size": 96},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"

    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    assert job["progress"]["global_step"] == 60
    evaluated = job["metrics"]["eval"]
    assert set(evaluated) == {"acc_1", "acc_2", "loss", "global_step"}, evaluated
    assert evaluated["global_step"] == 60
    assert evaluated["acc_1"] == pytest.approx(1 / 3, abs=1e-6), evaluated
    assert evaluated["acc_2"] == pytest.approx(1 / 2, abs=1e-6), evaluated
    assert job["metrics"]["train"], "the loss curve has points"
    assert all(p["loss"] > 0 for p in job["metrics"]["train"])

    checkpoints = client.get(f"/jobs/{job_id}/checkpoints").json()
    assert 60 in [c["step"] for c in checkpoints]
    ckpt = client.get(f"/jobs/{job_id}/checkpoints/60")
    assert ckpt.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(ckpt.content), mode="r:gz") as archive:
        assert "model.ckpt-60.index" in archive.getnames()
    assert client.get(f"/jobs/{job_id}/checkpoints/59").status_code == 404

    keras = keras_from_checkpoint(
        client, job_id, 60, keras_models.seed_multi_io_model(), tmp_path / "ckpt"
    )

    # The evaluation loss is the mean over the eval batches of Keras's loss: the sum of
    # the two heads' mean categorical cross-entropies.
    a, b = eval_arrays["input_a"], eval_arrays["input_b"]
    head_2, head_3 = (t.numpy() for t in keras([a, b]))
    batch_losses = [
        float(
            np.mean(tf.keras.losses.categorical_crossentropy(eval_arrays["dense_2"][s], head_2[s]))
            + np.mean(
                tf.keras.losses.categorical_crossentropy(eval_arrays["dense_3"][s], head_3[s])
            )
        )
        for s in (slice(i, i + 96) for i in range(0, 288, 96))
    ]
    assert evaluated["loss"] == pytest.approx(np.mean(batch_losses), rel=RTOL), evaluated

    exported = extract_savedmodel(client, job_id, tmp_path / "export")
    loaded = tf.saved_model.load(str(exported))
    assert set(loaded.signatures.keys()) == {"serving_default"}
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(11)
    x_a = rng.normal(size=(5, 16)).astype("float32")
    x_b = rng.normal(loc=0.5, scale=2.0, size=(5, 16)).astype("float32")
    expected_2, expected_3 = (t.numpy() for t in keras([x_a, x_b]))
    out = serve(input_a=tf.constant(x_a), input_b=tf.constant(x_b))
    assert set(out) == {"dense_2", "dense_3"}
    assert_close(out["dense_2"], expected_2, "serving_default dense_2")
    assert_close(out["dense_3"], expected_3, "serving_default dense_3")
    swapped_2, _ = (t.numpy() for t in keras([x_b, x_a]))
    assert_differs(expected_2, swapped_2, "input_a and input_b swapped")


def _example(a: np.ndarray, b: np.ndarray) -> bytes:
    feature = {
        "a": tf.train.Feature(float_list=tf.train.FloatList(value=a.tolist())),
        "b": tf.train.Feature(float_list=tf.train.FloatList(value=b.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_dict_io_example_with_sample_weights_exports_serving_heads(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(keras_models.seed_dict_io_model(), tmp_path / "dict.h5")
    arrays = keras_models.seed_dict_io_data()
    spec = {
        "export_outputs": {"c": "regression", "d": "classification"},
        "config": {"tf_random_seed": 2, "save_checkpoints_steps": 25},
        "train": {"max_steps": 50, "batch_size": 20},
        "eval": {"steps": 3},
    }
    npz = keras_models.npz_bytes(arrays)
    response = client.post(
        "/convert",
        data={"spec": json.dumps(spec)},
        files={
            "model": ("dict.h5", h5.read_bytes()),
            "train_data": ("d.npz", npz),
            "eval_data": ("d.npz", npz),
        },
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 50
    keras = keras_from_checkpoint(
        client, job["id"], 50, keras_models.seed_dict_io_model(), tmp_path / "ckpt"
    )

    # Evaluation: 3 batches of 32 (the default batch size), in order. The compiled metrics
    # are unweighted; the loss is the mean over batches of Keras's loss, each head's
    # per-example loss weighted by its own sample weights over the batch size.
    evaluated = job["metrics"]["eval"]
    assert set(evaluated) == {"c_mae", "d_categorical_accuracy", "loss", "global_step"}
    assert evaluated["global_step"] == 50
    first = slice(0, 96)
    predicted = {k: v.numpy() for k, v in keras({"a": arrays["a"], "b": arrays["b"]}).items()}
    c_mae = np.mean(np.abs(predicted["c"][first] - arrays["c"][first]))
    d_accuracy = np.mean(predicted["d"][first].argmax(1) == arrays["d"][first].argmax(1))
    assert evaluated["c_mae"] == pytest.approx(c_mae, rel=RTOL), evaluated
    assert evaluated["d_categorical_accuracy"] == pytest.approx(d_accuracy, abs=1e-6), evaluated
    batch_losses = []
    for start in range(0, 96, 32):
        s = slice(start, start + 32)
        c_loss = tf.keras.losses.mean_squared_error(arrays["c"][s], predicted["c"][s]).numpy()
        d_loss = tf.keras.losses.categorical_crossentropy(arrays["d"][s], predicted["d"][s])
        batch_losses.append(
            np.sum(c_loss * arrays["sample_weights.c"][s]) / 32
            + np.sum(d_loss.numpy() * arrays["sample_weights.d"][s]) / 32
        )
    assert evaluated["loss"] == pytest.approx(np.mean(batch_losses), rel=RTOL), evaluated

    # Every exported signature against the Keras model, on fresh inputs where a and b
    # differ (both have 8 features: swapped inputs would pass a shape check).
    exported = extract_savedmodel(client, job["id"], tmp_path / "export")
    loaded = tf.saved_model.load(str(exported))
    signatures = set(loaded.signatures.keys())
    # serving_default, one per head (TF Serving's regress/classify), and the raw tensors.
    assert signatures == {"serving_default", "c", "d", "raw:serving_default"}, signatures

    rng = np.random.default_rng(12)
    x_a = rng.normal(size=(6, 8)).astype("float32")
    x_b = rng.normal(loc=-1.0, scale=3.0, size=(6, 8)).astype("float32")
    expected = {k: v.numpy() for k, v in keras({"a": x_a, "b": x_b}).items()}
    swapped = {k: v.numpy() for k, v in keras({"a": x_b, "b": x_a}).items()}
    assert_differs(expected["c"], swapped["c"], "a and b swapped: c")
    assert_differs(expected["d"], swapped["d"], "a and b swapped: d")
    examples = tf.constant([_example(x_a[i], x_b[i]) for i in range(len(x_a))])
    # What each signature's outputs are: the Keras outputs under the head's own names.
    meaning = {"c": "c", "d": "d", "outputs": "c", "scores": "d"}
    checked = []
    for name in sorted(signatures):
        signature = loaded.signatures[name]
        _, kwargs = signature.structured_input_signature
        if {spec.dtype for spec in kwargs.values()} == {tf.string}:
            (key,) = kwargs  # one serialized tf.Example tensor
            out = signature(**{key: examples})
            kind = "examples"
        else:
            assert set(kwargs) == {"a", "b"}, (name, kwargs)
            out = signature(a=tf.constant(x_a), b=tf.constant(x_b))
            kind = "raw"
        assert out, name
        for key, value in out.items():
            assert key in meaning, (name, key)
            assert_close(value, expected[meaning[key]], f"{name} ({kind}) {key}")
        checked.append((name, kind, sorted(out)))
    by_name = {name: (kind, keys) for name, kind, keys in checked}
    assert by_name["serving_default"] == ("examples", ["c", "d"]), checked
    assert by_name["c"] == ("examples", ["outputs"]), checked
    assert by_name["d"] == ("examples", ["scores"]), checked
    assert by_name["raw:serving_default"] == ("raw", ["c", "d"]), checked
