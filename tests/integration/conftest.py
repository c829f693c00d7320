"""Integration fixtures: a real Redis, a real Celery worker process, real TensorFlow.

One worker process serves the whole session, as in production; each test talks
to the API in-process through HTTP (FastAPI's TestClient).

The session worker consumes a Redis of its own (``integration_redis``), never the
one the unit tests submit to (``redis_server`` in tests/conftest.py): their jobs are
meant to stay queued, and live in job stores this worker does not read.
"""

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.settings import Settings
from launcher.embedded_redis import EmbeddedRedis
from launcher.stack import worker_command
from service.main import create_app
from tests.auth import admin_client

READY_LINE = "worker process ready: TensorFlow loaded"
# What a worker logs when a task names a job its store does not hold (JobStore.get).
UNKNOWN_JOB = re.compile(r"no job with id '([^']+)'")
ROOT = Path(__file__).resolve().parents[2]


TUNABLES = (
    "lease_s",
    "heartbeat_s",
    "reconcile_interval_s",
    "visibility_timeout_s",
    "max_attempts",
    "timeout_grace_s",
    "job_memory_bytes",
    "job_memory_sample_s",
    "job_stop_grace_s",
    "max_inflation_ratio",
)


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(settings.data_dir),
        REDIS_URL=settings.broker_url,
        DATABASE_URL=settings.sqlalchemy_url,
        PYTHONUNBUFFERED="1",
    )
    env.update({f"K2E_{name.upper()}": str(getattr(settings, name)) for name in TUNABLES})
    return env


class WorkerProcess:
    """``celery -A worker.app worker`` as a child process, its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, queues: str = "cpu,gpu") -> None:
        self.settings = settings
        self.log_path = log_path
        self.queues = queues
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> "WorkerProcess":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*worker_command(self.queues), "--without-mingle", "--without-gossip"],
            cwd=ROOT,
            env=worker_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a crash test kills it whole
        )
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.2)
        return self

    def kill_hard(self) -> None:
        """SIGKILL the main process and its pool children at once: a machine dying."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def integration_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The session worker's broker: a redis-server of its own, so that it never sees
    the jobs the unit tests leave queued on the shared ``redis_server``."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-integration"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(integration_redis: EmbeddedRedis) -> EmbeddedRedis:
    """Under tests/integration, ``redis_server`` is the broker the session worker consumes."""
    return integration_redis


@pytest.fixture(scope="session")
def settings(integration_redis: EmbeddedRedis, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, redis_url=integration_redis.url, database_url=None)


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = WorkerProcess(settings, log_path).start()
    yield process
    process.stop()
    print(f"worker log: {log_path}")
    # Every task this worker received named a job of the integration store: nothing
    # submitted elsewhere (the unit tests' apps) reached it.
    strangers = sorted(set(UNKNOWN_JOB.findall(process.log)))
    assert not strangers, f"the session worker received jobs it does not know: {strangers}"


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(settings)) as test_client:
        yield test_client


def wait_for_job(client: TestClient, job_id: str, timeout: float = 300) -> dict:
    """Poll GET /jobs/{id} until the job reaches a terminal state."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.25)
