"""Shared fixtures: real servers, started by the suite itself."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.embedded_redis import EmbeddedRedis
from tests.auth import TEST_ADMIN_KEY

# Every app the suite builds, and every API and worker process it starts, provisions the
# suite's admin key (tests.auth.admin_client signs requests with it).
os.environ.setdefault("K2E_ADMIN_KEY", TEST_ADMIN_KEY)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port, private to this test session, for the tests
    that run no worker: the jobs they submit stay queued here.

    No worker ever consumes this server: the integration tests' session worker has its
    own (``integration_redis`` in tests/integration/conftest.py), and each fault test
    starts one of its own.
    """
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


def postgres_url() -> str:
    return os.environ.get(
        "K2E_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k2e-data")
