"""RunControl's interruption of a job's thread: lands while armed, never after disarm."""

import threading
import time

import pytest

from worker.lease import JobInterrupted, RunControl, rss_bytes


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
