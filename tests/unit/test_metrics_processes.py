"""Several API processes (``uvicorn --workers 2``) with PROMETHEUS_MULTIPROC_DIR: a scrape
of whichever process answers counts every process's requests (within a second)."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.api_keys import ADMIN
from tests.support.api_server import running_api

REQUESTS = 60
TOKEN = "several-processes-token-0123456789"


def healthz_count(base: str) -> float:
    response = httpx.get(f"{base}/metrics", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    total = 0.0
    for line in response.text.splitlines():
        if line.startswith("k2e_http_requests_total{") and 'route="/healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_process_requests_are_counted_by_any_process(tmp_path: Path, redis_server) -> None:  # noqa: ANN001
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    env = {
        **os.environ,
        "K2E_DATA_DIR": str(tmp_path / "data"),
        "REDIS_URL": redis_server.url,
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    with running_api(env, tmp_path / "api.log", args=("--workers", "2")) as (base, _):
        time.sleep(2.5)  # the start's own /healthz polls, written out by now
        before = healthz_count(base)

        def one(_: int) -> int:
            # A new connection each, 8 at once, so that both processes answer some.
            return httpx.get(f"{base}/healthz", headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(REQUESTS))) == {200}
        # Each process writes its counts to the shared files every second.
        deadline = time.monotonic() + 10
        while healthz_count(base) - before != REQUESTS:
            assert time.monotonic() < deadline, healthz_count(base) - before
            time.sleep(0.2)
        for _ in range(5):
            assert healthz_count(base) - before == REQUESTS
        pids = {path.name for path in shared.glob("counter_*.db")}
        assert len(pids) == 2, pids
