"""Deterministic jobs and their reruns on another worker process: every variable of the
final checkpoint, the export's variables and the evaluation metrics are bit-identical.

A stack of its own (Redis, data folder, API) and two worker processes one after the
other, so that a job and its rerun are known to run in different processes. The model
has dropout and the training data is shuffled, with no seed in the spec: the seeds k2e
chose at submission are what the rerun reuses.
"""

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.job_polling import wait_for_job
from tests.support.worker_process import WorkerProcess

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402
from tests.support.job_outputs import extract_savedmodel  # noqa: E402
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration
STEPS = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, TestClient, Path]]:
    root = tmp_path_factory.mktemp("determinism")
    redis = EmbeddedRedis(root / "redis", appendonly=False, die_with_parent=True)
    redis.start()
    settings = Settings(data_dir=root / "data", redis_url=redis.url)
    try:
        with admin_client(create_app(settings)) as client:
            yield settings, client, root
    finally:
        redis.stop()


def dropout_model() -> Any:
    tf.keras.utils.set_random_seed(3)
    inputs = tf.keras.Input((12,), name="x")
    hidden = tf.keras.layers.Dense(64, activation="relu")(inputs)
    hidden = tf.keras.layers.Dropout(0.4)(hidden)
    hidden = tf.keras.layers.Dense(32, activation="relu")(hidden)
    outputs = tf.keras.layers.Dense(3, activation="softmax", name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def checkpoint_variables(client: TestClient, job: dict[str, Any], into: Path) -> dict[str, Any]:
    step = job["progress"]["global_step"]
    response = client.get(f"/jobs/{job['id']}/checkpoints/{step}")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    return read_variables(str(into / f"model.ckpt-{step}"))


def read_variables(prefix: str) -> dict[str, Any]:
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_identical(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert sorted(first) == sorted(second)
    differ = [name for name in first if not np.array_equal(first[name], second[name])]
    assert not differ, f"variables differ: {differ}"


def run_on_new_worker(settings: Settings, log: Path, client: TestClient, submit: Any) -> dict:
    """Start a worker process, submit, wait for the job's end, stop the worker."""
    worker = WorkerProcess(settings, log).start()
    try:
        response = submit()
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.json()["id"], timeout=600)
    finally:
        worker.stop()
    assert job["status"] == "succeeded", job["error"]
    return job


def test_a_deterministic_job_and_its_rerun_on_another_process_are_bit_identical(stack) -> None:
    settings, client, root = stack
    model = upload(
        client,
        "/models",
        "m.h5",
        keras_models.save_h5(dropout_model(), root / "m.h5").read_bytes(),
    )
    rng = np.random.default_rng(5)
    x = rng.normal(size=(320, 12)).astype("float32")
    arrays = {"x": x, "y": np.eye(3, dtype="float32")[rng.integers(0, 3, 320)]}
    data = upload(client, "/datasets", "d.npz", keras_models.npz_bytes(arrays))
    spec = {
        "keras_model_path": model["id"],
        "deterministic": True,
        "config": {"save_checkpoints_steps": STEPS},
        "train": {"dataset": data["id"], "max_steps": STEPS, "batch_size": 16},
        "eval": {"dataset": data["id"]},
    }
    first = run_on_new_worker(
        settings, root / "worker-1.log", client, lambda: client.post("/convert", json=spec)
    )
    again = run_on_new_worker(
        settings,
        root / "worker-2.log",
        client,
        lambda: client.post(f"/jobs/{first['id']}/rerun"),
    )
    for job in (first, again):
        provenance = job["provenance"]
        assert provenance["deterministic"] is True
        versions = provenance["versions"]
        assert set(versions) == {"k2e", "tensorflow", "tensorflow_estimator", "python"}
        assert versions["tensorflow"] == tf.__version__
    assert first["provenance"]["worker"]["process"] != again["provenance"]["worker"]["process"]
    assert first["provenance"]["seeds"] == again["provenance"]["seeds"]
    assert again["metrics"]["eval"] == first["metrics"]["eval"]
    assert_identical(
        checkpoint_variables(client, first, root / "c1"),
        checkpoint_variables(client, again, root / "c2"),
    )
    exports = [
        extract_savedmodel(client, job["id"], root / f"e{n}")
        for n, job in enumerate((first, again))
    ]
    assert_identical(*(read_variables(str(e / "variables" / "variables")) for e in exports))

    # Without `deterministic` the job says so; its rerun may differ (nothing is asserted).
    # Two jobs in one process: the switch a deterministic job turned on is off for the next.
    worker = WorkerProcess(settings, root / "worker-3.log").start()
    try:
        ended = []
        for deterministic in (True, False):
            response = client.post("/convert", json={**spec, "deterministic": deterministic})
            assert response.status_code == 202, response.text
            ended.append(wait_for_job(client, response.json()["id"], timeout=600))
        response = client.post(f"/jobs/{ended[1]['id']}/rerun")
        assert response.status_code == 202, response.text
        loose_again = wait_for_job(client, response.json()["id"], timeout=600)
    finally:
        worker.stop()
    strict, loose = ended
    # A non-deterministic pair: the same seeds, and no claim that the bits agree.
    assert loose_again["status"] == "succeeded", loose_again["error"]
    assert loose_again["provenance"]["deterministic"] is False
    assert loose_again["provenance"]["seeds"] == loose["provenance"]["seeds"]
    assert strict["provenance"]["worker"] == loose["provenance"]["worker"]
    assert strict["provenance"]["deterministic"] is True
    assert loose["provenance"]["deterministic"] is False
    log = (root / "worker-3.log").read_text()
    assert f"job {strict['id']}: op determinism on" in log
    assert f"job {loose['id']}: op determinism off" in log
