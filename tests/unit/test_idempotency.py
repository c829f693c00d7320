"""POST /convert's Idempotency-Key, through the real API (no worker: jobs stay queued).

docs/api.md (Idempotency-Key): the same key with the same body returns the job that key
made; the same key with a different body answers 409. Each test counts the jobs before
and after, through GET /jobs and in the job store, and checks what a replay answers: the
same job, 202, its Location.
"""

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2e.jobs.job_store import JobStore
from k2e.settings import Settings
from k2e.tenancy.scope import ANY_TENANT
from service.main import create_app
from tests.support.api_keys import admin_client, admin_files

PROBLEM = "application/problem+json"

# A model described inline (no TensorFlow needed): one input x [2], one output y [1].
INLINE_MODEL = {
    "config": {
        "class_name": "Sequential",
        "config": {
            "name": "tiny",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"batch_input_shape": [None, 2], "dtype": "float32", "name": "x"},
                },
                {"class_name": "Dense", "config": {"name": "y", "units": 1}},
            ],
        },
    },
    "compile": {"optimizer": "sgd", "loss": "mse"},
}


def npz(n: int = 8, fill: float = 0.0) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.full((n, 2), fill, "float32"), y=np.full((n, 1), fill, "float32"))
    return buffer.getvalue()


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    storage: Path
    dataset: str  # an uploaded dataset that fits INLINE_MODEL

    def spec(self, **overrides: Any) -> dict[str, Any]:
        spec = {"keras_model": INLINE_MODEL, "train": {"dataset": self.dataset, "max_steps": 5}}
        spec.update(overrides)
        return spec

    def post(self, body: Any, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return self.client.post("/convert", json=body, headers=headers, **kwargs)

    def jobs(self) -> list[str]:
        """Job ids as GET /jobs lists them; the job store must hold the same ones."""
        listed = self.client.get("/jobs", params={"limit": 200})
        assert listed.status_code == 200, listed.text
        ids = [j["id"] for j in listed.json()["items"]]
        store: JobStore = self.app.state.backend.store
        assert sorted(j.id for j in store.list_jobs(ANY_TENANT, limit=200).items) == sorted(ids)
        return ids

    def kept(self, kind: str) -> list[str]:
        """The entries of ``kind`` (models, datasets) the storage holds."""
        folder = self.storage / kind
        assert folder.is_dir(), f"the storage layout changed: no {folder}"
        return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[Api]:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url)
    app = create_app(settings)
    with admin_client(app) as client:
        uploaded = client.post("/datasets", files={"file": ("d.npz", npz())})
        assert uploaded.status_code == 201, uploaded.text
        yield Api(client, app, admin_files(settings.storage_root), uploaded.json()["id"])


