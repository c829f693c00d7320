"""A TFRecord of about 1 GB trains with the worker's memory growth bounded.

Not part of `make test` (it writes and uploads a gigabyte): run with
`make test-large`. It prints the worker's RSS before and during training.
"""

import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests import models  # noqa: E402  (needs TensorFlow)

pytestmark = [pytest.mark.integration, pytest.mark.large]

TARGET_BYTES = 1 << 30
WIDTH = 1024  # floats per input: ~8 KB per example, ~130k examples


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _write(path: Path) -> int:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(256, 2, WIDTH)).astype("float32")
    n = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        while path.stat().st_size < TARGET_BYTES:  # the writer creates the file
            for row in block:
                feature = {
                    "a": tf.train.Feature(float_list=tf.train.FloatList(value=row[0])),
                    "b": tf.train.Feature(float_list=tf.train.FloatList(value=row[1])),
                    "y": tf.train.Feature(float_list=tf.train.FloatList(value=[row[0, 0]])),
                }
                ex = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(ex.SerializeToString())
                n += 1
            writer.flush()
    return n


def test_a_1gb_tfrecord_trains_with_bounded_worker_memory(client, worker, tmp_path) -> None:
    data = tmp_path / "big.tfrecord"
    n = _write(data)
    size = data.stat().st_size
    with data.open("rb") as f:
        response = client.post("/datasets", files={"file": ("big.tfrecord", f)})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["num_examples"] == n

    a = tf.keras.Input((WIDTH,), name="a")
    b = tf.keras.Input((WIDTH,), name="b")
    hidden = tf.keras.layers.Dense(16, activation="relu", name="h")(
        tf.keras.layers.concatenate([a, b], name="ab")
    )
    model = tf.keras.Model([a, b], tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="adam", loss="mse")
    h5 = models.save_h5(model, tmp_path / "wide.h5")
    model_id = client.post("/models", files={"file": ("wide.h5", h5.read_bytes())}).json()["id"]

    child = _pool_children(worker.process.pid)[0]
    before = _rss_mb(child)
    spec = {
        "keras_model_path": model_id,
        "config": {"log_step_count_steps": 20},
        "train": {
            "dataset": info["id"],
            "max_steps": 400,
            "batch_size": 256,
            "shuffle": True,
            "shuffle_buffer": 1024,
        },
    }
    job_id = client.post("/convert", json=spec).json()["id"]
    peak = before
    while client.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running"):
        peak = max(peak, _rss_mb(child))
        time.sleep(0.2)
    job = wait_for_job(client, job_id)
    growth = peak - before
    print(
        f"\nTFRecord {size / 2**30:.2f} GiB, {n} examples; worker RSS {before:.0f} MB before, "
        f"{peak:.0f} MB peak (+{growth:.0f} MB) over {job['progress']['global_step']} steps"
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 400
    # 400 steps x 256 examples reads ~100k examples (~0.8 GB): streamed, not held.
    assert growth < 0.25 * size / 2**20
