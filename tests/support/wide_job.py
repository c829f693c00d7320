"""The large-dataset tests' job: a two-input model of WIDTH floats each, trained on an
uploaded dataset while the worker's pool process's resident memory is sampled."""

import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from tests.support import keras_models
from tests.support.job_polling import wait_for_job

WIDTH = 1024  # floats per input: ~8 KB per example


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def train_wide(
    client: Any, worker_pid: int, dataset_id: str, tmp_path: Path, max_steps: int, log_every: int
) -> tuple[dict, float, float]:
    """Upload the wide model, train it on ``dataset_id``; the ended job and the worker
    pool process's RSS (MB) before the job and at its peak."""
    a = tf.keras.Input((WIDTH,), name="a")
    b = tf.keras.Input((WIDTH,), name="b")
    hidden = tf.keras.layers.Dense(16, activation="relu", name="h")(
        tf.keras.layers.concatenate([a, b], name="ab")
    )
    model = tf.keras.Model([a, b], tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="adam", loss="mse")
    h5 = keras_models.save_h5(model, tmp_path / "wide.h5")
    model_id = client.post("/models", files={"file": ("wide.h5", h5.read_bytes())}).json()["id"]

    child = pool_children(worker_pid)[0]
    before = rss_mb(child)
    spec = {
        "keras_model_path": model_id,
        "config": {"log_step_count_steps": log_every},
        "train": {
            "dataset": dataset_id,
            "max_steps": max_steps,
            "batch_size": 256,
            "shuffle": True,
            "shuffle_buffer": 1024,
        },
    }
    job_id = client.post("/convert", json=spec).json()["id"]
    peak = before
    while client.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running"):
        peak = max(peak, rss_mb(child))
        time.sleep(0.2)
    return wait_for_job(client, job_id), before, peak
