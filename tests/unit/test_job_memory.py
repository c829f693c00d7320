"""What the job memory bound counts: the worker process and every process it started (a
cluster member's TensorFlow runs in a child process of its Celery process), read from
/proc."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkout import ROOT

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


# Run in a fresh process: the test process has children of its own (the suite's servers).
MEASURE = """
import json, os, signal, subprocess, sys, time
from worker.heartbeat import job_rss_bytes, rss_bytes
holder = sys.argv[1]
alone = job_rss_bytes() - rss_bytes()
child = subprocess.Popen([sys.executable, "-c", holder, "96", "1", holder],
                         stdout=subprocess.PIPE, text=True, process_group=0)
assert child.stdout.readline().strip() == "ready"
held = job_rss_bytes() - rss_bytes()
os.killpg(child.pid, signal.SIGKILL)  # the grandchild too
child.wait()
time.sleep(0.2)  # the grandchild, reparented, is reaped by init
after = job_rss_bytes() - rss_bytes()
print(json.dumps({"alone": alone, "held": held, "after": after}))
"""


def test_the_job_memory_counts_the_processes_it_started() -> None:
    """A child and a grandchild holding 96 MiB each count with the process; once they
    are gone, nothing of them does."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, HOLDER],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["alone"] == 0  # no child yet
    assert 2 * 90 * 1024**2 < found["held"] < 2 * 140 * 1024**2, found
    assert found["after"] == 0, found
