"""Jobs run by the worker's own code (worker.training.JobRunner) on bucket storage: a real
S3 server (SeaweedFS), real TensorFlow, a job store shared with an API.

The API keeps its uploads in the bucket; the worker has its own data folder and sees the
uploads through the bucket and the job store only.
"""

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from k2e.jobs.queueing import make_celery
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.bucket_store import RecordingStore, s3_store
from tests.support.s3_server import CREDENTIALS, S3Server
from tests.support.uploads import upload

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models as models  # noqa: E402  (needs TensorFlow)
from worker import reconciler, training  # noqa: E402
from worker.sync import fetch_checkpoint  # noqa: E402

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    client: TestClient
    api: Settings
    worker: Settings
    store: RecordingStore

    def run(self, spec: dict) -> dict:
        """Submit ``spec``, run its job in this process as a worker does, return it."""
        response = self.client.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        runner = training.JobRunner(self.worker)
        runner.run(job_id)
        job = self.client.get(f"/jobs/{job_id}").json()
        job["export_path"] = runner.store.export_path(job_id)
        job["logs"] = self.client.get(f"/jobs/{job_id}/logs?limit=5000").text
        return job


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("bucket-jobs")
    redis = EmbeddedRedis(root / "redis", appendonly=False, die_with_parent=True)
    redis.start()
    server = S3Server(root / "seaweedfs")
    try:
        server.start()
        store = RecordingStore(s3_store(server, "k2e"))
        api = Settings(
            data_dir=root / "api",
            redis_url=redis.url,
            database_url=None,
            storage_url="s3://k2e/k2e",
            s3_endpoint_url=server.endpoint,
        )
        worker = api.model_copy(
            update={
                "data_dir": root / "worker",
                "database_url": api.sqlalchemy_url,
                "worker_cache_bytes": 50 * 1024**2,
            }
        )
        with pytest.MonkeyPatch.context() as patch:
            for name, value in CREDENTIALS.items():
                patch.setenv(name, value)
            with admin_client(create_app(api)) as client:
                patch.setattr(training, "blob_store", lambda settings: store)
                patch.setattr(reconciler, "blob_store", lambda settings: store)
                yield Stack(client, api, worker, store)
    finally:
        server.stop()
        redis.stop()


