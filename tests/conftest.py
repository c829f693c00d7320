"""Shared fixtures: real servers, started by the suite itself."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy

from k2e.launcher.embedded_redis import EmbeddedRedis
from tests import ci_skips, processes
from tests.auth import TEST_ADMIN_KEY
from tests.ci_skips import pytest_collectreport, pytest_runtest_logreport
from tests.ci_skips import pytest_sessionfinish as fail_on_skips_in_ci

__all__ = ["pytest_collectreport", "pytest_runtest_logreport"]

# Every app the suite builds, and every API and worker process it starts, provisions the
# suite's admin key (tests.auth.admin_client signs requests with it).
os.environ.setdefault("K2E_ADMIN_KEY", TEST_ADMIN_KEY)
processes.record_spawns()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run fails when a process it started outlived it (after killing it), and under
    CI when a test skipped (tests/ci_skips.py)."""
    survivors = processes.survivors()
    if survivors:
        listed = [processes.describe(p) for p in survivors]
        processes.kill_all(survivors)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("=", f"{len(listed)} process(es) outlived their tests", red=True)
            for line in listed:
                reporter.write_line(f"killed {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    fail_on_skips_in_ci(session, exitstatus)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port, private to this test session, for the tests
    that run no worker: the jobs they submit stay queued here.

    No worker ever consumes this server: the integration tests' session worker has its
    own (``integration_redis`` in tests/integration/conftest.py), and each fault test
    starts one of its own.
    """
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis"), appendonly=False, die_with_parent=True
    ).start()
    try:
        yield server
    finally:
        server.stop()


def postgres_url() -> str:
    return os.environ.get(
        "K2E_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server (``postgres_url()``'s), dropped
    afterwards: runs that use it never see another run's rows. Unreachable, the test
    skips, except under CI (which has PostgreSQL: there it fails)."""
    server = sqlalchemy.engine.make_url(postgres_url())
    name = f"k2e_test_{uuid.uuid4().hex[:16]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        if ci_skips.in_ci():
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k2e-data")
