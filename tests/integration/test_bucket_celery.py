"""A real Celery worker process on bucket storage (SeaweedFS): it shares only the job
store, Redis and the bucket with the API, trains in its own scratch, and leaves the job's
checkpoints and export in the bucket."""

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from k2e.blobstore_s3 import S3BlobStore
from k2e.errors import NotFound
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.bucket_store import s3_store
from tests.support.fault_deployment import FAST_RECOVERY
from tests.support.job_polling import wait_for_job
from tests.support.s3_server import S3Server
from tests.support.uploads import upload
from tests.support.worker_process import WorkerProcess

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models as models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration


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


@dataclass
class Machines:
    """An API on its own folder, and workers each on a data folder of its own (another
    machine's disk): they share the job store, Redis and the bucket."""

    root: Path
    client: TestClient
    api: Settings
    store: S3BlobStore
    redis_url: str
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, name: str) -> tuple[WorkerProcess, Settings]:
        settings = Settings(
            data_dir=self.root / name,
            redis_url=self.redis_url,
            database_url=self.api.sqlalchemy_url,
            **FAST_RECOVERY,
        )
        process = WorkerProcess(settings, self.root / f"{name}.log")
        self.workers.append(process)
        process.start()
        return process, settings

    def uploads(self) -> tuple[str, str, bytes]:
        """A model and a dataset through the API (which keeps them in the bucket)."""
        h5 = models.save_h5(models.seed_multi_io_model(), self.root / "m.h5")
        model = upload(self.client, "/models", "seed.h5", h5.read_bytes())
        data = models.npz_bytes(models.seed_multi_io_data(n=256))
        dataset = upload(self.client, "/datasets", "d.npz", data)
        return model["id"], dataset["id"], data

    def submit(self, spec: dict) -> str:
        response = self.client.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


@pytest.fixture
def machines(s3: S3Server, redis_for_bucket: EmbeddedRedis, tmp_path: Path) -> Iterator[Machines]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3.env("k2e").items():
            patch.setenv(name, value)
        api = Settings(data_dir=tmp_path / "api", redis_url=redis_for_bucket.url, database_url=None)
        assert api.storage_url == "s3://k2e/k2e"
        with admin_client(create_app(api)) as client:
            found = Machines(tmp_path, client, api, s3_store(s3, "k2e"), redis_for_bucket.url)
            try:
                yield found
            finally:
                for process in found.workers:
                    process.stop()
                # Nothing of another test's stays queued for the next test's workers.
                redis.Redis.from_url(redis_for_bucket.url).flushall()


def test_a_celery_worker_on_bucket_storage_runs_a_job_end_to_end(machines: Machines) -> None:
    worker, settings = machines.worker("worker")
    model, dataset, data = machines.uploads()
    spec = {
        "keras_model_path": model,
        "config": {"save_checkpoints_steps": 10},
        "train": {"dataset": dataset, "max_steps": 20},
        "eval": {"dataset": dataset, "steps": 2},
    }
    job = wait_for_job(machines.client, machines.submit(spec), timeout=300)
    log = worker.log
    assert job["status"] == "succeeded", (job["error"], log[-3000:])
    assert job["progress"]["global_step"] == 20
    assert job["export"]["verified"]
    key = f"tenants/default/jobs/{job['id']}"
    names = {info.key[len(key) + 1 :] for info in machines.store.list(f"{key}/")}
    assert "model.ckpt-20.index" in names
    assert "checkpoint" in names
    assert any(name.startswith("export/") and name.endswith("/saved_model.pb") for name in names)
    assert "published checkpoint model.ckpt-20" in log
    # The worker kept nothing of the job on its own disk but its cached inputs.
    assert not (settings.data_dir / "storage" / "tenants" / "default" / "jobs").exists()
    assert list((settings.data_dir / "scratch").iterdir()) == []
    cached = settings.data_dir / "cache" / "objects" / "tenants" / "default" / "datasets"
    assert (cached / dataset / "data.npz").read_bytes() == data


def _bucket_step(store: S3BlobStore, key: str) -> int:
    try:
        state = store.get_bytes(f"{key}/checkpoint").decode()
    except NotFound:
        return 0
    found = re.search(r'model_checkpoint_path: "model\.ckpt-([0-9]+)"', state)
    return int(found[1]) if found else 0


def test_kill_9_mid_training_resumes_on_another_machine_from_the_bucket(
    machines: Machines,
) -> None:
    workers = [machines.worker("machine-a"), machines.worker("machine-b")]
    model, dataset, _ = machines.uploads()
    spec = {
        "keras_model_path": model,
        "config": {"save_checkpoints_steps": 200, "log_step_count_steps": 50},
        "train": {"dataset": dataset, "max_steps": 3000, "batch_size": 64},
        "eval": {"dataset": dataset, "steps": 2},
    }
    job_id = machines.submit(spec)
    key = f"tenants/default/jobs/{job_id}"
    deadline = time.monotonic() + 180
    while _bucket_step(machines.store, key) < 400:
        assert time.monotonic() < deadline, [w.log[-2000:] for w, _ in workers]
        time.sleep(0.05)
    [first] = [w for w, _ in workers if f"job {job_id}: attempt 1" in w.log]
    [(second, second_settings)] = [(w, s) for w, s in workers if w is not first]
    in_bucket = _bucket_step(machines.store, key)
    first.kill_hard()
    assert in_bucket < 3000  # killed mid-training
    job = wait_for_job(machines.client, job_id, timeout=300)
    assert job["status"] == "succeeded", (job["error"], second.log[-3000:])
    assert job["attempts"] == 2
    assert job["progress"]["global_step"] == 3000
    assert job["metrics"]["eval"]["global_step"] == 3000
    # Machine B had none of the job's files: it restored the bucket's newest checkpoint
    # (the one seen at the kill, or one the first machine published as it died).
    restored = re.findall(r"restored model\.ckpt-([0-9]+) from " + re.escape(key), second.log)
    assert restored, second.log[-3000:]
    assert in_bucket <= int(restored[0]) < 3000
    published = re.findall(r"published checkpoint model\.ckpt-([0-9]+) ", second.log)
    assert int(published[0]) == int(restored[0])  # saved at the restored step first
    assert int(published[-1]) == 3000
    assert _bucket_step(machines.store, key) == 3000
    assert list((second_settings.data_dir / "scratch").iterdir()) == []
