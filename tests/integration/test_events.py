"""GET /jobs/{id}/events against a real API process (uvicorn, as `make run` starts it), the
session's real worker and Redis: what a subscribed, a reconnecting and a late client see."""

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from k2e.settings import Settings
from tests.support.api_keys import ADMIN, bearer, new_tenant
from tests.support.api_server import running_api
from tests.support.event_stream import Event, read_events
from tests.support.worker_process import worker_env

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

MAX_STEPS = 1500
STATUSES = {"queued", "running", "cancelling", "succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A uvicorn API process on the session worker's store and Redis."""
    with running_api(worker_env(settings), tmp_path_factory.mktemp("api") / "api.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def spec(client, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A short seed job (multi-input/multi-output, evaluated), submitted by the admin key."""
    folder = tmp_path_factory.mktemp("events-model")
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), Path(folder) / "seed.h5")
    model = client.post("/models", files={"file": ("seed.h5", h5.read_bytes())}).json()["id"]
    npz = keras_models.npz_bytes(keras_models.seed_multi_io_data())
    data = client.post("/datasets", files={"file": ("d.npz", npz)}).json()["id"]
    return {
        "keras_model_path": model,
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"log_step_count_steps": 100, "save_summary_steps": 500},
        "train": {"dataset": data, "max_steps": MAX_STEPS, "batch_size": 32},
        "eval": {"dataset": data},
        "export": False,
    }


def _in_thread(target, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = target(*args, **kwargs)
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _result(thread: threading.Thread, out: dict):
    thread.join(300)
    assert not thread.is_alive(), "the stream did not close"
    if "error" in out:
        raise out["error"]
    return out["result"]


def _ids(events: list[Event]) -> list[int]:
    return [e.id for e in events]


def test_subscribed_reconnecting_and_late_clients_see_every_event_once(
    client, worker, api_url, spec
) -> None:
    job_id = client.post("/convert", json=spec).json()["id"]
    url = f"{api_url}/jobs/{job_id}/events"

    # One client stays connected throughout; another hangs up at its first progress event
    # and comes back a second later with Last-Event-ID.
    whole = _in_thread(read_events, url, ADMIN)
    first_part, _ = read_events(url, ADMIN, until=lambda es: es[-1].event == "progress")
    time.sleep(1.0)
    resumed, _ = read_events(url, {**ADMIN, "Last-Event-ID": str(first_part[-1].id)})
    events, _ = _result(*whole)

    ids = _ids(events)
    assert ids == sorted(set(ids)), "ids strictly increase"
    assert _ids(first_part) + _ids(resumed) == ids, "a reconnect loses nothing, repeats nothing"
    assert events[-1].event == "end"
    assert all(e.event != "end" for e in events[:-1])

    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    for e in events:
        if e.event in ("status", "log", "progress"):
            datetime.fromisoformat(e.data["at"])
        assert e.event in {"status", "progress", "loss", "log", "eval", "end"}

    progress = [e.data for e in events if e.event == "progress"]
    assert len(progress) >= 2
    assert progress[-1]["global_step"] == MAX_STEPS
    assert all(p["max_steps"] == MAX_STEPS for p in progress)
    steps = [p["global_step"] for p in progress]
    assert steps == sorted(steps)
    assert any(p["steps_per_sec"] and p["steps_per_sec"] > 0 for p in progress)
    assert any(p["eta_s"] is not None and p["eta_s"] > 0 for p in progress[:-1])
    assert progress[-1]["eta_s"] == 0

    losses = [e.data for e in events if e.event == "loss"]
    assert len(losses) >= 2
    assert [p["step"] for p in losses] == sorted({p["step"] for p in losses})
    assert all(isinstance(p["loss"], float) for p in losses)

    (evaluation,) = [e.data for e in events if e.event == "eval"]
    assert {"acc_1", "acc_2", "loss"} <= set(evaluation["metrics"])
    logs = "\n".join(e.data["message"] for e in events if e.event == "log")
    assert "loss = " in logs, "TensorFlow's step lines are log events"

    job = client.get(f"/jobs/{job_id}").json()
    assert events[-1].data == job, "end carries the job as GET /jobs/{id} shows it"
    assert job["status"] == "succeeded"
    assert job["metrics"]["eval"] == evaluation["metrics"]
    # The end reached the connected client soon after the worker's final write (same clock).
    lag = events[-1].received - datetime.fromisoformat(job["finished_at"]).timestamp()
    assert lag < 2.0, f"end arrived {lag:.3f} s after finished_at"

    # A client connecting after the end gets the same events, then the stream closes;
    # so does one resuming (query form) from the middle.
    late, _ = read_events(url, ADMIN)
    assert [(e.id, e.event, e.data) for e in late] == [(e.id, e.event, e.data) for e in events]
    middle = ids[len(ids) // 2]
    tail, _ = read_events(url, ADMIN, params={"last_event_id": middle})
    assert _ids(tail) == [i for i in ids if i > middle]
    after_end, _ = read_events(url, {**ADMIN, "Last-Event-ID": str(ids[-1])})
    assert after_end == []

    # GET /jobs/{id}/logs shows what it showed before: transitions and log lines only.
    log_kinds = {item["kind"] for item in client.get(f"/jobs/{job_id}/logs").json()["items"]}
    assert log_kinds <= STATUSES | {"log"}
    assert {"queued", "running", "succeeded", "log"} <= log_kinds


def test_unknown_and_other_tenants_jobs_are_404(client, api_url, spec) -> None:
    job_id = client.post("/convert", json={**spec, "train": {**spec["train"], "max_steps": 1}})
    job_id = job_id.json()["id"]
    member = bearer(new_tenant(client, "events-other"))
    with httpx.Client(base_url=api_url, timeout=30) as http:
        unknown = http.get("/jobs/no-such-job/events", headers=ADMIN)
        other = http.get(f"/jobs/{job_id}/events", headers=member)
        anonymous = http.get(f"/jobs/{job_id}/events")
        bad_id = http.get(f"/jobs/{job_id}/events", headers={**ADMIN, "Last-Event-ID": "x"})
    for response in (unknown, other):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert other.json()["detail"] == f"no job with id {job_id!r}"
    assert anonymous.status_code == 401
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["loc"] == ["header", "Last-Event-ID"]


def test_a_member_sees_no_server_paths_in_the_stream(
    client, worker, api_url, spec, settings, tmp_path
) -> None:
    member = bearer(new_tenant(client, "events-member"))
    member_client = httpx.Client(base_url=api_url, headers=member, timeout=60)
    with member_client:
        h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "m.h5")
        model = member_client.post("/models", files={"file": ("m.h5", h5.read_bytes())}).json()
        npz = keras_models.npz_bytes(keras_models.seed_multi_io_data())
        data = member_client.post("/datasets", files={"file": ("d.npz", npz)}).json()
        body = {**spec, "keras_model_path": model["id"]}
        body["train"] = {**spec["train"], "dataset": data["id"], "max_steps": 200}
        body["eval"] = {"dataset": data["id"]}
        job_id = member_client.post("/convert", json=body).json()["id"]
    events, _ = read_events(f"{api_url}/jobs/{job_id}/events", member)
    assert events[-1].event == "end"
    assert events[-1].data["status"] == "succeeded"
    text = "\n".join(e.data["message"] for e in events if e.event in ("status", "log"))
    assert "started by" not in text
    assert "INFO tensorflow" in text, "TensorFlow's lines are there, paths rewritten"
    assert str(settings.storage_root) not in text
