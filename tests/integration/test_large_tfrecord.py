"""A TFRecord of about 1 GB trains with the worker's memory growth bounded.

Not part of `make test` (it writes and uploads a gigabyte): run with
`make test-large`. It prints the worker's RSS before and during training.
"""

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tests.support.wide_job import WIDTH, train_wide  # noqa: E402  (needs TensorFlow)

pytestmark = [pytest.mark.integration, pytest.mark.large]

TARGET_BYTES = 1 << 30


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

    job, before, peak = train_wide(client, worker.process.pid, info["id"], tmp_path, 400, 20)
    growth = peak - before
    print(
        f"\nTFRecord {size / 2**30:.2f} GiB, {n} examples; worker RSS {before:.0f} MB before, "
        f"{peak:.0f} MB peak (+{growth:.0f} MB) over {job['progress']['global_step']} steps"
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 400
    # 400 steps x 256 examples reads ~100k examples (~0.8 GB): streamed, not held.
    assert growth < 0.25 * size / 2**20
