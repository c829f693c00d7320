"""What the job memory bound counts: the worker process and every process it started (a
cluster member's TensorFlow runs in a child process of its Celery process), read from
/proc."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.heartbeat import job_rss_bytes, rss_bytes

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")

# A child that holds ``mb`` MiB written (resident) and, with ``nest``, a grandchild that
# does the same; it prints "ready" once all of it is resident.
HOLDER = """
import subprocess, sys, time
mb, nest = int(sys.argv[1]), sys.argv[2] == "1"
held = bytearray(b"\\x01") * (mb * 1024 * 1024)
if nest:
    inner = subprocess.Popen([sys.executable, "-c", sys.argv[3], str(mb), "0", ""],
                             stdout=subprocess.PIPE, text=True)
    assert inner.stdout.readline().strip() == "ready"
print("ready", flush=True)
time.sleep(60)
"""


def _hold(mb: int, nest: bool) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(mb), "1" if nest else "0", HOLDER],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def _stop(child: subprocess.Popen[str]) -> None:
    os.killpg(child.pid, signal.SIGKILL)  # the grandchild too
    child.wait()


def test_the_job_memory_counts_the_processes_it_started() -> None:
    alone = job_rss_bytes()
    own = rss_bytes()
    assert alone is not None
    assert own is not None
    assert abs(alone - own) < 16 * 1024**2  # no child yet (pytest starts none)
    child = _hold(96, nest=True)  # a child and a grandchild, 96 MiB each
    try:
        with_children = job_rss_bytes()
        assert with_children is not None
        grown = with_children - (rss_bytes() or 0)
        assert 2 * 90 * 1024**2 < grown < 2 * 140 * 1024**2, grown
    finally:
        _stop(child)
    time.sleep(0.2)  # the grandchild, reparented, is reaped by init
    after = job_rss_bytes()
    assert after is not None
    assert after - (rss_bytes() or 0) < 16 * 1024**2  # reaped: counted no more
