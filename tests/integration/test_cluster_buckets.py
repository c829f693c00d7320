"""Cluster jobs (ConvertRequest.distribution) on bucket storage: three real Celery workers,
each its own node name and its OWN data folder (no folder shared: each could be another
machine), a real S3 server (SeaweedFS), PostgreSQL and Redis shared.

Each member reads the job's inputs from the bucket into its node's cache; the chief
writes every checkpoint itself and publishes it to the bucket, where a new placement of
the gang (after a member is killed) resumes from, and an evaluator follows them."""

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from k2e.blobstore_s3 import S3BlobStore
from k2e.db import make_engine
from k2e.jobs.gangs import GangStore
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.bucket_store import s3_store
from tests.support.fault_deployment import FAST_RECOVERY
from tests.support.job_polling import wait_for_job
from tests.support.postgres import fresh_postgres_database
from tests.support.s3_server import S3Server
from tests.support.uploads import upload
from tests.support.worker_process import WorkerProcess

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models as models  # noqa: E402  (needs TensorFlow)
from worker.cluster_saver import save_devices  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER = {"workers": 2, "parameter_servers": 1}
CHIEF = "/job:chief/task:0"
_RESTORED = re.compile(r"restored model\.ckpt-([0-9]+) from tenants/default/jobs/(\S+) ")


@dataclass
class Nodes:
    client: TestClient
    store: S3BlobStore
    database_url: str
    model: str
    dataset: str
    workers: list[WorkerProcess] = field(default_factory=list)
    data_dirs: list[Path] = field(default_factory=list)

    def submit(self, max_steps: int, distribution: dict = CLUSTER) -> str:
        spec = {
            "keras_model_path": self.model,
            "config": {"save_checkpoints_steps": 100, "log_step_count_steps": 50},
            "train": {"dataset": self.dataset, "max_steps": max_steps, "batch_size": 64},
            "eval": {"dataset": self.dataset, "steps": 2},
            "distribution": distribution,
        }
        response = self.client.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def bucket_names(self, job_id: str) -> set[str]:
        key = f"tenants/default/jobs/{job_id}"
        return {info.key[len(key) + 1 :] for info in self.store.list(f"{key}/")}

    def logs(self) -> str:
        return "\n".join(worker.log for worker in self.workers)

    def members_alive(self) -> list[psutil.Process]:
        """The member TensorFlow processes these nodes run (only theirs: another
        deployment's on the machine are not this test's)."""
        ours = {w.process.pid for w in self.workers if w.process is not None}
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if "worker.member_process" not in " ".join(process.info["cmdline"] or []):
                continue
            try:
                if ours & {p.pid for p in process.parents()}:
                    found.append(process)
            except psutil.NoSuchProcess:
                continue
        return found

    def assert_scratch_empty(self, timeout: float = 20) -> None:
        """No node keeps a folder of the job: a member's task removes its own once its
        process has ended, which may be a moment after the job ended."""

        def left() -> list[Path]:
            return [p for d in self.data_dirs for p in (d / "scratch").iterdir()]

        deadline = time.monotonic() + timeout
        while left() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left() == []

    def assert_no_member_left(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.members_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.members_alive(), [p.cmdline() for p in self.members_alive()]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("cluster-buckets")
    server = S3Server(root / "seaweedfs")
    redis = EmbeddedRedis(root / "redis", appendonly=False, die_with_parent=True)
    with fresh_postgres_database() as url, pytest.MonkeyPatch.context() as patch:
        server.start()
        redis.start()
        found: Nodes | None = None
        try:
            for name, value in server.env("k2e").items():
                patch.setenv(name, value)
            api = Settings(data_dir=root / "api", redis_url=redis.url, database_url=url)
            assert api.storage_url == "s3://k2e/k2e"
            with admin_client(create_app(api)) as client:
                h5 = models.save_h5(models.seed_multi_io_model(), root / "seed.h5")
                model = upload(client, "/models", "seed.h5", h5.read_bytes())["id"]
                data = models.npz_bytes(models.seed_multi_io_data(n=512))
                dataset = upload(client, "/datasets", "d.npz", data)["id"]
                found = Nodes(client, s3_store(server, "k2e"), url, model, dataset)
                for n in range(3):
                    settings = api.model_copy(
                        update={"data_dir": root / f"node{n}", **FAST_RECOVERY}
                    )
                    process = WorkerProcess(settings, root / f"node{n}.log", "cpu,gpu")
                    process.node_name = f"member{n}@%h"
                    found.workers.append(process)
                    found.data_dirs.append(settings.data_dir)
                    process.start()
                yield found
        finally:
            for process in found.workers if found is not None else []:
                process.stop()
                print(f"worker log: {process.log_path}")
            redis.stop()
            server.stop()


def gang_of(nodes: Nodes, job_id: str) -> int | None:
    return GangStore(make_engine(nodes.database_url)).gang_of(job_id)


def test_a_cluster_on_bucket_storage_trains_to_max_steps_and_publishes(nodes: Nodes) -> None:
    # Long enough that the second worker (train_and_evaluate starts a non-chief worker 5 s
    # late) trains a share of the steps, as in test_clusters.py: with 400 steps the chief
    # was seen to finish the gang's part before the worker's first step.
    steps = 3000
    job_id = nodes.submit(steps)
    done = wait_for_job(nodes.client, job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], nodes.logs()[-4000:])
    assert done["progress"]["global_step"] == steps
    listed = [c["step"] for c in nodes.client.get(f"/jobs/{job_id}/checkpoints").json()]
    assert max(listed) == steps
    assert done["export"]["verified"]
    names = nodes.bucket_names(job_id)
    assert f"model.ckpt-{steps}.index" in names
    assert any(n.startswith("export/") and n.endswith("/saved_model.pb") for n in names)
    download = nodes.client.get(f"/jobs/{job_id}/savedmodel")
    assert download.status_code == 200, download.text

    lines = _log_lines(nodes, job_id)
    for label in ("[chief:0]", "[worker:0]", "[ps:0]"):
        assert any(line.startswith(label) for line in lines), label
    # The second worker trained too, on a node without the chief's model_dir (its Keras
    # weights): its own `loss = ..., step = ...` lines.
    assert any(line.startswith("[worker:0]") and "loss = " in line for line in lines)

    # A checkpoint the gang saved: the chief's Celery process trains the last few steps
    # alone, and saves again at the gang's last step as it starts (the newest but one);
    # the one before that is the chief's TensorFlow's. Its meta graph's Saver, the one it
    # was saved with, has every save op on the chief, none on the parameter server.
    assert len(listed) >= 3, listed
    gang_saved = sorted(listed)[-3]
    meta = tf.compat.v1.MetaGraphDef()
    key = f"tenants/default/jobs/{job_id}/model.ckpt-{gang_saved}.meta"
    meta.ParseFromString(nodes.store.get_bytes(key))
    devices = save_devices(meta.graph_def, meta.saver_def)
    print(f"model.ckpt-{gang_saved}: save ops on {devices}")
    assert devices.get("SaveV2")
    assert all(d.startswith(CHIEF) for found in devices.values() for d in found), devices
    nodes.assert_no_member_left()
    nodes.assert_scratch_empty()
    for data_dir in nodes.data_dirs:  # no node kept the job's files but its cached inputs
        assert not (data_dir / "storage" / "tenants" / "default" / "jobs").exists()


