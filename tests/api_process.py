"""A real API process, started as `make run` starts it, for tests that talk HTTP to it."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from launcher.embedded_redis import free_port
from launcher.stack import api_command

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_api(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start uvicorn on a free port with ``env``, wait until /healthz answers, yield its
    base URL and process; stop it (killed if it lingers) on the way out."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            api_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the API did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
