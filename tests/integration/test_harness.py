"""The integration fixtures stop what they start on every path, failures included."""

from pathlib import Path

import psutil
import pytest

from k2e.settings import Settings
from tests.support.worker_process import WorkerProcess

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_that_does_not_start_in_time_leaves_no_process(
    tmp_path: Path, redis_server
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    with pytest.raises(RuntimeError, match="worker did not start"):
        worker.start(timeout=0.5)  # TensorFlow alone takes longer to load
    assert worker.process is not None
    assert _gone(worker.process.pid), "the worker outlived its failed start"
