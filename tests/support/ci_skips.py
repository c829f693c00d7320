"""Under CI, a skipped test fails the run: a test that skips itself proves nothing, and
CI is where every test's prerequisites (TensorFlow, network namespaces, Chromium,
PostgreSQL) are installed. Deselection (``-m 'not large'``) is not a skip; an expected
failure (xfail) is not either.

Hooks for tests/conftest.py (which imports them); a pytest run elsewhere loads them with
``-p tests.support.ci_skips``.
"""

import os

import pytest

_skipped: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _record(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _skipped[report.nodeid or "."] = reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)  # a module-level importorskip skips its whole module


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not (_skipped and in_ci()):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_sep("=", f"CI: {len(_skipped)} skipped, which fails the run", red=True)
        for nodeid, reason in sorted(_skipped.items()):
            reporter.write_line(f"SKIPPED {nodeid}: {reason}")
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
