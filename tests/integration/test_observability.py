"""A job's life seen by an operator, with a real API process or in-process API, a real
Celery worker process and real TensorFlow:

- with K2E_LOG_FORMAT=json, every line about the job, from the API's POST to the
  worker's last line and in the job's own log (GET /jobs/{id}/logs), is a JSON object
  carrying the X-Request-ID the client sent;
- with tracing on, one submission is one trace: the API's spans (read from the SDK's
  in-memory exporter) and the worker's (written to K2E_TRACE_FILE by the worker process)
  share its id, and the worker's job span continues the API's enqueue span;
- GET /workers shows the worker live, running the job, then lost once killed -9.
"""

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from k2e import tracing
from k2e.launcher.embedded_redis import EmbeddedRedis
from k2e.settings import Settings
from tests.support.api_keys import ADMIN
from tests.support.api_server import running_api
from tests.support.worker_process import WorkerProcess, worker_env

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.fault_deployment import Env  # noqa: E402

pytestmark = pytest.mark.integration

REQUEST_ID = "it-observability-0042"
PHASES = {"building the model", "loading the training data", "training", "exporting"}


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _wait(http: Any, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not end")


def _job_log(http: Any, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        since = items[-1]["seq"] if items else 0
        page = http.get(f"/jobs/{job_id}/logs", params={"since": since}).json()["items"]
        if not page:
            return items
        items += page


def test_every_line_of_a_jobs_life_is_json_with_the_submissions_request_id(
    tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis", appendonly=False, die_with_parent=True)
    redis_server.start()
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url, log_format="json")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.start()
        with running_api(worker_env(settings), tmp_path / "api.log") as (base, _):
            with httpx.Client(base_url=base, headers=ADMIN, timeout=60) as http:
                h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "m.h5")
                model = http.post("/models", files={"file": ("m.h5", h5.read_bytes())})
                data_bytes = keras_models.npz_bytes(keras_models.seed_multi_io_data(n=128))
                data = http.post("/datasets", files={"file": ("d.npz", data_bytes)})
                spec = {
                    "keras_model_path": model.json()["id"],
                    "train": {"dataset": data.json()["id"], "max_steps": 20, "batch_size": 32},
                    "eval": {"dataset": data.json()["id"], "steps": 1},
                }
                response = http.post("/convert", json=spec, headers={"X-Request-ID": REQUEST_ID})
                assert response.status_code == 202, response.text
                assert response.headers["x-request-id"] == REQUEST_ID
                job_id = response.json()["id"]
                assert _wait(http, job_id)["status"] == "succeeded"
                job_log = _job_log(http, job_id)
        worker_pid = worker.process.pid if worker.process else None
    finally:
        worker.stop()
        redis_server.stop()

    # The API process: every line it wrote is JSON; the job's carry the request id (a
    # later request about the job, GET /jobs/{id}, has an id of its own).
    api_lines = _json_lines((tmp_path / "api.log").read_text())
    about_job = [line for line in api_lines if line.get("job_id") == job_id]
    assert {"accepted", "handed"} <= {line["message"].split()[2] for line in about_job}
    for line in about_job:
        assert line["request_id"] == REQUEST_ID, line
        assert line["job_id"] == job_id, line

    # The worker: every line that names the job is JSON with the same request id, from the
    # main process's "received" to the pool process's last line (Celery's "succeeded").
    worker_lines = [line for line in worker.log_path.read_text().splitlines() if job_id in line]
    parsed = [json.loads(line) for line in worker_lines]
    assert len(parsed) > 5
    for line in parsed:
        assert line["request_id"] == REQUEST_ID, line
        assert line["job_id"] == job_id, line
        assert line["worker"] == f"{socket.gethostname()}:{worker_pid}", line
        assert line.get("tenant") or line["message"].endswith("received from the broker"), line
    assert parsed[0]["message"] == f"job {job_id}: received from the broker"
    assert "succeeded" in parsed[-1]["message"]
    assert PHASES <= {line["message"].split(": ", 1)[-1] for line in parsed}

    # The job's own log (the worker's capture, worker/joblog.py): the same JSON lines; the
    # store's own note of the export is the one line that is not a logged record.
    messages = [item["message"] for item in job_log if item["kind"] == "log"]
    notes = [m for m in messages if not m.startswith("{")]
    assert [m.split()[0] for m in notes] == ["exported"]
    captured = [json.loads(m) for m in messages if m.startswith("{")]
    assert len(captured) > 5
    for line in captured:
        assert line["request_id"] == REQUEST_ID, line
        assert line["job_id"] == job_id, line
    assert any(line["logger"] == "tensorflow" for line in captured)


def test_one_submission_is_one_trace_from_the_api_to_the_workers_phases(
    tmp_path: Path,
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    trace_file = tmp_path / "spans.jsonl"
    env = Env(tmp_path, trace_file=trace_file)  # type: ignore[arg-type]
    try:
        memory = InMemorySpanExporter()
        provider = tracing.provider()
        assert provider is not None
        provider.add_span_processor(SimpleSpanProcessor(memory))
        env.worker()
        job_id = env.submit(20)["id"]
        assert _wait(env.client, job_id)["status"] == "succeeded"
    finally:
        env.close()
        tracing.shutdown()
    api_spans = memory.get_finished_spans()
    convert = next(s for s in api_spans if s.name == "POST /convert")
    trace_id = format(convert.context.trace_id, "032x")
    enqueue = next(s for s in api_spans if s.name == "enqueue")
    assert format(enqueue.context.trace_id, "032x") == trace_id
    assert enqueue.attributes["k2e.job_id"] == job_id

    written = [json.loads(line) for line in trace_file.read_text().splitlines()]
    worker_spans = [s for s in written if s["service"] == "k2e-worker"]
    assert {s["trace_id"] for s in worker_spans} == {trace_id}
    job = next(s for s in worker_spans if s["name"] == "job")
    assert job["parent_id"] == format(enqueue.context.span_id, "016x")
    names = {s["name"] for s in worker_spans}
    assert {"pickup", "evaluating", "verifying the export"} | PHASES <= names
    for span in worker_spans:
        if span["name"] != "job":
            assert span["parent_id"] == job["span_id"], span
    # Phases follow one another in time.
    phases = sorted((s for s in worker_spans if s["name"] in PHASES), key=lambda s: s["start_ns"])
    for before, after in zip(phases, phases[1:], strict=False):
        assert before["end_ns"] <= after["start_ns"]


def test_get_workers_shows_the_worker_live_running_a_job_then_lost_after_kill_9(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, worker_heartbeat_s=0.5)
    try:
        process = env.worker()
        assert process.process is not None
        name = f"{socket.gethostname()}:{process.process.pid}"

        def mine() -> dict[str, Any]:
            listed = {w["name"]: w for w in env.client.get("/workers").json()}
            return listed[name]

        idle = mine()
        assert idle["state"] == "live"
        assert idle["queues"] == ["cpu", "gpu"]
        assert idle["accelerator"] == "cpu"
        assert idle["current_job"] is None
        job_id = env.submit(100_000)["id"]
        deadline = time.monotonic() + 60
        while (busy := mine())["current_job"] != job_id:
            assert time.monotonic() < deadline, busy
            time.sleep(0.2)
        assert busy["state"] == "live"
        # The main process and its pool process, TensorFlow loaded in the latter.
        assert busy["rss_bytes"] > 200 * 1024 * 1024
        process.kill_hard()
        killed = time.monotonic()
        while (gone := mine())["state"] != "lost":
            assert time.monotonic() - killed < 10, gone
            time.sleep(0.2)
        # Lost after three silent heartbeats (1.5 s), not before.
        assert time.monotonic() - killed > 1.0
        cpu = next(q for q in env.client.get("/queues").json() if q["name"] == "cpu")
        assert cpu["slots"] == 0
    finally:
        env.close()
