"""The export's reference predictions taken from the job's evaluation (worker/reference.py)
are the ones Estimator.predict gives from the same checkpoint, on the first examples of
the evaluation data, also for a model whose layers behave differently in training."""

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from k2e.schemas import TensorInfo  # noqa: E402
from worker.reference import ReferenceHook, with_evaluation_reference  # noqa: E402
from worker.verify import estimator_predictions  # noqa: E402

EXAMPLES, BATCH, LIMIT = 40, 16, 20  # the limit falls inside the second batch


def _model() -> tf.keras.Model:
    inputs = tf.keras.Input((6,), name="x")
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    hidden = tf.keras.layers.Dropout(0.5)(hidden)  # on in training only
    hidden = tf.keras.layers.BatchNormalization()(hidden)
    outputs = tf.keras.layers.Dense(3, activation="softmax", name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    optimizer = tf.keras.optimizers.get("sgd", use_legacy_optimizer=True)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    return model


def test_the_evaluation_reference_equals_estimator_predict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((EXAMPLES, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, EXAMPLES)]
    tf.keras.backend.clear_session()
    converted = tf.keras.estimator.model_to_estimator(
        keras_model=_model(), model_dir=str(tmp_path / "m")
    )
    estimator = tf.estimator.Estimator(
        model_fn=with_evaluation_reference(converted.model_fn),
        config=converted.config,
        warm_start_from=converted._warm_start_settings,
    )

    def input_fn(training: bool):
        def fn():
            ds = tf.data.Dataset.from_tensor_slices(({"x": x}, {"y": y}))
            return ds.repeat().batch(BATCH) if training else ds.batch(BATCH)

        return fn

    estimator.train(input_fn(True), max_steps=5)
    checkpoint = estimator.latest_checkpoint()
    hook = ReferenceHook([TensorInfo(name="x", shape=[None, 6])], LIMIT)
    estimator.evaluate(input_fn(False), hooks=[hook], checkpoint_path=checkpoint)

    assert hook.reference is not None
    np.testing.assert_array_equal(hook.reference.features["x"], x[:LIMIT])
    assert hook.reference.examples == LIMIT
    expected = estimator_predictions(estimator, {"x": x[:LIMIT]}, checkpoint)
    assert set(hook.reference.predictions) == set(expected) == {"y"}
    # With the evaluation in training mode, Dropout(0.5) would zero random units and the
    # outputs would differ far beyond this.
    np.testing.assert_allclose(hook.reference.predictions["y"], expected["y"], atol=1e-6)


def test_a_graph_that_recorded_nothing_gives_no_reference(tmp_path: Path) -> None:
    x = np.zeros((8, 6), "float32")
    y = np.eye(3, dtype="float32")[np.zeros(8, int)]
    tf.keras.backend.clear_session()
    converted = tf.keras.estimator.model_to_estimator(
        keras_model=_model(), model_dir=str(tmp_path / "m")
    )
    hook = ReferenceHook([TensorInfo(name="x", shape=[None, 6])], LIMIT)
    converted.evaluate(
        lambda: tf.data.Dataset.from_tensor_slices(({"x": x}, {"y": y})).batch(4), hooks=[hook]
    )
    assert hook.reference is None
