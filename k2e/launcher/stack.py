"""`make run` (``python -m k2e.launcher``): the API and ``K2E_LOCAL_WORKERS`` worker
processes (one job slot each), plus an embedded Redis when REDIS_URL is unset.

Supervises what it starts: an embedded Redis that dies is started again on the same
port from its append-only file (the workers' and API's connections find it there); the
API or any worker exiting stops the stack. On Ctrl-C or SIGTERM it stops every process it
started, killing one that has not exited STOP_GRACE_S seconds after SIGTERM.
"""

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from types import FrameType

from pydantic import ValidationError

from k2e import logs
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import get_settings

log = logging.getLogger("k2e.run")

# Seconds a child has to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


def gpu_visible() -> bool:
    """True when an NVIDIA device is visible to this node."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(f"/dev/nvidia{i}") for i in range(16))


def worker_command(queues: str, node: str | None = None) -> list[str]:
    """A worker process with one job slot; ``node``: its Celery node name, which several
    on one host need (the images run one per container and keep Celery's default)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        "1",
        *(["-n", node] if node is not None else []),
        "--loglevel",
        "INFO",
    ]


def local_node(index: int) -> str:
    """The node name of ``make run``'s worker ``index`` (from 1); Celery expands ``%h`` to
    the host name."""
    return f"k2e-{index}@%h"


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        # One log line per request cost 70-110 µs of CPU, about half of /healthz's
        # throughput (bench/store_reads.py --access-log); k2e logs jobs, uploads and keys.
        "--no-access-log",
        # Open event streams (GET /jobs/{id}/events) would hold a stop until they end.
        "--timeout-graceful-shutdown",
        "3",
    ]


def dies_with_us(command: list[str]) -> list[str]:
    """``command``, given SIGTERM if the launcher dies without stopping it (kill -9):
    Linux's parent-death signal, set by util-linux's setpriv where there is one."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def setting_errors(error: ValidationError) -> list[str]:
    """One line per setting the environment got wrong: its variable, the rule, the value."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        name = field if field.isupper() else f"K2E_{field.upper()}"  # an alias: as given
        lines.append(f"{name}={problem.get('input')!s}: {problem['msg']}")
    return lines


def main() -> int:
    try:
        settings = get_settings()
    except ValidationError as error:
        for line in setting_errors(error):
            print(f"k2e run: {line}", file=sys.stderr)
        return 2
    if settings.log_format == "json":  # the API and the worker read it too
        logs.use_json_logs()
    else:
        logging.basicConfig(level=logging.INFO, format=logs.TEXT_FORMAT)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, K2E_DATA_DIR=str(data_dir))
    redis_server = None
    if not settings.redis_url:
        redis_server = EmbeddedRedis(data_dir / "redis", die_with_parent=True).start()
        env["REDIS_URL"] = redis_server.url
        log.info("embedded Redis on %s (data in %s)", redis_server.url, data_dir / "redis")
    queues = settings.worker_queues
    if gpu_visible() and "gpu" not in queues.split(","):
        queues += ",gpu"
    store = settings.database_url.split("@")[-1] if settings.database_url else data_dir / "k2e.db"
    log.info("data in %s; job store %s", data_dir, store)

    workers = settings.local_workers
    commands = [worker_command(queues, local_node(i)) for i in range(1, workers + 1)]
    children = [
        # Each in a process group of its own: a kill reaches the worker's pool processes too.
        *(subprocess.Popen(dies_with_us(c), env=env, start_new_session=True) for c in commands),
        subprocess.Popen(
            dies_with_us(api_command(settings.api_host, settings.api_port)),
            env=env,
            start_new_session=True,
        ),
    ]
    log.info(
        "API on http://%s:%d ; %d worker process%s (one job slot each) consume %s",
        settings.api_host,
        settings.api_port,
        workers,
        "" if workers == 1 else "es",
        queues,
    )
    if settings.admin_key:
        log.info("admin API key: the one K2E_ADMIN_KEY gives")
    else:
        # The API writes it on its first start (an empty store); clients on this machine
        # read it when K2E_API_KEY is unset.
        log.info(
            "admin API key: in %s (export K2E_API_KEY=$(cat %s))", *[settings.admin_key_file] * 2
        )

    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    parent = os.getppid()
    try:
        # A signal to `make` alone does not reach us: a new parent means make is gone.
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
            stopping = stopping or os.getppid() != parent
            if not stopping and redis_server is not None:
                redis_server = keep_redis_up(redis_server)
    finally:
        stop_children(children, STOP_GRACE_S)
        for child in children:  # whatever a child left behind in its group (pool processes)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        if redis_server is not None:
            redis_server.stop()
        log.info("stopped")
    return 0 if stopping else 1


def keep_redis_up(server: EmbeddedRedis) -> EmbeddedRedis:
    """Start the embedded Redis again, on its port and from its AOF, if it has died."""
    process = server.process
    if process is not None and process.poll() is None:
        return server
    code = process.returncode if process is not None else None
    log.error("embedded Redis on port %d exited (%s); starting it again", server.port, code)
    for attempt in range(20):
        try:
            return EmbeddedRedis(server.data_dir, port=server.port, die_with_parent=True).start()
        except RuntimeError:
            log.warning("embedded Redis restart %d failed; retrying", attempt + 1)
            time.sleep(0.5)
    raise RuntimeError(f"the embedded Redis could not be restarted on port {server.port}")


def stop_children(children: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """SIGTERM each child; kill those still running ``grace_s`` seconds later."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d still running %.0f s after SIGTERM: killing it", child.pid, grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
