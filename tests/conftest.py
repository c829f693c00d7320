"""Shared fixtures: real servers, started by the suite itself."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2e.launcher.embedded_redis import EmbeddedRedis
from tests.support import child_processes
from tests.support.api_keys import TEST_ADMIN_KEY
from tests.support.ci_skips import pytest_collectreport, pytest_runtest_logreport
from tests.support.ci_skips import pytest_sessionfinish as fail_on_skips_in_ci

__all__ = ["pytest_collectreport", "pytest_runtest_logreport"]

# Every app the suite builds, and every API and worker process it starts, provisions the
# suite's admin key (tests.support.api_keys.admin_client signs requests with it).
os.environ.setdefault("K2E_ADMIN_KEY", TEST_ADMIN_KEY)
child_processes.record_spawns()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run fails when a process it started outlived it (after killing it), and under
    CI when a test skipped (tests/support/ci_skips.py)."""
    survivors = child_processes.survivors()
    if survivors:
        listed = [child_processes.describe(p) for p in survivors]
        child_processes.kill_all(survivors)
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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k2e-data")
