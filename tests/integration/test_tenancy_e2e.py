"""Two tenants and a real worker: each sees and touches only its own jobs, files and
uploads; quotas stop what runs too long; one tenant's burst does not hold up another's."""

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import JobStore, NewJob
from k2e.jobs.queueing import TaskSender
from tests.support.api_keys import bearer, new_tenant
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

# Once on the session's SQLite stack, once on a PostgreSQL one (docker compose's store).
pytestmark = [pytest.mark.integration, pytest.mark.stores("sqlite", "postgres")]


def _upload(client: TestClient, key: str, path: str, name: str, content: bytes) -> str:
    response = client.post(path, files={"file": (name, content)}, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("tenancy-seed")
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), folder / "seed.h5").read_bytes()
    return {"model": h5, "data": keras_models.npz_bytes(keras_models.seed_multi_io_data(128))}


def _tenant(client: TestClient, seed: dict[str, bytes], prefix: str, **quotas: int) -> dict:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    key = new_tenant(client, name, **quotas)
    return {
        "name": name,
        "key": key,
        "model": _upload(client, key, "/models", "seed.h5", seed["model"]),
        "data": _upload(client, key, "/datasets", "d.npz", seed["data"]),
    }


def _spec(t: dict, steps: int, **extra) -> dict:
    spec = {
        "keras_model_path": t["model"],
        "train": {"dataset": t["data"], "max_steps": steps},
        "config": {"save_checkpoints_steps": 10},
    }
    spec.update(extra)
    return spec


def test_two_tenants_see_and_touch_only_their_own(client, worker, settings, seed) -> None:
    a, b = _tenant(client, seed, "a"), _tenant(client, seed, "b")
    ka, kb = bearer(a["key"]), bearer(b["key"])
    submitted = client.post("/convert", json=_spec(a, 30, model_dir="shared"), headers=ka)
    assert submitted.status_code == 202, submitted.text
    job_a = wait_for_job(client, submitted.json()["id"])
    assert job_a["status"] == "succeeded", job_a["error"]
    job_id = job_a["id"]
    # The member's log has TensorFlow's lines, with no server path nor worker host in them.
    log = client.get(f"/jobs/{job_id}/logs", headers=ka).text
    assert "Saving checkpoints for 30 into model_dirs/shared/model.ckpt" in log
    assert str(settings.data_dir.resolve()) not in log
    assert "started by" not in log
    assert "started by" in client.get(f"/jobs/{job_id}/logs").text  # the admin sees it

    # B cannot read, download, cancel or delete A's job: each answers as an unknown id.
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/savedmodel"),
        ("GET", f"/jobs/{job_id}/checkpoints"),
        ("GET", f"/jobs/{job_id}/checkpoints/30"),
        ("GET", f"/jobs/{job_id}/logs"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("DELETE", f"/jobs/{job_id}"),
    ):
        assert client.request(method, path, headers=kb).status_code == 404, (method, path)
    assert client.get(f"/jobs/{job_id}/savedmodel", headers=ka).status_code == 200

    # B cannot train on A's model or dataset.
    theirs = {**_spec(b, 5), "keras_model_path": a["model"]}
    assert client.post("/convert", json=theirs, headers=kb).status_code == 422
    theirs = _spec(b, 5)
    theirs["train"]["dataset"] = a["data"]
    assert client.post("/convert", json=theirs, headers=kb).status_code == 422

    # B's "shared" model_dir is B's own: warm_start finds nothing of A's there.
    job_b = client.post(
        "/convert", json=_spec(b, 5, model_dir="shared", warm_start=True), headers=kb
    ).json()
    assert job_b["warm_start_from"] is None
    job_b = wait_for_job(client, job_b["id"])
    assert job_b["status"] == "succeeded", job_b["error"]
    assert job_b["progress"]["global_step"] == 5  # from scratch, not from A's step 30
    steps = [c["step"] for c in client.get(f"/jobs/{job_b['id']}/checkpoints", headers=kb).json()]
    assert max(steps) == 5

    # A's own warm start from "shared" does continue A's run.
    again = client.post(
        "/convert", json=_spec(a, 40, model_dir="shared", warm_start=True), headers=ka
    ).json()
    assert again["warm_start_from"] == "model_dirs/shared"
    assert wait_for_job(client, again["id"])["progress"]["global_step"] == 40