def test_a_killed_member_resumes_from_the_buckets_checkpoint(nodes: Nodes) -> None:
    """SIGKILL of the Celery pool process that holds the chief (its TensorFlow process
    dies with it, and its node's scratch with the checkpoints it wrote): the gang is
    placed again, its chief restores the bucket's newest checkpoint, and the job ends at
    exactly max_steps."""
    steps = 2000
    job_id = nodes.submit(steps)
    deadline = time.monotonic() + 240
    while max([0, *_bucket_steps(nodes, job_id)]) < 300:
        job = nodes.client.get(f"/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, "no checkpoint of step 300 in the bucket"
        time.sleep(0.2)
    chief = f'"job_id": "{job_id}", "role": "chief"'
    held = [p for p in nodes.members_alive() if chief in " ".join(p.cmdline())]
    assert held, "the chief's TensorFlow process"
    celery_process = held[0].parent()
    assert celery_process is not None
    os.kill(celery_process.pid, signal.SIGKILL)

    done = wait_for_job(nodes.client, job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], nodes.logs()[-4000:])
    assert (gang_of(nodes, job_id) or 0) >= 2  # placed again at least once
    listed = [c["step"] for c in nodes.client.get(f"/jobs/{job_id}/checkpoints").json()]
    assert max(listed) == steps
    assert done["progress"]["global_step"] == steps
    restored = [int(m[1]) for m in _RESTORED.finditer(nodes.logs()) if m[2] == job_id]
    assert restored, "the new placement's chief restored the bucket's checkpoints"
    assert max(restored) >= 300, restored
    nodes.assert_no_member_left()


def _bucket_steps(nodes: Nodes, job_id: str) -> list[int]:
    return [
        int(n[len("model.ckpt-") : -len(".index")])
        for n in nodes.bucket_names(job_id)
        if n.startswith("model.ckpt-") and n.endswith(".index")
    ]


def test_the_evaluator_follows_the_chiefs_checkpoints_through_the_bucket(nodes: Nodes) -> None:
    """A chief, a parameter server and an evaluator: the evaluator, on a node sharing no
    folder with the chief, copies each checkpoint the chief publishes and evaluates it."""
    steps = 1000
    job_id = nodes.submit(
        steps, distribution={"workers": 1, "parameter_servers": 1, "evaluator": True}
    )
    done = wait_for_job(nodes.client, job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], nodes.logs()[-4000:])
    assert done["progress"]["global_step"] == steps
    lines = [line for line in _log_lines(nodes, job_id) if line.startswith("[evaluator:0]")]
    copied = [line for line in lines if "copied from the bucket" in line]
    assert copied, lines[-20:]
    assert any("Saving dict for global step" in line for line in lines), lines[-20:]
    nodes.assert_no_member_left()
    nodes.assert_scratch_empty()


def _log_lines(nodes: Nodes, job_id: str) -> list[str]:
    page = nodes.client.get(f"/jobs/{job_id}/logs?limit=5000").json()["items"]
    return [e["message"] for e in page if e["kind"] == "log"]
