"""A deployment of its own for a fault test: Redis (with AOF, so it can be killed and
restarted), a data folder and job store, worker processes, an API client, and the seed
model and data uploaded."""

import time
from pathlib import Path

import redis

from k2e.jobs.job_store import JobStore
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support import keras_models
from tests.support.api_keys import admin_client, admin_files
from tests.support.worker_process import WorkerProcess

# Short leases and a fast reconciler, so that recovery happens within seconds.
FAST_RECOVERY = {"lease_s": 3.0, "heartbeat_s": 0.5, "reconcile_interval_s": 1.0}


class Env:
    """One isolated deployment: Redis, data folder, API client, uploaded model and data."""

    def __init__(self, root: Path, database_url: str | None = None, **tunables: float) -> None:
        self.root = root
        self.redis = EmbeddedRedis(root / "redis", appendonly=True, die_with_parent=True).start()
        self.settings = Settings(
            data_dir=root / "data",
            redis_url=self.redis.url,
            database_url=database_url,
            **tunables,
        )
        self.workers: list[WorkerProcess] = []
        self._client_cm = admin_client(create_app(self.settings))
        try:
            self.client = self._client_cm.__enter__()
            h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), root / "seed.h5")
            self.model = self.upload("/models", "seed.h5", h5.read_bytes())
            self.data = self.upload(
                "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data(n=512))
            )
        except BaseException:
            self.close()
            raise

    def upload(self, path: str, name: str, content: bytes) -> str:
        response = self.client.post(path, files={"file": (name, content)})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def worker(
        self, queues: str = "cpu,gpu", node_name: str | None = None, **own: object
    ) -> WorkerProcess:
        """A worker process; ``own`` settings (tunables) for it alone."""
        settings = self.settings.model_copy(update=own) if own else self.settings
        process = WorkerProcess(
            settings, self.root / f"worker{len(self.workers)}.log", queues, node_name
        ).start()
        self.workers.append(process)
        return process

    def submit(self, max_steps: int, **extra) -> dict:
        spec = {
            "keras_model_path": self.model,
            "config": {"save_checkpoints_steps": 200, "log_step_count_steps": 50},
            "train": {"dataset": self.data, "max_steps": max_steps, "batch_size": 64},
            "eval": {"dataset": self.data, "steps": 2},
            **extra,
        }
        response = self.client.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/jobs/{job_id}").json()

    def wait_step(self, job_id: str, step: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["progress"]["global_step"] >= step or job["status"] not in (
                "queued",
                "running",
            ):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached step {step}")

    def model_dir(self, job: dict) -> Path:
        """The job's model_dir on disk (the API shows it relative to the tenant's folder)."""
        return admin_files(self.settings.storage_root) / job["model_dir"]

    def exports(self, job: dict) -> list[str]:
        export_root = self.model_dir(job) / "export"
        return sorted(p.name for p in export_root.iterdir()) if export_root.is_dir() else []

    def running_events(self, job_id: str) -> int:
        events = JobStore(self.settings.sqlalchemy_url).events(job_id)
        return sum(1 for e in events if e["kind"] == "running")

    def events(self, job_id: str) -> list[dict]:
        """Every event of GET /jobs/{id}/logs (transitions and log lines), oldest first."""
        items: list[dict] = []
        while True:
            page = self.client.get(
                f"/jobs/{job_id}/logs", params={"since": items[-1]["seq"] if items else 0}
            )
            assert page.status_code == 200, page.text
            if not page.json()["items"]:
                return items
            items += page.json()["items"]

    def transitions(self, job_id: str) -> list[str]:
        return [e["kind"] for e in self.events(job_id) if e["kind"] != "log"]

    def owners(self, job_id: str) -> list[str]:
        """The lease owner (host:pid:nonce) of each attempt, from its `running` event."""
        prefix = "started by "
        running = [e["message"] for e in self.events(job_id) if e["kind"] == "running"]
        assert all(m.startswith(prefix) for m in running), running
        return [m[len(prefix) :] for m in running]

    def broker_queue(self, queue: str) -> list[bytes]:
        """The messages waiting in a Celery queue (a Redis list) of this deployment."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            return list(client.lrange(queue, 0, -1))
        finally:
            client.close()

    def kill_redis_hard(self) -> None:
        """SIGKILL redis-server: no shutdown, no final AOF rewrite; only what it had
        already appended to its AOF survives."""
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait()
        self.redis.process = None

    def close(self) -> None:
        """Stop every process this deployment started, whatever fails on the way."""
        try:
            for process in self.workers:
                process.stop()
            self._client_cm.__exit__(None, None, None)
        finally:
            self.redis.stop()