def accepted(response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def conflict(response: Any) -> dict[str, Any]:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 409
    assert body["title"]
    assert "Idempotency-Key" in body["detail"], body["detail"]
    assert "different request body" in body["detail"], body["detail"]
    return body


# --- JSON submissions ----------------------------------------------------------------------------


def test_the_same_key_and_body_replay_the_first_job(api: Api) -> None:
    assert api.jobs() == []
    first = accepted(api.post(api.spec(), key="k-1"))
    assert first["status"] == "queued"
    assert api.jobs() == [first["id"]]
    for _ in range(3):
        again = accepted(api.post(api.spec(), key="k-1"))
        assert again == api.client.get(f"/jobs/{first['id']}").json()
        assert again["id"] == first["id"]
    assert api.jobs() == [first["id"]], "a replay made no second job"


def test_the_same_body_is_the_same_json_however_it_is_written(api: Api) -> None:
    """ "The same body" is the same JSON document: key order and spacing do not matter."""
    first = accepted(api.post(api.spec(), key="k-format"))
    spec = api.spec()
    reordered = json.dumps(dict(reversed(list(spec.items()))), indent=2).encode()
    again = api.client.post(
        "/convert",
        content=reordered,
        headers={"Idempotency-Key": "k-format", "content-type": "application/json"},
    )
    assert accepted(again)["id"] == first["id"]
    assert api.jobs() == [first["id"]]


def test_the_same_key_with_another_body_is_409_and_changes_nothing(api: Api) -> None:
    first = accepted(api.post(api.spec(), key="k-2"))
    before = api.client.get(f"/jobs/{first['id']}").json()
    other = api.spec(train={"dataset": api.dataset, "max_steps": 6})
    body = conflict(api.post(other, key="k-2"))
    assert first["id"] in body["detail"]
    assert api.jobs() == [first["id"]]
    assert api.client.get(f"/jobs/{first['id']}").json() == before
    # Still 409 the second time, and the first body still replays.
    conflict(api.post(other, key="k-2"))
    assert accepted(api.post(api.spec(), key="k-2"))["id"] == first["id"]
    assert api.jobs() == [first["id"]]


def test_a_refused_body_does_not_take_the_key(api: Api) -> None:
    """A 422 records nothing: the key is still free for a valid body."""
    refused = api.post(api.spec(train={"dataset": "0" * 32, "max_steps": 5}), key="k-3")
    assert refused.status_code == 422, refused.text
    assert api.jobs() == []
    job = accepted(api.post(api.spec(), key="k-3"))
    assert api.jobs() == [job["id"]]


def test_other_keys_or_no_key_make_new_jobs(api: Api) -> None:
    """The key is what makes a replay: the same body under another key, or without one,
    is a new job each time."""
    a = accepted(api.post(api.spec(), key="k-a"))["id"]
    b = accepted(api.post(api.spec(), key="k-b"))["id"]
    c = accepted(api.post(api.spec()))["id"]
    d = accepted(api.post(api.spec()))["id"]
    assert len({a, b, c, d}) == 4
    assert sorted(api.jobs()) == sorted([a, b, c, d])


# --- multipart submissions -----------------------------------------------------------------------


def post_multipart(
    api: Api, spec: dict[str, Any], files: dict[str, tuple[str, bytes]], key: str
) -> Any:
    return api.client.post(
        "/convert",
        data={"spec": json.dumps(spec)},
        files=files,
        headers={"Idempotency-Key": key},
    )


def test_a_multipart_submission_replays_with_the_same_spec_and_files(api: Api) -> None:
    spec = {"keras_model": INLINE_MODEL, "train": {"max_steps": 5}, "eval": {}}
    files = {"train_data": ("t.npz", npz(fill=1.0)), "eval_data": ("e.npz", npz(fill=2.0))}
    datasets = api.kept("datasets")
    first = accepted(post_multipart(api, spec, files, "mp-1"))
    stored = set(api.kept("datasets")) - set(datasets)
    assert len(stored) == 2, "the two files were kept"
    assert {first["spec"]["train"]["dataset"], first["spec"]["eval"]["dataset"]} == stored

    again = accepted(post_multipart(api, spec, files, "mp-1"))
    assert again["id"] == first["id"]
    assert api.jobs() == [first["id"]]
    assert set(api.kept("datasets")) == set(datasets) | stored, "a replay keeps no new file"

    # The files are part of the body: other bytes under the same name are another body.
    changed = {**files, "eval_data": ("e.npz", npz(fill=3.0))}
    conflict(post_multipart(api, spec, changed, "mp-1"))
    # So are the fields they fill: the same bytes as eval_data instead of train_data.
    swapped = {"train_data": files["eval_data"], "eval_data": files["train_data"]}
    conflict(post_multipart(api, spec, swapped, "mp-1"))
    # And the spec.
    conflict(post_multipart(api, {**spec, "train": {"max_steps": 6}}, files, "mp-1"))
    assert api.jobs() == [first["id"]]
    assert set(api.kept("datasets")) == set(datasets) | stored, "a 409 keeps nothing"


def test_a_multipart_submission_with_a_model_file_replays(api: Api, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from tests.support import keras_models

    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5").read_bytes()
    data = keras_models.npz_bytes(keras_models.seed_multi_io_data(n=16))
    spec = {"train": {"max_steps": 5}}
    files = {"model": ("seed.h5", h5), "train_data": ("d.npz", data)}
    kept_models = api.kept("models")
    first = accepted(post_multipart(api, spec, files, "mp-model"))
    new_models = set(api.kept("models")) - set(kept_models)
    assert new_models == {first["spec"]["keras_model_path"]}

    again = accepted(post_multipart(api, spec, files, "mp-model"))
    assert again["id"] == first["id"]
    assert api.jobs() == [first["id"]]
    assert set(api.kept("models")) == set(kept_models) | new_models

    # The same files sent as JSON plus ids are another body.
    json_spec = {"keras_model_path": first["spec"]["keras_model_path"], **spec}
    conflict(api.post(json_spec, key="mp-model"))
    assert api.jobs() == [first["id"]]


# --- races ---------------------------------------------------------------------------------------


def _race(api: Api, n: int, send: Any) -> list[Any]:
    """``send()`` from n threads released together; the responses."""
    start = threading.Barrier(n, timeout=60)
    responses: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            responses[i] = send()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert all(r is not None for r in responses)
    return responses


@pytest.fixture
def lookups_meet(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], dict[str, Any]]:
    """Make the race happen every time: the first ``n`` idempotency-key lookups wait for
    each other, so that every racer has looked the key up (and found nothing) before any
    of them records its job. The lookups' answers are returned for inspection."""
    state: dict[str, Any] = {"barrier": None, "n": 0, "calls": 0, "answers": []}
    lock = threading.Lock()
    original = JobStore.by_idempotency_key

    def lookup(self: JobStore, key: str) -> Any:
        with lock:
            state["calls"] += 1
            waits = state["calls"] <= state["n"]
        found = original(self, key)
        if waits:
            state["answers"].append(found)
            state["barrier"].wait()
        return found

    def arm(n: int) -> dict[str, Any]:
        state.update(barrier=threading.Barrier(n, timeout=60), n=n, calls=0, answers=[])
        return state

    monkeypatch.setattr(JobStore, "by_idempotency_key", lookup)
    return arm


def test_racing_submissions_with_one_key_make_one_job(api: Api, lookups_meet: Any) -> None:
    n = 6
    state = lookups_meet(n)
    responses = _race(api, n, lambda: api.post(api.spec(), key="race"))
    # Every racer found the key free, so all of them tried to record a job.
    assert state["answers"] == [None] * n
    ids = {accepted(r)["id"] for r in responses}
    assert len(ids) == 1, f"one job answers every racer: {ids}"
    assert api.jobs() == list(ids)
    # Afterwards the key replays as usual.
    assert accepted(api.post(api.spec(), key="race"))["id"] in ids


def test_racing_submissions_without_forced_interleaving(api: Api) -> None:
    """The same race as it comes (no hook in the store), several keys in a row."""
    for round_ in range(4):
        key = f"natural-race-{round_}"
        responses = _race(api, 6, lambda key=key: api.post(api.spec(), key=key))
        ids = {accepted(r)["id"] for r in responses}
        assert len(ids) == 1, (key, ids)
    assert len(api.jobs()) == 4


def test_racing_multipart_submissions_make_one_job_and_keep_one_copy(
    api: Api, lookups_meet: Any
) -> None:
    """Racers that lose to another with the same key and body are answered with its job,
    and the files they uploaded are not kept: they belong to no job."""
    n = 4
    spec = {"keras_model": INLINE_MODEL, "train": {"max_steps": 5}}
    files = {"train_data": ("t.npz", npz(fill=5.0))}
    datasets = api.kept("datasets")
    state = lookups_meet(n)
    responses = _race(api, n, lambda: post_multipart(api, spec, files, "mp-race"))
    assert state["answers"] == [None] * n
    ids = {accepted(r)["id"] for r in responses}
    assert len(ids) == 1, ids
    assert api.jobs() == list(ids)
    (job_id,) = ids
    job = api.client.get(f"/jobs/{job_id}").json()
    kept = set(api.kept("datasets")) - set(datasets)
    assert kept == {job["spec"]["train"]["dataset"]}, (
        f"{len(kept)} copies of the uploaded file kept for one job"
    )
