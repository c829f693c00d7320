"""What a user watching a job sees: live progress, the loss curve, logs, TensorBoard scalars."""

import time

import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

MAX_STEPS = 10_000


def _upload(client, path: str, name: str, content: bytes) -> str:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_progress_rises_while_running_and_logs_can_be_followed(client, worker, tmp_path) -> None:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = _upload(client, "/models", "seed.h5", h5.read_bytes())
    data = _upload(
        client, "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data())
    )
    spec = {
        "keras_model_path": model,
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"log_step_count_steps": 100, "save_summary_steps": 100},
        # Progress is written at most every K2E_PROGRESS_MIN_INTERVAL_S (0.25 s): the run
        # must last a few seconds for the curve to gather ten points on a fast worker.
        "train": {"dataset": data, "max_steps": MAX_STEPS, "batch_size": 64},
        "eval": {"dataset": data},
    }
    job_id = client.post("/convert", json=spec).json()["id"]

    steps, since, lines = [], 0, []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"]["global_step"] > 0:
            steps.append(job["progress"]["global_step"])
            assert job["progress"]["max_steps"] == MAX_STEPS
        page = client.get(f"/jobs/{job_id}/logs", params={"since": since}).json()
        assert all(item["seq"] > since for item in page["items"])
        lines += page["items"]
        since = page["next_since"]
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert len(set(steps)) >= 2, f"global_step was seen rising mid-run: {steps}"
    assert steps == sorted(steps)
    assert job["progress"]["steps_per_sec"] > 0

    curve = job["metrics"]["train"]
    assert len(curve) >= 10
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert {"acc_1", "acc_2", "loss", "global_step"} <= set(job["metrics"]["eval"])

    kinds = [item["kind"] for item in lines]
    assert kinds[:2] == ["queued", "running"]
    assert "succeeded" in kinds
    messages = "\n".join(item["message"] for item in lines)
    assert "loss = " in messages, "TensorFlow's own step logs are captured"
    seqs = [item["seq"] for item in lines]
    assert seqs == sorted(set(seqs)), "following with `since` neither skips nor repeats"

    scalars = client.get(f"/jobs/{job_id}/metrics").json()["runs"]
    assert "global_step/sec" in scalars["train"]
    assert scalars["train"]["global_step/sec"][-1]["step"] > 0
    assert {"acc_1", "acc_2", "loss"} <= set(scalars["eval"])
    assert scalars["eval"]["acc_1"][-1]["step"] == MAX_STEPS


def test_unknown_jobs_have_no_logs_or_metrics(client) -> None:
    assert client.get("/jobs/nope/logs").status_code == 404
    assert client.get("/jobs/nope/metrics").status_code == 404
