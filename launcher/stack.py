"""`make run` (``python -m launcher``): the API and one worker, plus an embedded Redis
when REDIS_URL is unset.

Stops every process it started on Ctrl-C or SIGTERM.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from k2e.settings import get_settings
from launcher.embedded_redis import EmbeddedRedis

log = logging.getLogger("k2e.run")


def gpu_visible() -> bool:
    """True when an NVIDIA device is visible to this node."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(f"/dev/nvidia{i}") for i in range(16))


def worker_command(queues: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
    ]


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
    ]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, K2E_DATA_DIR=str(data_dir))
    redis_server = None
    if not settings.redis_url:
        redis_server = EmbeddedRedis(data_dir / "redis").start()
        env["REDIS_URL"] = redis_server.url
        log.info("embedded Redis on %s (data in %s)", redis_server.url, data_dir / "redis")
    queues = settings.worker_queues
    if gpu_visible() and "gpu" not in queues.split(","):
        queues += ",gpu"
    store = settings.database_url.split("@")[-1] if settings.database_url else data_dir / "k2e.db"
    log.info("data in %s; job store %s", data_dir, store)

    children = [
        subprocess.Popen(worker_command(queues), env=env),
        subprocess.Popen(api_command(settings.api_host, settings.api_port), env=env),
    ]
    log.info(
        "API on http://%s:%d ; worker consumes %s", settings.api_host, settings.api_port, queues
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
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_server is not None:
            redis_server.stop()
        log.info("stopped")
    return 0 if stopping else 1
