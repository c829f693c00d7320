"""A real Celery worker process, started as a deployment starts one, its log in a file."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from k2e.launcher.stack import worker_command
from k2e.settings import Settings
from tests.support.checkout import ROOT
from tests.support.child_processes import die_with_the_suite, stop_group

READY_LINE = "worker process ready: TensorFlow loaded"
# What a worker logs when a task names a job its store does not hold (JobStore.get).
UNKNOWN_JOB = re.compile(r"no job with id '([^']+)'")


TUNABLES = (
    "lease_s",
    "heartbeat_s",
    "control_poll_s",
    "reconcile_interval_s",
    "visibility_timeout_s",
    "max_attempts",
    "timeout_grace_s",
    "job_memory_bytes",
    "job_memory_sample_s",
    "job_stop_grace_s",
    "max_inflation_ratio",
    "webhook_allow_cidrs",
    "webhook_timeout_s",
    "webhook_retry_base_s",
    "webhook_retry_max_s",
    "webhook_poll_s",
    "worker_heartbeat_s",
    "log_format",
)


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(
        os.environ,
        K2E_DATA_DIR=str(settings.data_dir),
        REDIS_URL=settings.broker_url,
        DATABASE_URL=settings.sqlalchemy_url,
        PYTHONUNBUFFERED="1",
    )
    env.update({f"K2E_{name.upper()}": str(getattr(settings, name)) for name in TUNABLES})
    if settings.trace_file is not None:
        env["K2E_TRACE_FILE"] = str(settings.trace_file)
    return env


class WorkerProcess:
    """``celery -A worker.celery_app worker`` as a child process, its log in a file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        queues: str = "cpu,gpu",
        node_name: str | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.queues = queues
        # Celery's node name (`-n`): several workers on one machine each need their own.
        self.node_name = node_name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> "WorkerProcess":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                die_with_the_suite(
                    [
                        *worker_command(self.queues),
                        "--without-mingle",
                        "--without-gossip",
                        *(["-n", self.node_name] if self.node_name else []),
                    ]
                ),
                cwd=ROOT,
                env=worker_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a crash test kills it whole
            )
        try:
            deadline = time.monotonic() + timeout
            while READY_LINE not in self.log_path.read_text(errors="replace"):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("worker did not start:\n" + self.log[-3000:])
                time.sleep(0.2)
        except BaseException:
            self.stop()  # a worker that failed to start leaves no process behind
            raise
        return self

    def kill_hard(self) -> None:
        """SIGKILL the main process and its pool children at once: a machine dying."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL: the main process and its pool children."""
        if self.process is not None:
            stop_group(self.process, grace_s=30)
