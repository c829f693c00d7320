"""A real Prometheus (scrape interval 1 s) scrapes a real API process while a real worker
runs jobs: what PromQL answers over Prometheus's HTTP API is what the store and the
requests sent say (queue depth, jobs by status, request counts and rates)."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from tests.support.api_keys import ADMIN
from tests.support.api_server import running_api
from tests.support.prometheus_server import Prometheus, prometheus_binary, running_prometheus
from tests.support.worker_process import WorkerProcess, worker_env

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

TOKEN = "prometheus-scrape-token-0123456789"
JOBS = 3
HEALTH_REQUESTS = 40


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[httpx.Client, Prometheus, Settings]]:
    """Redis, an API process with a metrics token, and Prometheus scraping it; no worker."""
    prometheus_binary()
    redis = EmbeddedRedis(tmp_path / "redis", appendonly=False, die_with_parent=True)
    redis.start()
    try:
        settings = Settings(data_dir=tmp_path / "data", redis_url=redis.url)
        env = {**worker_env(settings), "K2E_METRICS_TOKEN": TOKEN}
        with (
            running_api(env, tmp_path / "api.log") as (url, _),
            running_prometheus(url, TOKEN, tmp_path / "prometheus") as prometheus,
            httpx.Client(base_url=url, headers=ADMIN, timeout=60) as http,
        ):
            yield http, prometheus, settings
    finally:
        redis.stop()


def submit_jobs(http: httpx.Client, folder: Path) -> list[str]:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), folder / "seed.h5")
    model = http.post("/models", files={"file": ("seed.h5", h5.read_bytes())})
    npz = keras_models.npz_bytes(keras_models.seed_multi_io_data())
    data = http.post("/datasets", files={"file": ("d.npz", npz)})
    assert model.status_code == data.status_code == 201, (model.text, data.text)
    spec = {
        "keras_model_path": model.json()["id"],
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"log_step_count_steps": 100, "save_checkpoints_steps": 1000},
        "train": {"dataset": data.json()["id"], "max_steps": 3000, "batch_size": 32},
        "export": False,
    }
    ids = []
    for _ in range(JOBS):
        response = http.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def store_counts(http: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in http.get("/jobs", params={"limit": 100}).json()["items"]:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return counts


def test_prometheus_sees_what_the_store_and_the_requests_say(stack, tmp_path: Path) -> None:
    http, prometheus, settings = stack
    prometheus.wait_for('up{job="k2e-api"}', 1)
    ids = submit_jobs(http, tmp_path)

    # No worker yet: the jobs wait, and the queue depth Prometheus scrapes is GET /queues'.
    # (Some are handed to the broker already, up to the tenant's in-flight limit.)
    cpu = next(q for q in http.get("/queues").json() if q["name"] == "cpu")
    assert cpu["waiting"] + cpu["running"] == JOBS
    prometheus.wait_for('k2e_queue_waiting_jobs{queue="cpu"}', cpu["waiting"])
    prometheus.wait_for('k2e_queue_slots_busy{queue="cpu"}', cpu["running"])
    assert store_counts(http) == {"queued": JOBS}
    prometheus.wait_for('k2e_jobs{queue="cpu",status="queued"}', JOBS)
    prometheus.wait_for('k2e_queue_slots{queue="cpu"}', 0)
    assert prometheus.value('k2e_queue_oldest_waiting_seconds{queue="cpu"}') >= 0

    # Requests: the counter grows by exactly the requests sent, and so does the rate.
    healthz = 'k2e_http_requests_total{method="GET",route="/healthz",status="200"}'
    time.sleep(2.5)  # a scrape after every earlier request
    before = prometheus.value(healthz) or 0.0
    started = time.monotonic()
    for _ in range(HEALTH_REQUESTS):
        assert http.get("/healthz").status_code == 200
        time.sleep(0.1)
    prometheus.wait_for(healthz, before + HEALTH_REQUESTS, timeout=10)
    window = int(time.monotonic() - started) + 5
    sent_rate = HEALTH_REQUESTS / window
    rate = prometheus.value(f"sum(rate({healthz}[{window}s]))")
    assert rate is not None
    assert 0.7 * sent_rate <= rate <= 1.5 * sent_rate, (rate, sent_rate)

    # A worker runs them: Prometheus sees it, the jobs running, then their ends.
    worker = WorkerProcess(settings, tmp_path / "worker.log", queues="cpu").start()
    try:
        prometheus.wait_for('k2e_workers{state="live"}', 1)
        prometheus.wait_for('k2e_queue_slots{queue="cpu"}', 1)
        for job_id in ids:
            deadline = time.monotonic() + 300
            while http.get(f"/jobs/{job_id}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, http.get(f"/jobs/{job_id}").text
                time.sleep(0.5)
    finally:
        worker.stop()
    counts = store_counts(http)
    assert counts == {"succeeded": JOBS}
    prometheus.wait_for('k2e_jobs{queue="cpu",status="succeeded"}', JOBS)
    prometheus.wait_for('sum(k2e_jobs{status="queued"}) or vector(0)', 0)
    prometheus.wait_for('k2e_queue_waiting_jobs{queue="cpu"}', 0)
    prometheus.wait_for('k2e_jobs_submitted_total{queue="cpu"}', JOBS)
    prometheus.wait_for('k2e_jobs_ended_total{queue="cpu",status="succeeded",reason=""}', JOBS)
    prometheus.wait_for('k2e_job_queue_wait_seconds_count{queue="cpu"}', JOBS)
    prometheus.wait_for('k2e_job_run_seconds_count{queue="cpu",status="succeeded"}', JOBS)
    prometheus.wait_for('k2e_uploads_total{kind="model"}', 1)
    # Scraped while they ran: one at a time on the one slot, training at some speed.
    assert prometheus.value('max_over_time(k2e_jobs{queue="cpu",status="running"}[10m])') == 1
    speed = prometheus.value('max_over_time(k2e_training_steps_per_second{queue="cpu"}[10m])')
    assert speed is not None
    assert speed > 0