@pytest.fixture(scope="module")
def uploads(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    h5 = models.save_h5(models.seed_multi_io_model(), tmp_path_factory.mktemp("m") / "m.h5")
    model = upload(stack.client, "/models", "seed.h5", h5.read_bytes())
    data = models.npz_bytes(models.seed_multi_io_data(n=64))
    dataset = upload(stack.client, "/datasets", "d.npz", data)
    return {"model": model["id"], "dataset": dataset["id"]}


def _published(logs: str) -> list[int]:
    return [int(step) for step in re.findall(r"published checkpoint model\.ckpt-([0-9]+) ", logs)]


def test_a_job_on_bucket_storage_resumes_from_the_buckets_checkpoint_and_exports(
    stack: Stack, uploads: dict[str, str]
) -> None:
    base = {
        "keras_model_path": uploads["model"],
        "model_dir": "shared",
        "config": {"tf_random_seed": 3, "save_checkpoints_steps": 5},
    }
    first = stack.run(
        {**base, "train": {"dataset": uploads["dataset"], "max_steps": 10}, "export": False}
    )
    assert first["status"] == "succeeded", first["error"]
    assert first["progress"]["global_step"] == 10
    assert _published(first["logs"]) == [0, 5, 10]
    key = "tenants/default/model_dirs/shared"
    assert stack.store.size(f"{key}/model.ckpt-10.index") is not None
    # The worker's own data folder holds no model_dir: scratch is gone with the job.
    assert not (stack.worker.data_dir / "storage").exists()
    assert list((stack.worker.data_dir / "scratch").iterdir()) == []
    data_key = f"tenants/default/datasets/{uploads['dataset']}/data.npz"
    assert stack.store.keys("get").count(data_key) == 1

    # Another job of the same model_dir, on a worker with empty scratch: it restores
    # step 10 from the bucket and trains on to exactly its max_steps, then evaluates and
    # exports into the bucket.
    second = stack.run(
        {
            **base,
            "warm_start": True,  # the API sees the run in the bucket's model_dir
            "train": {"dataset": uploads["dataset"], "max_steps": 20},
            "eval": {"dataset": uploads["dataset"], "steps": 2},
        }
    )
    assert second["status"] == "succeeded", second["error"]
    assert second["progress"]["global_step"] == 20
    assert _published(second["logs"]) == [10, 15, 20]
    assert second["metrics"]["eval"]
    assert second["export"]["verified"], second["export"]
    assert "cache: tenants/default/datasets" in second["logs"]
    assert stack.store.keys("get").count(data_key) == 1  # the cache's copy: no download
    exports = [info.key for info in stack.store.list(f"{key}/export/")]
    assert exports, stack.store.calls
    versions = {k.split("/export/")[1].split("/")[0] for k in exports}
    assert len(versions) == 1
    (version,) = versions
    assert f"{key}/export/{version}/saved_model.pb" in exports
    puts = [k for k in stack.store.keys("put") if "/export/" in k]
    assert puts[-1].endswith("/saved_model.pb")  # the last object of the export
    assert second["export_path"] == f"model_dirs/shared/export/{version}"
    events = [info.key for info in stack.store.list(f"{key}/eval/")]
    assert events  # the evaluation's event file is published
    assert list((stack.worker.data_dir / "scratch").iterdir()) == []

    # A job whose model_dir is at its max_steps already trains no step more.
    again = stack.run(
        {
            **base,
            "warm_start": True,
            "train": {"dataset": uploads["dataset"], "max_steps": 20},
            "export": False,
        }
    )
    assert again["status"] == "succeeded", again["error"]
    assert again["progress"]["global_step"] == 20
    assert _published(again["logs"]) == []
    assert stack.store.size(f"{key}/model.ckpt-21.index") is None

    # POST /jobs/{id}/predict's worker half: the newest export, from the bucket.
    runner = training.JobRunner(stack.worker)
    instances = [{"input_a": [0.1] * 16, "input_b": [0.2] * 16}]
    runner.predict(second["id"], "default", instances, None, "k2e:predict:bucket-test")
    answer = redis.Redis.from_url(stack.worker.broker_url).blpop(
        ["k2e:predict:bucket-test"], timeout=30
    )
    assert answer is not None
    reply = json.loads(answer[1])
    assert "error" not in reply, reply
    assert len(reply["predictions"]) == 1
    assert not (stack.worker.data_dir / "storage").exists()


def test_a_dataset_whose_stored_bytes_differ_from_its_upload_fails_the_job(
    stack: Stack, uploads: dict[str, str], tmp_path: Path
) -> None:
    data = models.npz_bytes(models.seed_multi_io_data(n=16))
    dataset = upload(stack.client, "/datasets", "other.npz", data)
    key = f"tenants/default/datasets/{dataset['id']}/data.npz"
    stack.store.store.put_bytes(key, data[:-1] + bytes([data[-1] ^ 1]))
    job = stack.run(
        {
            "keras_model_path": uploads["model"],
            "train": {"dataset": dataset["id"], "max_steps": 2},
            "export": False,
        }
    )
    assert job["status"] == "failed"
    assert "does not match its upload" in job["error"]["message"], job["error"]
    assert key in job["error"]["message"]


def test_retention_removes_a_finished_jobs_model_dir_from_the_bucket(
    stack: Stack, uploads: dict[str, str]
) -> None:
    job = stack.run(
        {
            "keras_model_path": uploads["model"],
            "train": {"dataset": uploads["dataset"], "max_steps": 2},
            "export": False,
        }
    )
    assert job["status"] == "succeeded", job["error"]
    own = f"tenants/default/jobs/{job['id']}/"
    assert any(info.key.endswith("model.ckpt-2.index") for info in stack.store.list(own))
    time.sleep(0.05)
    settings = stack.worker.model_copy(update={"retention_days": 1e-9})
    rounds = reconciler.Reconciler(settings, make_celery(settings, name="k2e-test"))
    assert rounds.apply_retention() >= 1
    assert list(stack.store.list(own)) == []


def test_a_fine_tuning_job_starts_from_the_source_checkpoint_in_the_bucket(
    stack: Stack, uploads: dict[str, str], tmp_path: Path
) -> None:
    source = stack.run(
        {
            "keras_model_path": uploads["model"],
            "config": {"tf_random_seed": 5, "save_checkpoints_steps": 10},
            "train": {"dataset": uploads["dataset"], "max_steps": 10},
            "export": False,
        }
    )
    assert source["status"] == "succeeded", source["error"]
    # The API checks the source checkpoint in the bucket before it accepts the job.
    own = f"tenants/default/jobs/{source['id']}/"
    tuned = stack.run(
        {
            "keras_model_path": uploads["model"],
            "warm_start_from": {"job": source["id"]},
            "config": {"tf_random_seed": 6, "save_checkpoints_steps": 1},
            "train": {"dataset": uploads["dataset"], "max_steps": 1},
            "export": False,
        }
    )
    assert tuned["status"] == "succeeded", tuned["error"]
    assert tuned["warm_start_from"] == f"jobs/{source['id']}/model.ckpt-10"
    start = fetch_checkpoint(
        stack.store, f"tenants/default/jobs/{tuned['id']}/model.ckpt-0", tmp_path / "tuned"
    )
    trained = fetch_checkpoint(stack.store, f"{own}model.ckpt-10", tmp_path / "source")
    assert start is not None
    assert trained is not None
    start_reader = tf.train.load_checkpoint(str(start))
    trained_reader = tf.train.load_checkpoint(str(trained))
    names = [
        name
        for name in trained_reader.get_variable_to_shape_map()
        if name.startswith("layer_with_weights-") and "OPTIMIZER_SLOT" not in name
    ]
    assert len(names) == 6
    for name in names:
        np.testing.assert_array_equal(
            start_reader.get_tensor(name), trained_reader.get_tensor(name), err_msg=name
        )
