"""The mission on bucket storage as users run it: SeaweedFS, an API process and two Celery
worker processes, each on a data folder of its own (separate machines: they share only
the bucket, Redis and the PostgreSQL job store). Upload, convert, train, evaluate,
export, download (tar.gz, tar, a presigned redirect), predict; then a worker SIGKILLed
mid-training, and the S3 server SIGKILLed mid-training and restarted."""

import gzip
import io
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from k2e.blobstore_s3 import S3BlobStore
from k2e.errors import NotFound
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from tests.support.api_keys import ADMIN
from tests.support.api_server import running_api
from tests.support.bucket_store import s3_store
from tests.support.fault_deployment import FAST_RECOVERY
from tests.support.job_polling import wait_for_job
from tests.support.postgres import fresh_postgres_database
from tests.support.s3_server import S3Server
from tests.support.uploads import upload
from tests.support.worker_process import WorkerProcess

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration


@dataclass
class Mission:
    root: Path
    s3: S3Server
    store: S3BlobStore
    api: httpx.Client
    api_dir: Path
    workers: dict[str, WorkerProcess]
    model: str
    dataset: str

    def submit(self, spec: dict) -> str:
        response = self.api.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def bucket_step(self, job_id: str) -> int:
        try:
            state = self.store.get_bytes(f"tenants/default/jobs/{job_id}/checkpoint").decode()
        except NotFound:
            return 0
        found = re.search(r'model_checkpoint_path: "model\.ckpt-([0-9]+)"', state)
        return int(found[1]) if found else 0

    def wait_step(self, job_id: str, step: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.bucket_step(job_id) < step:
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.05)

    def runner(self, job_id: str) -> str:
        [name] = [n for n, w in self.workers.items() if f"job {job_id}: attempt 1" in w.log]
        return name

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{w.log[-2500:]}" for n, w in self.workers.items())

    def export_versions(self, job_id: str) -> set[str]:
        root = f"tenants/default/jobs/{job_id}/export/"
        return {info.key[len(root) :].split("/")[0] for info in self.store.list(root)}

    def assert_nothing_left_behind(self, job_id: str) -> None:
        """No model_dir file under the API's folder; every worker's scratch empty."""
        assert not [p for p in self.api_dir.rglob("*") if job_id in p.name or ".ckpt" in p.name]
        assert not list(self.api_dir.rglob("jobs"))
        for name, worker in self.workers.items():
            scratch = worker.settings.data_dir / "scratch"
            leftover = list(scratch.iterdir()) if scratch.is_dir() else []
            assert leftover == [], (name, leftover)


def _worker(root: Path, name: str, redis_url: str, database_url: str) -> WorkerProcess:
    settings = Settings(
        data_dir=root / name, redis_url=redis_url, database_url=database_url, **FAST_RECOVERY
    )
    assert settings.storage_url  # from the environment, as a deployment sets it
    return WorkerProcess(settings, root / f"{name}.log").start()


def _restart(worker: WorkerProcess, log_path: Path) -> WorkerProcess:
    return WorkerProcess(worker.settings, log_path).start()


@pytest.fixture(scope="module")
def mission(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mission]:
    root = tmp_path_factory.mktemp("bucket-mission")
    s3 = S3Server(root / "seaweedfs").start()
    redis = EmbeddedRedis(root / "redis", appendonly=False, die_with_parent=True)
    redis.start()
    workers: dict[str, WorkerProcess] = {}
    try:
        with (
            fresh_postgres_database() as database_url,
            pytest.MonkeyPatch.context() as patch,
        ):
            for name, value in s3.env("k2e").items():
                patch.setenv(name, value)
            env = dict(
                os.environ,
                K2E_DATA_DIR=str(root / "api"),
                REDIS_URL=redis.url,
                DATABASE_URL=database_url,
                PYTHONUNBUFFERED="1",
            )
            with running_api(env, root / "api.log") as (base, _):
                for name in ("machine-a", "machine-b"):
                    workers[name] = _worker(root, name, redis.url, database_url)
                with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as api:
                    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), root / "m.h5")
                    model = upload(api, "/models", "seed.h5", h5.read_bytes())
                    arrays = keras_models.seed_multi_io_data(n=256)
                    data = keras_models.npz_bytes(arrays)
                    dataset = upload(api, "/datasets", "d.npz", data)
                    yield Mission(
                        root,
                        s3,
                        s3_store(s3, "k2e"),
                        api,
                        root / "api",
                        workers,
                        model["id"],
                        dataset["id"],
                    )
    finally:
        for worker in workers.values():
            worker.stop()
        redis.stop()
        s3.stop()


def _tar_members(tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }


