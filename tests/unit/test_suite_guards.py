"""The suite's own guards (tests/conftest.py): under CI a skipped test fails the run, and a
run fails when a process it started outlives it. Each is checked on a tiny pytest run of
its own, in a subprocess, as CI would run it."""

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

SKIPPING = """
import pytest

def test_runs():
    assert True

def test_skips():
    pytest.skip("no frobnicator on this machine")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

@pytest.mark.deselected_here
def test_deselected():
    pytest.skip("never runs")
"""

LEAKING = """
import subprocess, sys, time
from pathlib import Path

def test_leaks_a_process(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    Path({pid_file!r}).write_text(str(child.pid))

def test_runs():
    assert True
"""


def _pytest(folder: Path, plugins: list[str], ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the tiny run needs none of them
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    for plugin in plugins:
        command += ["-p", plugin]
    command += ["-m", "not deselected_here", "-W", "ignore::pytest.PytestUnknownMarkWarning"]
    return subprocess.run(
        [*command, str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("ci", "code"), [("true", 1), ("1", 1), (None, 0), ("false", 0)])
def test_a_skipped_test_fails_the_run_under_ci(tmp_path: Path, ci: str | None, code: int) -> None:
    (tmp_path / "test_tiny.py").write_text(SKIPPING)
    done = _pytest(tmp_path, ["tests.support.ci_skips"], ci)
    assert done.returncode == code, done.stdout + done.stderr
    assert "1 passed, 1 skipped, 1 deselected, 1 xfailed" in done.stdout, done.stdout
    if code:
        assert "CI: 1 skipped, which fails the run" in done.stdout, done.stdout
        assert "test_tiny.py::test_skips: no frobnicator on this machine" in done.stdout


def test_a_module_skipped_at_import_fails_the_run_under_ci(tmp_path: Path) -> None:
    (tmp_path / "test_needs.py").write_text(
        'import pytest\nnope = pytest.importorskip("k2e_no_such_module")\ndef test_x():\n    pass\n'
    )
    done = _pytest(tmp_path, ["tests.support.ci_skips"], "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test_needs.py: could not import 'k2e_no_such_module'" in done.stdout, done.stdout


def test_a_process_that_outlives_the_run_fails_it_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    (tmp_path / "test_leak.py").write_text(LEAKING.format(pid_file=str(pid_file)))
    (tmp_path / "conftest.py").write_text(
        "from tests.support import child_processes\n"
        "from tests.conftest import pytest_sessionfinish  # noqa: F401\n"
        "child_processes.record_spawns()\n"
    )
    done = _pytest(tmp_path, [], None)
    leaked = int(pid_file.read_text())
    try:
        assert done.returncode == 1, done.stdout + done.stderr
        assert "1 process(es) outlived their tests" in done.stdout, done.stdout
        assert f"killed pid {leaked}:" in done.stdout, done.stdout
        assert "time.sleep(600)" in done.stdout
        gone = not psutil.pid_exists(leaked) or (
            psutil.Process(leaked).status() == psutil.STATUS_ZOMBIE
        )
        assert gone, f"pid {leaked} is still running"
    finally:
        if psutil.pid_exists(leaked):
            psutil.Process(leaked).kill()
