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
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.launcher.stack import worker_command
from k2e.settings import Settings
from service.main import create_app
from tests.auth import admin_client
from tests.conftest import fresh_postgres_database
from tests.processes import die_with_the_suite, stop_group

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
    """``celery -A worker.celery_app worker`` as a child process, its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, queues: str = "cpu,gpu") -> None:
        self.settings = settings
        self.log_path = log_path
        self.queues = queues
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> "WorkerProcess":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_the_suite(
                    [*worker_command(self.queues), "--without-mingle", "--without-gossip"]
                ),
                cwd=ROOT,
                env=worker_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a crash test kills it whole
            )
        try:
            deadline = time.monotonic() + timeout
            while READY_LINE not in self.log_path.read_text(errors="replace"):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("worker did not start:\n" + self.log[-3000:])
                time.sleep(0.2)
        except BaseException:
            self.stop()  # a worker that failed to start leaves no process behind
            raise
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
        """SIGTERM (a warm shutdown), then SIGKILL: the main process and its pool children."""
        if self.process is not None:
            stop_group(self.process, grace_s=30)


@pytest.fixture(scope="session")
def integration_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The session worker's broker: a redis-server of its own, so that it never sees
    the jobs the unit tests leave queued on the shared ``redis_server``."""
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis-integration"), appendonly=False, die_with_parent=True
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stores(*backends): run the module's tests once per job store backend "
        "(sqlite, postgres) through the `store_backend` fixture",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is None or "store_backend" not in metafunc.fixturenames:
        return
    params = [
        pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name
        for name in marker.args
    ]
    metafunc.parametrize("store_backend", params, indirect=True, scope="module")


@pytest.fixture(scope="module")
def store_backend(request: pytest.FixtureRequest) -> str:
    """The job store the module's stack uses: ``sqlite`` (the session's), or ``postgres``
    in modules marked ``stores("sqlite", "postgres")``."""
    return str(getattr(request, "param", "sqlite"))


class Deployment:
    """A stack of its own (Redis, data folder, worker, API) on a fresh PostgreSQL database,
    for a module's ``postgres`` run: as docker compose deploys k2e. Its worker and API
    start when a test first asks for them."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.redis = EmbeddedRedis(root / "redis", appendonly=False, die_with_parent=True)
        self.redis.start()
        self.settings = Settings(
            data_dir=root / "data", redis_url=self.redis.url, database_url=database_url
        )
        self._worker: WorkerProcess | None = None
        self._client: ExitStack | None = None
        self._test_client: TestClient | None = None

    def worker(self) -> WorkerProcess:
        if self._worker is None:
            self._worker = WorkerProcess(self.settings, self.root / "worker.log").start()
        return self._worker

    def client(self) -> TestClient:
        if self._test_client is None:
            self._client = ExitStack()
            self._test_client = self._client.enter_context(admin_client(create_app(self.settings)))
        return self._test_client

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
            if self._worker is not None:
                self._worker.stop()
        finally:
            self.redis.stop()
        if self._worker is not None:
            strangers = sorted(set(UNKNOWN_JOB.findall(self._worker.log)))
            assert not strangers, f"the worker received jobs it does not know: {strangers}"


@pytest.fixture(scope="module")
def deployment(
    store_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment | None]:
    """None for ``sqlite`` (the session's stack serves), else a PostgreSQL deployment."""
    if store_backend == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        stack = Deployment(tmp_path_factory.mktemp(f"{store_backend}-stack"), url)
        try:
            yield stack
        finally:
            stack.close()


@pytest.fixture(scope="module")
def redis_server(deployment: Deployment | None, integration_redis: EmbeddedRedis) -> EmbeddedRedis:
    """Under tests/integration, ``redis_server`` is the broker the stack's worker consumes."""
    return deployment.redis if deployment is not None else integration_redis


@pytest.fixture(scope="session")
def sqlite_settings(integration_redis: EmbeddedRedis, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, redis_url=integration_redis.url, database_url=None)


@pytest.fixture(scope="session")
def sqlite_worker(
    sqlite_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """The session's worker: one process serves every module on the SQLite store."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = WorkerProcess(sqlite_settings, log_path).start()
    try:
        yield process
    finally:
        process.stop()
    print(f"worker log: {log_path}")
    # Every task this worker received named a job of the integration store: nothing
    # submitted elsewhere (the unit tests' apps) reached it.
    strangers = sorted(set(UNKNOWN_JOB.findall(process.log)))
    assert not strangers, f"the session worker received jobs it does not know: {strangers}"


@pytest.fixture(scope="session")
def sqlite_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with admin_client(create_app(sqlite_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def settings(deployment: Deployment | None, request: pytest.FixtureRequest) -> Settings:
    if deployment is not None:
        return deployment.settings
    found: Settings = request.getfixturevalue("sqlite_settings")
    return found


@pytest.fixture(scope="module")
def worker(deployment: Deployment | None, request: pytest.FixtureRequest) -> WorkerProcess:
    if deployment is not None:
        return deployment.worker()
    found: WorkerProcess = request.getfixturevalue("sqlite_worker")
    return found


@pytest.fixture(scope="module")
def client(deployment: Deployment | None, request: pytest.FixtureRequest) -> TestClient:
    if deployment is not None:
        return deployment.client()
    found: TestClient = request.getfixturevalue("sqlite_client")
    return found


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
