"""k2e.vetting (inspection, model_config, metric_names) and k2e.formats.npz against real
Keras 2.15 models and files built here."""

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from k2e.errors import InvalidSpec, InvalidUpload
from k2e.formats.npz import inspect_npz, load_npz_arrays
from k2e.schemas import TensorInfo
from k2e.vetting.inspection import inspect_h5
from k2e.vetting.metric_names import compiled_metric_names, plain_compile_args
from k2e.vetting.model_config import parse_model_config

tf = pytest.importorskip("tensorflow")
tf.get_logger().setLevel(logging.ERROR)
keras = tf.keras
layers = tf.keras.layers

SEED_COMPILE = {
    "loss": "categorical_crossentropy",
    "metrics": {"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
}
DICT_COMPILE = {
    "loss": {"c": "mse", "d": "categorical_crossentropy"},
    "metrics": {"c": "mae", "d": "accuracy"},
}


def seed_model(**compile_args: Any) -> Any:
    """The seed document's model: two inputs, a shared Dense, two softmax heads."""
    input_a = layers.Input(shape=(16,), name="input_a")
    input_b = layers.Input(shape=(16,), name="input_b")
    shared = layers.Dense(8, name="dense_1")
    merged = layers.concatenate([shared(input_a), shared(input_b)], name="merge")
    out_a = layers.Dense(3, activation="softmax", name="dense_2")(merged)
    out_b = layers.Dense(2, activation="softmax", name="dense_3")(merged)
    model = keras.Model(inputs=[input_a, input_b], outputs=[out_a, out_b])
    if compile_args:
        model.compile(optimizer="rmsprop", **compile_args)
    return model


def dict_model(**compile_args: Any) -> Any:
    a, b = keras.Input((4,), name="a"), keras.Input((6,), name="b")
    outputs = {
        "c": layers.Dense(1, name="c")(a),
        "d": layers.Dense(3, activation="softmax", name="d")(b),
    }
    model = keras.Model({"a": a, "b": b}, outputs)
    if compile_args:
        model.compile(optimizer="adam", **compile_args)
    return model


def sequential_model(**compile_args: Any) -> Any:
    model = keras.Sequential(
        [
            layers.Dense(4, input_shape=(5,), name="hidden"),
            layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    if compile_args:
        model.compile(optimizer="sgd", **compile_args)
    return model


def _batch(model: Any, n: int = 4) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    def zeros(tensors: list[Any]) -> list[np.ndarray]:
        return [np.zeros((n, *t.shape[1:]), "float32") for t in tensors]

    return (
        dict(zip(model.input_names, zeros(model.inputs), strict=True)),
        dict(zip(model.output_names, zeros(model.outputs), strict=True)),
    )


def keras_metric_names(model: Any) -> list[str]:
    """``model.metrics_names`` minus the losses, once the metrics are built."""
    model.train_on_batch(*_batch(model))
    losses = {"loss", *(f"{name}_loss" for name in model.output_names)}
    return [name for name in model.metrics_names if name not in losses]


def estimator_metric_names(model: Any, model_dir: Path) -> list[str]:
    """The metric keys ``model_to_estimator``'s Estimator reports from ``evaluate``."""
    features, labels = _batch(model)
    target: Any = labels if len(labels) > 1 else next(iter(labels.values()))

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices((features, target)).batch(2)

    estimator = tf.keras.estimator.model_to_estimator(keras_model=model, model_dir=str(model_dir))
    estimator.train(input_fn, steps=1)
    return sorted(set(estimator.evaluate(input_fn, steps=1)) - {"loss", "global_step"})


def compile_with(model: Any, args: dict[str, Any]) -> None:
    """Compile as the worker does with plain_compile_args: metric configs deserialized."""

    def metric(m: Any) -> Any:
        return tf.keras.metrics.deserialize(m) if isinstance(m, dict) else m

    metrics = args["metrics"]
    if isinstance(metrics, dict):
        metrics = {k: [metric(m) for m in v] for k, v in metrics.items()}
    elif metrics is not None:
        metrics = [metric(m) for m in metrics]
    model.compile(
        optimizer=tf.keras.optimizers.deserialize(args["optimizer"]),
        loss=args["loss"],
        metrics=metrics,
        loss_weights=args["loss_weights"],
        weighted_metrics=args.get("weighted_metrics"),
    )


# --- HDF5 models -------------------------------------------------------------------------------


def test_the_seed_model_reads_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "seed.h5"
    seed_model(**SEED_COMPILE).save(path)
    info = inspect_h5(path)
    assert info.summary.model_class == "Functional"
    assert info.summary.is_graph_network
    assert info.summary.inputs == [
        TensorInfo(name="input_a", shape=[None, 16]),
        TensorInfo(name="input_b", shape=[None, 16]),
    ]
    assert info.summary.outputs == [
        TensorInfo(name="dense_2", shape=[None, 3]),
        TensorInfo(name="dense_3", shape=[None, 2]),
    ]
    assert info.summary.layer_classes["merge"] == "Concatenate"
    assert info.summary.layer_classes["dense_1"] == "Dense"
    assert info.compiled
    assert info.keras_version == "2.15.0"
    assert info.metric_names == ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"]
    # HDF5 stores the metrics already prefixed; the plain arguments are the user's names.
    stored = info.training_config["metrics"]
    assert stored[0][0]["config"]["name"] == "dense_2_categorical_accuracy"
    args = plain_compile_args(info.training_config, ["dense_2", "dense_3"])
    assert args == info.compile_args
    assert args["metrics"] == {
        "dense_2": ["categorical_accuracy"],
        "dense_3": ["categorical_accuracy"],
    }
    assert args["loss"] == "categorical_crossentropy"
    assert args["optimizer"]["class_name"].endswith("RMSprop")


def test_the_dict_model_reads_with_keras_output_names(tmp_path: Path) -> None:
    model = dict_model(**DICT_COMPILE)
    path = tmp_path / "dict.h5"
    model.save(path)
    info = inspect_h5(path)
    assert [i.name for i in info.summary.inputs] == model.input_names == ["a", "b"]
    assert info.summary.inputs[1].shape == [None, 6]
    assert info.summary.outputs == [
        TensorInfo(name="c", shape=[None, 1]),
        TensorInfo(name="d", shape=[None, 3]),
    ]
    assert [o.name for o in info.summary.outputs] == model.output_names
    assert info.metric_names == keras_metric_names(model) == ["c_mae", "d_accuracy"]
    assert info.compile_args["metrics"] == {"c": ["mae"], "d": ["accuracy"]}


def test_a_sequential_model_reads_its_input_from_the_input_layer(tmp_path: Path) -> None:
    model = sequential_model(loss="mse", metrics=["mae"])
    path = tmp_path / "seq.h5"
    model.save(path)
    info = inspect_h5(path)
    assert info.summary.model_class == "Sequential"
    assert info.summary.inputs == [TensorInfo(name="hidden_input", shape=[None, 5])]
    assert [i.name for i in info.summary.inputs] == model.input_names
    assert info.summary.outputs == [TensorInfo(name="out", shape=[None, 3])]
    assert info.metric_names == keras_metric_names(model) == ["mae"]
    assert info.compile_args["metrics"] == ["mae"]


@pytest.mark.parametrize("build", [seed_model, dict_model, sequential_model])
def test_the_json_config_reads_like_the_hdf5_file(build: Any, tmp_path: Path) -> None:
    model = build()
    model.save(tmp_path / "m.h5")
    summary = parse_model_config(json.loads(model.to_json()))
    assert summary == inspect_h5(tmp_path / "m.h5").summary
    assert [i.name for i in summary.inputs] == model.input_names
    assert [o.name for o in summary.outputs] == model.output_names
    assert [o.shape for o in summary.outputs] == [list(t.shape) for t in model.outputs]


@pytest.mark.parametrize("case", ["uncompiled", "include_optimizer=False"])
def test_uncompiled_or_optimizer_less_files_read_as_not_compiled(case: str, tmp_path: Path) -> None:
    if case == "uncompiled":
        seed_model().save(tmp_path / "m.h5")
    else:
        seed_model(**SEED_COMPILE).save(tmp_path / "m.h5", include_optimizer=False)
    info = inspect_h5(tmp_path / "m.h5")
    assert not info.compiled
    assert info.training_config is None  # Keras 2.15 writes none in either case
    assert info.metric_names == []
    assert info.compile_args is None


def test_metric_objects_in_hdf5_keep_their_names(tmp_path: Path) -> None:
    model = seed_model(
        loss="categorical_crossentropy",
        metrics=[keras.metrics.CategoricalAccuracy(), keras.metrics.AUC(name="roc"), "acc"],
    )
    expected = keras_metric_names(model)
    model.save(tmp_path / "m.h5")
    info = inspect_h5(tmp_path / "m.h5")
    assert (
        info.metric_names
        == expected
        == [
            "dense_2_categorical_accuracy",
            "dense_2_roc",
            "dense_2_acc",
            "dense_3_categorical_accuracy",
            "dense_3_roc",
            "dense_3_acc",
        ]
    )
    plain = info.compile_args["metrics"]["dense_2"]
    assert plain[0] == "categorical_accuracy"
    assert plain[1]["class_name"] == "AUC"
    assert plain[1]["config"]["name"] == "roc"
    assert plain[2] == "acc"
    reloaded = keras.models.load_model(tmp_path / "m.h5", compile=False)
    compile_with(reloaded, info.compile_args)
    assert keras_metric_names(reloaded) == expected


def test_the_estimator_reports_the_names_of_an_hdf5_model_compiled_plainly(
    tmp_path: Path,
) -> None:
    seed_model(**SEED_COMPILE).save(tmp_path / "m.h5")
    info = inspect_h5(tmp_path / "m.h5")
    # Compiled from the stored metric objects, the Estimator prefixes them over and over.
    stored = keras.models.load_model(tmp_path / "m.h5")
    assert estimator_metric_names(stored, tmp_path / "stored") == [
        "dense_2_dense_2_dense_2_dense_2_categorical_accuracy",
        "dense_3_dense_3_dense_3_dense_3_categorical_accuracy",
    ]
    model = keras.models.load_model(tmp_path / "m.h5", compile=False)
    compile_with(model, info.compile_args)
    assert estimator_metric_names(model, tmp_path / "plain") == info.metric_names


# --- metric names --------------------------------------------------------------------------------

NAME_CASES = [
    (seed_model, SEED_COMPILE),
    (seed_model, {"loss": "mse", "metrics": ["mae", "acc"]}),
    (seed_model, {"loss": "mse", "metrics": [["mae"], ["accuracy", "mse"]]}),
    (seed_model, {"loss": "mse", "metrics": {"dense_3": ["mae", "categorical_accuracy"]}}),
    (dict_model, DICT_COMPILE),
    (dict_model, {"loss": "mse", "metrics": ["mae"]}),
    (sequential_model, {"loss": "mse", "metrics": ["mae"]}),
    (sequential_model, {"loss": "mse", "metrics": ["acc", "accuracy", "mean_absolute_error"]}),
    (sequential_model, {"loss": "mse", "metrics": {"out": "mae"}}),
    (sequential_model, {"loss": "mse", "metrics": [["mse"]]}),
]


@pytest.mark.parametrize(("build", "compile_args"), NAME_CASES)
def test_compiled_metric_names_match_keras(build: Any, compile_args: dict[str, Any]) -> None:
    model = build(**compile_args)
    assert compiled_metric_names(compile_args, model.output_names) == keras_metric_names(model)


def test_compiled_metric_names_match_the_estimator_for_the_seed(tmp_path: Path) -> None:
    model = seed_model(**SEED_COMPILE)
    names = compiled_metric_names(SEED_COMPILE, model.output_names)
    assert names == estimator_metric_names(model, tmp_path)
    assert names == ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"]


def test_where_keras_and_the_estimator_differ_the_estimator_wins(tmp_path: Path) -> None:
    args = {"loss": "mse", "metrics": ["mae", "CategoricalAccuracy"], "weighted_metrics": ["mae"]}
    model = sequential_model(**args)
    names = compiled_metric_names(args, model.output_names)
    assert names == ["mae", "CategoricalAccuracy", "mae_1"]
    assert sorted(names) == estimator_metric_names(model, tmp_path)
    assert keras_metric_names(sequential_model(**args)) == [
        "mae",
        "categorical_accuracy",
        "weighted_mae",
    ]


def test_weighted_metrics_from_hdf5_are_named_as_the_estimator_names_them(tmp_path: Path) -> None:
    seed_model(loss="mse", metrics=["mae"], weighted_metrics=["mae"]).save(tmp_path / "m.h5")
    info = inspect_h5(tmp_path / "m.h5")
    stored = info.training_config["weighted_metrics"]
    assert stored[0][0]["config"]["name"] == "dense_2_weighted_mae"
    assert info.compile_args["weighted_metrics"] == {"dense_2": ["mae"], "dense_3": ["mae"]}
    assert info.metric_names == ["dense_2_mae", "dense_2_mae_1", "dense_3_mae", "dense_3_mae_1"]


def test_no_metrics_means_no_names() -> None:
    assert compiled_metric_names(None, ["out"]) == []
    assert compiled_metric_names({"loss": "mse"}, ["a", "b"]) == []
    assert compiled_metric_names({"loss": "mse", "metrics": []}, ["out"]) == []


def test_metrics_the_estimator_refuses_are_invalid_specs() -> None:
    with pytest.raises(InvalidSpec, match="unknown outputs"):
        compiled_metric_names({"metrics": {"nope": "mae"}}, ["a", "b"])
    with pytest.raises(InvalidSpec, match="one list per output"):
        compiled_metric_names({"metrics": [["mae"]]}, ["a", "b"])
    with pytest.raises(InvalidSpec, match="list or a dict"):
        compiled_metric_names({"metrics": "mae"}, ["a", "b"])


# --- model configs -------------------------------------------------------------------------------


def test_output_shapes_follow_the_graph() -> None:
    x = keras.Input((4, 3), name="x")
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    flat = layers.Flatten(name="flat")(x)
    reshaped = layers.Reshape((2, -1), name="reshaped")(flat)
    added = layers.Add(name="added")([reshaped, layers.Dropout(0.1)(reshaped)])
    joined = layers.Concatenate(axis=1, name="joined")([added, reshaped])
    dense = layers.Dense(5, name="dense")(layers.BatchNormalization()(joined))
    embedded = layers.Embedding(10, 4, name="embedded")(tokens)
    doubled = layers.Lambda(lambda t: t * 2, name="doubled")(dense)
    model = keras.Model([x, tokens], [dense, embedded, doubled, flat])
    summary = parse_model_config(json.loads(model.to_json()))
    assert summary.inputs == [
        TensorInfo(name="x", shape=[None, 4, 3]),
        TensorInfo(name="tokens", shape=[None, 7], dtype="int32"),
    ]
    shapes = {o.name: o.shape for o in summary.outputs}
    assert shapes == {
        "dense": [None, 4, 5],
        "embedded": [None, 7, 4],
        "doubled": [None],
        "flat": [None, 12],
    }
    known = [list(t.shape) for t in model.outputs]
    assert [shapes[n] for n in ("dense", "embedded", "flat")] == [known[0], known[1], known[3]]
    assert summary.layer_classes["doubled"] == "Lambda"


def test_repeated_and_dict_outputs_are_named_like_keras() -> None:
    x = keras.Input((4,), name="zin")
    y = keras.Input((6,), name="ain")
    dense = layers.Dense(2, name="dense")(x)
    repeated = keras.Model(x, [dense, dense])
    keyed = keras.Model(
        {"q": x, "p": y}, {"z": layers.Dense(1, name="c")(x), "y": layers.Dense(3, name="d")(y)}
    )
    for model in (repeated, keyed):
        summary = parse_model_config(json.loads(model.to_json()))
        assert [i.name for i in summary.inputs] == model.input_names
        assert [o.name for o in summary.outputs] == model.output_names
    assert keyed.output_names == ["d", "c"]  # by sorted dict key, named by layer


def test_a_subclassed_model_has_no_graph() -> None:
    summary = parse_model_config({"class_name": "MyModel", "config": {"units": 3}})
    assert summary.model_class == "MyModel"
    assert not summary.is_graph_network
    assert summary.inputs == summary.outputs == []


@pytest.mark.parametrize(
    "config",
    [
        {"config": {}},
        {
            "class_name": "Functional",
            "config": {"layers": [{}], "input_layers": [], "output_layers": []},
        },
        {
            "class_name": "Functional",
            "config": {"layers": [], "input_layers": [["x", 0, 0]], "output_layers": []},
        },
        {"class_name": "Sequential", "config": {"layers": ["dense"]}},
    ],
)
def test_a_malformed_config_is_an_invalid_spec(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec, match="malformed Keras model config"):
        parse_model_config(config)


# --- unusable HDF5 files -------------------------------------------------------------------------


def test_garbage_empty_and_missing_files_are_not_hdf5(tmp_path: Path) -> None:
    (tmp_path / "garbage.h5").write_bytes(b"this is not a model\x00\xff" * 100)
    (tmp_path / "empty.h5").write_bytes(b"")
    for name in ("garbage.h5", "empty.h5", "missing.h5"):
        with pytest.raises(InvalidUpload, match="not an HDF5 file"):
            inspect_h5(tmp_path / name)


def test_a_truncated_hdf5_file_is_refused(tmp_path: Path) -> None:
    seed_model(**SEED_COMPILE).save(tmp_path / "m.h5")
    (tmp_path / "cut.h5").write_bytes((tmp_path / "m.h5").read_bytes()[:1000])
    with pytest.raises(InvalidUpload, match="corrupt or truncated HDF5 file"):
        inspect_h5(tmp_path / "cut.h5")


def test_an_hdf5_file_without_a_model_config_is_not_a_keras_model(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "w.h5", "w") as h5:
        h5.attrs["keras_version"] = "2.15.0"
        h5.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(InvalidUpload, match="no `model_config` attribute: not a Keras model"):
        inspect_h5(tmp_path / "w.h5")


def test_model_config_attributes_may_be_bytes_but_must_be_json(tmp_path: Path) -> None:
    config = json.dumps(json.loads(sequential_model().to_json())).encode()
    with h5py.File(tmp_path / "bytes.h5", "w") as h5:
        h5.attrs["model_config"] = np.bytes_(config)
        h5.attrs["keras_version"] = np.bytes_(b"2.15.0")
    info = inspect_h5(tmp_path / "bytes.h5")
    assert info.summary.outputs[0].name == "out"
    assert info.keras_version == "2.15.0"
    for bad, message in [
        (b"{not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"config": {}}', "malformed"),
    ]:
        with h5py.File(tmp_path / "bad.h5", "w") as h5:
            h5.attrs["model_config"] = np.bytes_(bad)
        with pytest.raises(InvalidUpload, match=message):
            inspect_h5(tmp_path / "bad.h5")


# --- npz datasets --------------------------------------------------------------------------------


def test_an_npz_dataset_reads_from_its_headers(tmp_path: Path) -> None:
    arrays = {
        "input_a": np.zeros((10, 16), "float32"),
        "labels": np.arange(10),
        "sample_weights.dense_2": np.ones(10, "float64"),
        "images": np.zeros((10, 2, 3), "uint8"),
    }
    np.savez(tmp_path / "d.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("d.npz", "c.npz"):
        summary = inspect_npz(tmp_path / name)
        assert summary.num_examples == 10
        assert summary.arrays == {
            "input_a": [10, 16],
            "labels": [10],
            "sample_weights.dense_2": [10],
            "images": [10, 2, 3],
        }
        assert summary.dtypes == {
            "input_a": "float32",
            "labels": "int64",
            "sample_weights.dense_2": "float64",
            "images": "uint8",
        }
        loaded = load_npz_arrays(tmp_path / name)
        assert loaded.keys() == arrays.keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


def test_arrays_of_different_lengths_are_refused_by_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2)), y=np.zeros(9))
    with pytest.raises(InvalidUpload, match=r"'x' and 'y' differ .*'x' has 10, 'y' has 9"):
        inspect_npz(tmp_path / "d.npz")


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros(2), meta=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InvalidUpload, match="array 'meta' has dtype object"):
        inspect_npz(tmp_path / "d.npz")
    # The loader refuses it before loading anything, as the inspection does.
    with pytest.raises(InvalidUpload, match="array 'meta' has dtype object"):
        load_npz_arrays(tmp_path / "d.npz")


def test_scalars_empty_archives_and_non_zips_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "scalar.npz", x=np.zeros(3), s=np.float32(1.0))
    with pytest.raises(InvalidUpload, match="array 's' is 0-d"):
        inspect_npz(tmp_path / "scalar.npz")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(InvalidUpload, match="holds no arrays"):
        inspect_npz(tmp_path / "empty.npz")
    np.save(tmp_path / "bare.npy", np.zeros(3))
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage" * 50)
    for name in ("bare.npy", "garbage.npz", "missing.npz"):
        with pytest.raises(InvalidUpload, match="not an .npz"):
            inspect_npz(tmp_path / name)
        with pytest.raises(InvalidUpload, match="not an .npz"):
            load_npz_arrays(tmp_path / name)


def test_a_member_that_is_not_an_npy_array_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", b"\x93NUMPY garbage header")
    with pytest.raises(InvalidUpload, match="array 'x' is not a readable .npy array"):
        inspect_npz(tmp_path / "d.npz")
    with zipfile.ZipFile(tmp_path / "e.npz", "w") as archive:
        archive.writestr("notes.txt", b"hello")
    with pytest.raises(InvalidUpload, match="member 'notes.txt' is not an .npy array"):
        inspect_npz(tmp_path / "e.npz")