def test_the_mission_runs_on_bucket_storage_across_machines(
    mission: Mission, tmp_path: Path
) -> None:
    spec = {
        "keras_model_path": mission.model,
        "config": {"save_checkpoints_steps": 10},
        "train": {"dataset": mission.dataset, "max_steps": 20},
        "eval": {"dataset": mission.dataset, "steps": 2},
    }
    job_id = mission.submit(spec)
    job = wait_for_job(mission.api, job_id, timeout=300)
    assert job["status"] == "succeeded", (job["error"], mission.logs())
    assert job["progress"]["global_step"] == 20
    assert job["metrics"]["eval"]["global_step"] == 20
    assert job["export"]["verified"]

    url = f"/jobs/{job_id}/savedmodel"
    gz = mission.api.get(url)
    assert gz.status_code == 200, gz.text
    tar = mission.api.get(url, params={"format": "tar"})
    assert tar.status_code == 200
    assert int(tar.headers["content-length"]) == len(tar.content)
    members = _tar_members(tar.content)
    assert _tar_members(gzip.decompress(gz.content)) == members
    [version] = mission.export_versions(job_id)
    assert f"{version}/saved_model.pb" in members
    moved = mission.api.get(url, params={"format": "tar", "redirect": "true"})
    assert moved.status_code == 307, moved.text
    signed = httpx.get(moved.headers["location"])  # no k2e key: the URL is signed
    assert signed.status_code == 200
    assert signed.content == tar.content

    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        archive.extractall(tmp_path / "export", filter="data")
    loaded = tf.saved_model.load(str(tmp_path / "export" / version))
    assert "serving_default" in loaded.signatures

    instances = [{"input_a": [0.1] * 16, "input_b": [0.2] * 16}] * 2
    answer = mission.api.post(f"/jobs/{job_id}/predict", json={"instances": instances})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
    mission.assert_nothing_left_behind(job_id)


def _long_spec(mission: Mission, max_steps: int) -> dict:
    return {
        "keras_model_path": mission.model,
        "config": {"save_checkpoints_steps": 200, "log_step_count_steps": 50},
        "train": {"dataset": mission.dataset, "max_steps": max_steps, "batch_size": 64},
        "eval": {"dataset": mission.dataset, "steps": 2},
    }


def test_a_worker_killed_mid_training_resumes_on_the_other_from_the_bucket(
    mission: Mission,
) -> None:
    job_id = mission.submit(_long_spec(mission, 3000))
    mission.wait_step(job_id, 400)
    first = mission.runner(job_id)
    in_bucket = mission.bucket_step(job_id)
    mission.workers[first].kill_hard()
    assert in_bucket < 3000
    [second] = [name for name in mission.workers if name != first]
    try:
        job = wait_for_job(mission.api, job_id, timeout=400)
        assert job["status"] == "succeeded", (job["error"], mission.logs())
        assert job["attempts"] == 2
        assert job["progress"]["global_step"] == 3000
        assert job["metrics"]["eval"]["global_step"] == 3000
        log = mission.workers[second].log
        key = re.escape(f"tenants/default/jobs/{job_id}")
        restored = re.findall(rf"restored model\.ckpt-([0-9]+) from {key}", log)
        assert restored, log[-3000:]
        assert in_bucket <= int(restored[0]) < 3000
        assert mission.bucket_step(job_id) == 3000
        assert len(mission.export_versions(job_id)) == 1
        checkpoints = mission.api.get(f"/jobs/{job_id}/checkpoints").json()
        assert checkpoints[-1]["step"] == 3000
    finally:
        # The killed machine comes back (its folder as it was) for the next test; its new
        # process removes the scratch folder the killed one left.
        killed = mission.workers[first]
        mission.workers[first] = _restart(killed, mission.root / f"{first}-restarted.log")
    mission.assert_nothing_left_behind(job_id)


def test_the_s3_server_killed_mid_training_never_leaves_a_corrupt_export(
    mission: Mission, tmp_path: Path
) -> None:
    job_id = mission.submit(_long_spec(mission, 2000))
    mission.wait_step(job_id, 200)
    mission.s3.kill()
    time.sleep(3)
    mission.s3.start()
    job = wait_for_job(mission.api, job_id, timeout=400)
    if job["status"] == "failed":
        assert job["error"]["type"] == "StorageUnavailable", job["error"]
        assert "storage unavailable: the bucket s3://k2e/k2e" in job["error"]["message"]
        assert job["progress"]["global_step"] >= 200  # the step it reached
        assert mission.bucket_step(job_id) >= 200  # what it published is kept
        mission.assert_nothing_left_behind(job_id)
        return
    assert job["status"] == "succeeded", (job["error"], mission.logs())
    assert job["progress"]["global_step"] == 2000
    assert job["export"]["verified"]
    # The export was published once: one version, and it loads.
    [version] = mission.export_versions(job_id)
    tar = mission.api.get(f"/jobs/{job_id}/savedmodel", params={"format": "tar"})
    assert tar.status_code == 200, tar.text
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        archive.extractall(tmp_path, filter="data")
    loaded = tf.saved_model.load(str(tmp_path / version))
    assert "serving_default" in loaded.signatures
    mission.assert_nothing_left_behind(job_id)
