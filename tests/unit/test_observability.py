"""Request ids, JSON logs and traces through the real API (no worker): every response
carries an X-Request-ID (the client's when it is plain and short), a submission stores it
with the job and sends it, with the trace's context, in the Celery task's headers; JSON
lines carry the fields bound where they were logged; spans reach an OTLP collector."""

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from k2e import logs, tracing
from k2e.jobs.queueing import REQUEST_ID_HEADER
from k2e.settings import Settings
from k2e.tables import jobs
from service.main import create_app
from tests.support.api_keys import admin_client
from worker.joblog import MAX_LINE, shortened


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        yield client


def _submit(api: TestClient, seed_files: dict[str, bytes], headers: dict[str, str]) -> Any:
    model = api.post("/models", files={"file": ("m.h5", seed_files["model"])}).json()["id"]
    data = api.post("/datasets", files={"file": ("d.npz", seed_files["data"])}).json()["id"]
    spec = {"keras_model_path": model, "train": {"dataset": data, "max_steps": 5}}
    return api.post("/convert", json=spec, headers=headers)


def _task_message(redis_url: str, job_id: str) -> dict[str, Any]:
    """The training task's message as the broker holds it (Celery's Redis transport)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for raw in client.lrange("cpu", 0, -1):
            message = json.loads(raw)
            if message["headers"].get("id") == job_id:
                return message
    finally:
        client.close()
    raise AssertionError(f"no task for job {job_id} in the broker")


def test_every_response_carries_a_request_id_the_clients_when_plain(api: TestClient) -> None:
    fresh = api.get("/healthz").headers["x-request-id"]
    assert len(fresh) == 32
    assert fresh != api.get("/healthz").headers["x-request-id"]
    assert api.get("/healthz", headers={"X-Request-ID": "ci-42.a_b:c"}).headers["x-request-id"] == (
        "ci-42.a_b:c"
    )
    # Unauthenticated, a problem+json answer: it carries one all the same.
    anonymous = api.get("/jobs", headers={"Authorization": "", "X-Request-ID": "r-1"})
    assert anonymous.status_code == 401
    assert anonymous.headers["x-request-id"] == "r-1"
    for bad in ("has spaces", "x" * 129, 'quote"d', "new\tline"):
        answered = api.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert answered != bad
        assert len(answered) == 32


def test_a_submission_keeps_its_request_id_and_sends_it_to_the_worker(
    api: TestClient, seed_files: dict[str, bytes], redis_server
) -> None:  # noqa: ANN001
    response = _submit(api, seed_files, {"X-Request-ID": "submit-7"})
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "submit-7"
    job_id = response.json()["id"]
    engine = api.app.state.backend.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(
            select(jobs.c.request_id, jobs.c.trace_context).where(jobs.c.id == job_id)
        ).one()
    assert row.request_id == "submit-7"
    assert row.trace_context is None  # tracing is off
    headers = _task_message(redis_server.url, job_id)["headers"]
    assert headers[REQUEST_ID_HEADER] == "submit-7"
    assert "traceparent" not in headers


def test_json_lines_carry_the_fields_bound_where_they_were_logged() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("k2e.test.observability")
    handler = logs.JsonHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        # A job run in this process by an earlier test leaves its fields bound, as a
        # worker's pool process would until its task's end signal.
        logs.bind_process(job_id=None, request_id=None, tenant=None)
        logs.bind_process(worker="host:1")
        with logs.bound(request_id="r-9", job_id="j-1"):
            logger.info("inside %s", "the job")
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        logger.info("after")
    finally:
        logs.bind_process(worker=None)
        logger.removeHandler(handler)
    inside, failed, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "inside the job"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "k2e.test.observability"
    assert (inside["request_id"], inside["job_id"], inside["worker"]) == ("r-9", "j-1", "host:1")
    assert "ValueError: boom" in failed["exc"]
    assert "request_id" not in after
    assert after["worker"] == "host:1"


def test_a_long_json_job_log_line_is_cut_and_stays_json() -> None:
    line = json.dumps({"message": "x" * 5000, "request_id": "r-1"})
    cut = shortened(line)
    assert len(cut) <= MAX_LINE
    assert json.loads(cut)["request_id"] == "r-1"
    assert shortened("y" * 5000) == "y" * MAX_LINE


def test_a_traced_submission_is_one_trace_carried_to_the_task(
    tmp_path: Path, redis_server, seed_files: dict[str, bytes]
) -> None:  # noqa: ANN001
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    settings = Settings(
        data_dir=tmp_path / "data", redis_url=redis_server.url, trace_file=tmp_path / "t.jsonl"
    )
    try:
        with admin_client(create_app(settings)) as api:
            memory = InMemorySpanExporter()
            provider = tracing.provider()
            assert provider is not None
            provider.add_span_processor(SimpleSpanProcessor(memory))
            response = _submit(api, seed_files, {})
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
    finally:
        tracing.shutdown()
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert {"POST /convert", "check", "enqueue"} <= set(spans)
    request = spans["POST /convert"]
    trace_id = request.context.trace_id
    assert spans["check"].context.trace_id == trace_id
    assert spans["check"].parent.span_id == request.context.span_id
    enqueue = spans["enqueue"]
    assert enqueue.context.trace_id == trace_id
    assert enqueue.attributes["k2e.job_id"] == job_id
    # The worker's job span continues from the enqueue span (the task's traceparent).
    traceparent = _task_message(redis_server.url, job_id)["headers"]["traceparent"]
    assert traceparent.split("-")[1:3] == [f"{trace_id:032x}", f"{enqueue.context.span_id:016x}"]
    # The trace file holds the same spans, one JSON object per line.
    written = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert {"POST /convert", "check", "enqueue"} <= {s["name"] for s in written}
    assert {s["service"] for s in written} == {"k2e-api"}


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        self.received.append((self.path, self.headers["Content-Type"], length))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def test_spans_are_exported_over_otlp_http_to_the_endpoint() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        assert tracing.setup(Settings(K2E_OTLP_ENDPOINT=endpoint), "test")
        with tracing.span("one", job_id="j"):
            pass
        tracing.shutdown()  # exports what the batch holds
    finally:
        server.shutdown()
    assert _Collector.received
    path, content_type, length = _Collector.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert length > 0


def test_tracing_is_off_unless_an_endpoint_or_file_is_set() -> None:
    assert not tracing.setup(Settings(), "test")
    with tracing.span("nothing") as span:
        assert span is None
    assert tracing.current_traceparent() is None
