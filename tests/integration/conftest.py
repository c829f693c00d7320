"""Integration fixtures: a real Redis, a real Celery worker process, real TensorFlow.

One worker process serves the whole session, as in production; each test talks
to the API in-process through HTTP (FastAPI's TestClient).

The session worker consumes a Redis of its own (``integration_redis``), never the
one the unit tests submit to (``redis_server`` in tests/conftest.py): their jobs are
meant to stay queued, and live in job stores this worker does not read.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client
from tests.support.postgres import fresh_postgres_database
from tests.support.worker_process import UNKNOWN_JOB, WorkerProcess


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
