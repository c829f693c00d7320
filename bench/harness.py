"""Everything the benchmarks run against, started by the bench itself: an embedded Redis,
a scratch data folder, the API (uvicorn, one process) on a free port, and one real
Celery worker process (as tests/support/worker_process.py's WorkerProcess starts it)."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from k2e.jobs.job_store import JobStore
from k2e.launcher.embedded_redis import EmbeddedRedis, free_port
from k2e.launcher.stack import api_command, worker_command
from k2e.settings import Settings
from k2e.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
WORKER_READY = "worker process ready: TensorFlow loaded"
# The API provisions this admin key (K2E_ADMIN_KEY): every figure runs with authentication on.
ADMIN_KEY = "k2e_bench-admin-key-0123456789abcdef"
AUTH_HEADER = f"Authorization: Bearer {ADMIN_KEY}"


def read_rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (VmRSS is in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group a child of ours leads; SIGKILL it after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def read_thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return threads


class Stack:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the API's base URL."""

    def __init__(self, scratch: Path, logs: Path, env: dict[str, str] | None = None) -> None:
        self.scratch = scratch
        # Settings of this stack's API and worker on top of the defaults (e.g. bucket storage).
        self.extra_env = env or {}
        self.logs = logs
        self.data_dir = scratch / "data"
        self.redis = EmbeddedRedis(scratch / "redis")
        self.port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, redis_url=self.redis.url, database_url=None)

    def env(self) -> dict[str, str]:
        settings = self.settings
        return dict(
            os.environ,
            K2E_DATA_DIR=str(self.data_dir),
            K2E_ADMIN_KEY=ADMIN_KEY,
            REDIS_URL=self.redis.url,
            DATABASE_URL=settings.sqlalchemy_url,
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )

    def admin_headers(self) -> dict[str, str]:
        """The admin key the API provisioned (K2E_ADMIN_KEY, else the one it generated on
        its first start and wrote to the data folder)."""
        key = os.environ.get("K2E_ADMIN_KEY") or (self.data_dir / "admin.key").read_text()
        return {"Authorization": f"Bearer {key.strip()}"}

    def store(self) -> JobStore:
        """The API's job store, opened directly (to insert filler jobs)."""
        return JobStore(self.settings.sqlalchemy_url)

    def storage(self) -> Storage:
        return Storage(self.settings.storage_root)

    def start(self, worker: bool = True) -> "Stack":
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.api = self.spawn_api("service.main:create_app", self.port, "api.log")
        if worker:
            self.start_worker()
        self.wait_for_http(self.url, self.api, "api.log")
        return self

    def spawn_api(self, factory: str, port: int, log_name: str) -> subprocess.Popen[bytes]:
        """The launcher's API command (uvicorn, one process, access log on) with
        ``factory`` as the app: k2e's own, or the bench's probe app."""
        argv = api_command("127.0.0.1", port)
        argv[argv.index("service.main:create_app")] = factory
        return self._spawn(argv, log_name)

    def start_worker(self) -> None:
        """The launcher's worker command (`make run`'s), on the cpu queue."""
        argv = [*worker_command("cpu"), "--without-mingle", "--without-gossip"]
        self.worker = self._spawn(argv, "worker.log")
        self._wait_for_worker()

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.logs / log_name).open("ab")
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole
        )

    def wait_for_http(
        self, url: str, process: subprocess.Popen[bytes], log_name: str, timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{log_name}: the API did not start:\n" + self.log_tail(log_name)
                )
            time.sleep(0.1)

    def _wait_for_worker(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while WORKER_READY not in self.log_tail("worker.log", 1 << 20):
            assert self.worker is not None
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start:\n" + self.log_tail("worker.log"))
            time.sleep(0.2)

    def worker_pool_pid(self) -> int | None:
        """The worker's pool child (the process that imports TensorFlow and trains)."""
        assert self.worker is not None
        children = Path(f"/proc/{self.worker.pid}/task/{self.worker.pid}/children")
        pids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return pids[0] if pids else None

    def log_tail(self, name: str, size: int = 4000) -> str:
        path = self.logs / name
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def stop(self) -> None:
        for process in (self.api, self.worker):
            if process is not None:
                stop_process(process)
        self.redis.stop()

    def remove_scratch(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
