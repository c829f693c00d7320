"""A real API process, started as `make run` starts it, for tests that talk HTTP to it."""

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from k2e.launcher.embedded_redis import free_port
from k2e.launcher.stack import api_command
from tests.support.child_processes import die_with_the_suite, stop_group

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_api(
    env: dict[str, str],
    log_path: Path,
    prefix: tuple[str, ...] = (),
    cwd: Path = ROOT,
    python: str | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start uvicorn on a free port with ``env`` (``python`` for this interpreter, the
    command after ``prefix``, ``args`` after it, in ``cwd``), wait until /healthz answers,
    yield its base URL and process; stop it and its process group on the way out, whatever
    happened."""
    port = free_port()
    command = [*api_command("127.0.0.1", port), *args]
    if python is not None:
        command[0] = python
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            die_with_the_suite([*prefix, *command]),
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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
        stop_group(process)
