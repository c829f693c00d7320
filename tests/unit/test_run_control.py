"""RunControl's interruption of a job's thread (lands while armed, never after disarm) and
the heartbeat's memory watchdog: it reads RSS, interrupts after its grace, gives up at its
bound."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from k2e.jobs.leases import Lease
from worker.heartbeat import Heartbeat, JobInterrupted, RunControl, job_rss_bytes, rss_bytes


def test_an_armed_thread_is_interrupted_in_python_code_and_check_raises_on_cancel() -> None:
    control = RunControl()
    caught = threading.Event()

    def job() -> None:
        control.arm()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # a long load, in Python bytecode
                sum(range(1000))
        except JobInterrupted:
            caught.set()
        finally:
            control.disarm()

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(0.1)
    assert control.interrupt()
    thread.join(5)
    assert caught.is_set()
    assert not control.interrupt(), "disarmed: nothing to interrupt"
    control.check()  # nothing requested: no raise
    control.cancel_requested.set()
    with pytest.raises(JobInterrupted):
        control.check()


def test_timeouts_stop_training_only_and_rss_is_read() -> None:
    control = RunControl(deadline=time.monotonic() - 1)
    assert control.should_stop()
    assert not control.must_stop()
    control.out_of_memory.set()
    assert control.must_stop()
    rss = rss_bytes()
    assert rss is None or rss > 1024**2


def test_rss_is_this_process_resident_set() -> None:
    """rss_bytes reads VmRSS: it agrees with the resident pages /proc/self/statm counts,
    and grows by what the process touches."""
    pytest.importorskip("resource")
    page = os.sysconf("SC_PAGE_SIZE")

    def statm() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before = rss_bytes()
    assert before is not None
    assert abs(before - statm()) < 1024**2
    held = bytearray(b"\x01") * (64 * 1024**2)  # written: resident
    grown = rss_bytes()
    assert grown is not None
    assert grown - before > 48 * 1024**2
    assert abs(grown - statm()) < 1024**2
    del held


class _LiveLease:
    """A store whose lease is always renewed: only memory can stop the job here."""

    def renew_lease(self, job_id: str, owner: str, lease_s: float) -> Lease:
        return Lease("running")


def test_the_watchdog_samples_memory_and_leaves_a_job_under_its_bound_alone() -> None:
    control = RunControl()
    rss = job_rss_bytes()  # what it samples: this process and the ones it started
    assert rss is not None
    watchdog = Heartbeat(
        _LiveLease(),  # type: ignore[arg-type]
        "job",
        "owner",
        lease_s=30,
        interval=10,
        control=control,
        memory_bytes=4 * rss,
        sample_s=0.02,
        grace_s=0.1,
    )
    with watchdog:
        time.sleep(0.5)
    assert not control.out_of_memory.is_set()
    assert not control.must_stop()
    assert 0.5 * rss < control.peak_rss < 2 * rss


# A job thread stuck in Python code under a watchdog whose memory bound the process is
# already past: by ``ratio`` times. Prints what happens, as JSON lines with the seconds
# since the watchdog started; the watchdog ends the process with SIGKILL when it gives up.
WATCHED_JOB = """
import json, sys, threading, time
from k2e.jobs.leases import Lease
from worker.heartbeat import Heartbeat, JobInterrupted, RunControl, rss_bytes

ratio, grace = float(sys.argv[1]), float(sys.argv[2])

class LiveLease:
    def renew_lease(self, job_id, owner, lease_s):
        return Lease("running")

def say(kind, **data):
    print(json.dumps({"kind": kind, "t": time.monotonic() - started, **data}), flush=True)

control = RunControl()

def job():
    control.arm()
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            while time.monotonic() < end:
                sum(range(1000))
        except JobInterrupted:
            say("interrupted", out_of_memory=control.out_of_memory.is_set())
    control.disarm()

bound = int(rss_bytes() / ratio)
watchdog = Heartbeat(
    LiveLease(), "job", "owner", lease_s=30, interval=10, control=control,
    memory_bytes=bound, sample_s=0.05, grace_s=grace,
    on_out_of_memory=lambda rss: say("recorded", rss=rss, bound=bound),
)
started = time.monotonic()
with watchdog:
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
say("finished")
"""


def _watched_job(ratio: float, grace: float) -> tuple[int, list[dict]]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", WATCHED_JOB, str(ratio), str(grace)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=root,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines


def test_a_job_over_its_bound_is_interrupted_after_the_grace_then_given_up() -> None:
    """1.1 times the bound: the watchdog sets out_of_memory at once, interrupts the job's
    thread once the grace has passed (not before), and, the job still not stopping and
    the memory still over, records the job's end and kills the process at twice the grace."""
    grace = 1.0
    code, lines = _watched_job(1.1, grace)
    assert code == -signal.SIGKILL, lines
    interrupts = [line for line in lines if line["kind"] == "interrupted"]
    [recorded] = [line for line in lines if line["kind"] == "recorded"]
    assert interrupts, lines
    assert all(line["out_of_memory"] for line in interrupts)
    assert interrupts[0]["t"] >= grace
    # Interrupted again at most once per grace, not at every sample.
    times = [line["t"] for line in interrupts]
    assert all(b - a >= grace / 2 for a, b in itertools.pairwise(times)), times
    assert recorded["rss"] > recorded["bound"]
    assert recorded["t"] >= 2 * grace
    assert not [line for line in lines if line["kind"] == "finished"]


def test_a_job_far_over_its_bound_is_given_up_without_waiting_for_the_grace() -> None:
    """Past 1.25 times the bound (TensorFlow allocating in C++, where no interrupt lands)
    the watchdog gives up at its first sample: no interrupt, no grace."""
    code, lines = _watched_job(2.0, 30.0)
    assert code == -signal.SIGKILL, lines
    assert [line["kind"] for line in lines] == ["recorded"]
    assert lines[0]["t"] < 30.0
