"""Several API processes (``uvicorn --workers 2``) with PROMETHEUS_MULTIPROC_DIR: a scrape
of whichever process answers counts every process's requests."""

import os
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
        before = healthz_count(base)
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(REQUESTS):
                # A new connection each time, so that both processes answer some.
                response = client.get("/healthz", headers={"Connection": "close"})
                assert response.status_code == 200
        for _ in range(5):
            assert healthz_count(base) - before == REQUESTS
        pids = {path.name for path in shared.glob("counter_*.db")}
        assert len(pids) == 2, pids