def test_the_worker_resolves_files_inside_the_jobs_tenant(client, worker, settings, seed) -> None:
    """A job sent past the API, naming another tenant's model, fails in the worker."""
    a, b = _tenant(client, seed, "wa"), _tenant(client, seed, "wb")
    store = JobStore(settings.sqlalchemy_url)
    job_id = str(uuid.uuid4())
    spec = {**_spec(b, 5), "keras_model_path": a["model"]}
    full = {**spec, "export": True, "accelerator": "cpu", "checkpoint_format": "checkpoint"}
    store.create(
        NewJob(
            id=job_id,
            tenant=b["name"],
            spec=full,
            queue="cpu",
            model_dir=f"jobs/{job_id}",
            max_steps=5,
        )
    )
    TaskSender(settings).send_train(job_id, "cpu", None)
    job = wait_for_job(client, job_id)
    assert job["status"] == "failed"
    assert "no model" in job["error"]["message"]


def test_the_tenants_run_time_limit_stops_a_job_as_timed_out(client, worker, seed) -> None:
    t = _tenant(client, seed, "slow", max_run_s=4)
    response = client.post("/convert", json=_spec(t, 1_000_000), headers=bearer(t["key"]))
    job = response.json()
    assert job["timeout_s"] == 4
    job = wait_for_job(client, job["id"], timeout=120)
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "timed_out"


def test_a_burst_from_one_tenant_does_not_hold_up_another(client, worker, settings, seed) -> None:
    """The fairness rule (k2e.jobs.dispatch): at most K jobs of a tenant in the broker, so
    another tenant's job starts after at most K + 1 of the burst's jobs (the one running
    when it arrives, and K handed over before it)."""
    burst = 1000
    a = _tenant(client, seed, "burst", max_active_jobs=burst + 10)
    b = _tenant(client, seed, "calm")
    ka, kb = bearer(a["key"]), bearer(b["key"])
    started = time.monotonic()
    ids = []
    for _ in range(burst):
        response = client.post("/convert", json=_spec(a, 1, export=False), headers=ka)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    print(f"{burst} jobs submitted in {time.monotonic() - started:.1f} s")
    mine = client.post("/convert", json=_spec(b, 1, export=False), headers=kb).json()
    done = wait_for_job(client, mine["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    burst_jobs, cursor = [], None
    while True:  # every job of the burst, page by page
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", params=params, headers=ka).json()
        burst_jobs += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(burst_jobs) == burst
    started_burst = [job for job in burst_jobs if job["started_at"] is not None]
    assert started_burst, "the worker ran some of the burst while it arrived"
    before = [job for job in started_burst if job["started_at"] < done["started_at"]]
    limit = settings.tenant_inflight_jobs
    # The burst's jobs that were already running when the other tenant's arrived, or
    # handed to the broker before it: at most K + 1 start between its arrival and its start.
    arrived = mine["created_at"]
    overtaking = [job for job in before if job["started_at"] > arrived]
    print(
        f"burst jobs started: {len(started_burst)}; before the other tenant's job was "
        f"submitted: {len(before) - len(overtaking)}; between its submission and its start: "
        f"{len(overtaking)} (K = {limit})"
    )
    assert len(overtaking) <= limit + 1
    for job_id in ids:  # leave the session worker free for the next tests
        client.post(f"/jobs/{job_id}/cancel", headers=ka)
    for job_id in ids[: limit + 2]:
        wait_for_job(client, job_id, timeout=120)
