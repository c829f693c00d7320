"""What does `deterministic: true` cost? Training steps/s with TensorFlow's op determinism
on and off, in one process, as a worker switches it per job (worker/determinism.py).

Two models: the seed document's multi-input/multi-output one (small dense layers) and a
wider one with dropout (what op determinism constrains: seeded random ops, reductions).
Each round trains a fresh Estimator (the same seeds) for STEPS steps with the switch off,
then on, then the order reversed the next round; the figure is the median of the
per-round ratios on/off. Also checks that two runs with it on end with equal variables.

    flock /tmp/k2e-integration.lock .venv/bin/python -m bench.determinism [ROUNDS]
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import keras_models
from worker.determinism import op_determinism
from worker.tfrt import tf

ROUNDS = 5
STEPS = 1500
WARMUP = 200


def wide_model() -> Any:
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((64,), name="x")
    hidden = tf.keras.layers.Dense(512, activation="relu")(inputs)
    hidden = tf.keras.layers.Dropout(0.3)(hidden)
    hidden = tf.keras.layers.Dense(512, activation="relu")(hidden)
    outputs = tf.keras.layers.Dense(10, activation="softmax", name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def seed_model() -> Any:
    tf.keras.utils.set_random_seed(3)
    return keras_models.seed_multi_io_model()


def wide_data() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 64)).astype("float32")
    return {"x": x}, {"y": np.eye(10, dtype="float32")[rng.integers(0, 10, 2048)]}


def seed_data() -> tuple[dict, dict]:
    data = keras_models.seed_multi_io_data(n=1024)
    return (
        {k: data[k] for k in ("input_a", "input_b")},
        {k: data[k] for k in ("dense_2", "dense_3")},
    )


def train(build: Any, data: Any, deterministic: bool, folder: Path) -> tuple[float, dict]:
    """steps/s of one fresh Estimator over STEPS steps after WARMUP, and its variables."""
    features, labels = data()
    tf.keras.backend.clear_session()
    with op_determinism(deterministic) as on:
        assert on == deterministic
        estimator = tf.keras.estimator.model_to_estimator(
            keras_model=build(),
            config=tf.estimator.RunConfig(
                model_dir=str(folder),
                tf_random_seed=11,
                save_checkpoints_steps=10**9,
                save_checkpoints_secs=None,
                log_step_count_steps=10**9,
            ),
        )

        def input_fn() -> Any:
            ds = tf.data.Dataset.from_tensor_slices((features, labels))
            return ds.shuffle(1024, seed=5).repeat().batch(32).prefetch(tf.data.AUTOTUNE)

        estimator.train(input_fn, max_steps=WARMUP)
        start = time.perf_counter()
        estimator.train(input_fn, max_steps=WARMUP + STEPS)
        rate = STEPS / (time.perf_counter() - start)
    reader = tf.train.load_checkpoint(str(folder))
    return rate, {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def main(rounds: int = ROUNDS) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="k2e-determinism-"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    results: dict[str, Any] = {"rounds": rounds, "steps": STEPS, "batch_size": 32, "load": load}
    for name, build, data in (("seed", seed_model, seed_data), ("wide", wide_model, wide_data)):
        rates: dict[str, list[float]] = {"off": [], "on": []}
        ratios, variables = [], []
        for round_ in range(rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            got = {}
            for deterministic in order:
                folder = root / f"{name}-{round_}-{int(deterministic)}"
                got[deterministic] = train(build, data, deterministic, folder)
            rates["off"].append(got[False][0])
            rates["on"].append(got[True][0])
            ratios.append(got[True][0] / got[False][0])
            variables.append(got[True][1])
        identical = all(
            all(np.array_equal(v[k], variables[0][k]) for k in variables[0]) for v in variables
        )
        results[name] = {
            "steps_per_s_off": [round(r, 1) for r in rates["off"]],
            "steps_per_s_on": [round(r, 1) for r in rates["on"]],
            "median_ratio_on_off": round(statistics.median(ratios), 3),
            "deterministic_runs_identical": identical,
        }
    return results


if __name__ == "__main__":
    found = main(*(int(a) for a in sys.argv[1:2]))
    json.dump(found, sys.stdout, indent=2)
    print()
