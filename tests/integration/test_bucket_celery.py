"""A real Celery worker process on bucket storage (SeaweedFS): it shares only the job
store, Redis and the bucket with the API, trains in its own scratch, and leaves the job's
checkpoints and export in the bucket.

Until the API keeps uploads in the bucket itself, the test copies the API's stored files
into the bucket under their storage keys; and the worker process reaches the bucket
through the test suite's boto3 store (tests/support/bucket_store.py), installed as
``k2e.blobstore_s3`` by a ``sitecustomize`` on its PYTHONPATH.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.auth import admin_client
from tests.integration.conftest import ROOT, WorkerProcess, wait_for_job
from tests.integration.test_seed_examples import upload
from tests.support.bucket_store import BotoBlobStore
from tests.support.s3_server import S3Server

tf = pytest.importorskip("tensorflow")
from tests import models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

SHIM = """
import sys
import types


class S3BlobStore:
    @staticmethod
    def from_settings(settings):
        from tests.support.bucket_store import BotoBlobStore

        return BotoBlobStore.from_settings(settings)


module = types.ModuleType("k2e.blobstore_s3")
module.S3BlobStore = S3BlobStore
sys.modules["k2e.blobstore_s3"] = module
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_for_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis-bucket"), appendonly=False, die_with_parent=True
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_celery_worker_on_bucket_storage_runs_a_job_end_to_end(
    s3: S3Server, redis_for_bucket: EmbeddedRedis, tmp_path: Path
) -> None:
    api = Settings(data_dir=tmp_path / "api", redis_url=redis_for_bucket.url, database_url=None)
    worker_settings = Settings(
        data_dir=tmp_path / "worker",
        redis_url=redis_for_bucket.url,
        database_url=api.sqlalchemy_url,
    )
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    store = BotoBlobStore.of(s3, "k2e")
    with admin_client(create_app(api)) as client, pytest.MonkeyPatch.context() as patch:
        for name, value in s3.env("k2e").items():
            patch.setenv(name, value)
        patch.setenv("PYTHONPATH", os.pathsep.join([str(shim), str(ROOT)]))
        worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
        worker.start()
        try:
            h5 = models.save_h5(models.seed_multi_io_model(), tmp_path / "m.h5")
            model = upload(client, "/models", "seed.h5", h5.read_bytes())
            data = models.npz_bytes(models.seed_multi_io_data(n=64))
            dataset = upload(client, "/datasets", "d.npz", data)
            root = api.storage_root
            for path in sorted(root.rglob("*")):
                key = path.relative_to(root).as_posix()
                if path.is_file() and not key.startswith("tmp/"):
                    store.put_file(key, path)
            spec = {
                "keras_model_path": model["id"],
                "config": {"save_checkpoints_steps": 10},
                "train": {"dataset": dataset["id"], "max_steps": 20},
                "eval": {"dataset": dataset["id"], "steps": 2},
            }
            response = client.post("/convert", json=spec)
            assert response.status_code == 202, response.text
            job = wait_for_job(client, response.json()["id"], timeout=300)
        finally:
            worker.stop()
    log = worker.log
    assert job["status"] == "succeeded", (job["error"], log[-3000:])
    assert job["progress"]["global_step"] == 20
    assert job["export"]["verified"]
    key = f"tenants/default/jobs/{job['id']}"
    names = {info.key[len(key) + 1 :] for info in store.list(f"{key}/")}
    assert "model.ckpt-20.index" in names
    assert "checkpoint" in names
    assert any(name.startswith("export/") and name.endswith("/saved_model.pb") for name in names)
    assert "published checkpoint model.ckpt-20" in log
    # The worker kept nothing of the job on its own disk but its cached inputs.
    assert not (worker_settings.data_dir / "storage" / "tenants" / "default" / "jobs").exists()
    assert list((worker_settings.data_dir / "scratch").iterdir()) == []
    cached = worker_settings.data_dir / "cache" / "objects" / "tenants" / "default" / "datasets"
    assert (cached / dataset["id"] / "data.npz").read_bytes() == data
