"""A real Prometheus server (Debian's `prometheus` package) for the metrics tests: it
scrapes a k2e API every second and answers PromQL over its HTTP API."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from k2e.launcher.embedded_redis import free_port
from tests.support.child_processes import die_with_the_suite, stop_group

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: k2e-api
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
"""


def prometheus_binary() -> str:
    """The `prometheus` command; skips the test where it is not installed (outside CI:
    under CI a skip fails the run, tests/support/ci_skips.py)."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return found


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict]:
        """The instant vector (or scalar, as one sample) ``promql`` gives now."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The single sample's value of ``promql``; None when it gives no sample."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, timeout: float = 60) -> float:
        """Wait until ``promql`` gives ``expected`` (scrapes come every second)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.value(promql)
            if got == expected:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql} = {got}, expected {expected}")
            time.sleep(0.5)


@contextmanager
def running_prometheus(api_url: str, token: str, folder: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``api_url``'s /metrics with ``token``, every second."""
    binary = prometheus_binary()
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "token"
    token_file.write_text(token)
    config = folder / "prometheus.yml"
    config.write_text(SCRAPE_CONFIG.format(token_file=token_file, target=urlsplit(api_url).netloc))
    port = free_port()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            die_with_the_suite(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Prometheus did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        stop_group(process)
