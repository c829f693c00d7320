"""A job's memory bound and cancels in every phase, with real worker processes.

The datasets here are compressed ``.npz`` files of zeros: a few hundred kilobytes to
upload, gigabytes of examples once read. The worker streams them, so a job outgrows its
worker by what it asks to hold: a shuffle buffer of up to K2E_MAX_SHUFFLE_BUFFER examples.
"""

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A worker process with TensorFlow loaded and a small job run holds ~0.5-0.8 GB here.
SMALL_BOUND = 1_400 * 1024**2


def big_npz(rows: int) -> bytes:
    """The seed multi-IO model's arrays, all zeros: rows * 148 bytes once loaded."""
    arrays = {
        "input_a": np.zeros((rows, 16), "float32"),
        "input_b": np.zeros((rows, 16), "float32"),
        "dense_2": np.zeros((rows, 3), "float32"),
        "dense_3": np.zeros((rows, 2), "float32"),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def submit_on(
    env: Env, dataset: str, max_steps: int = 20, shuffle_buffer: int = 10_000, **extra: object
) -> dict:
    train = {"dataset": dataset, "max_steps": max_steps, "batch_size": 64}
    spec = {
        "keras_model_path": env.model,
        "config": {"save_checkpoints_steps": 200, "log_step_count_steps": 10},
        "train": {**train, "shuffle_buffer": shuffle_buffer},
        **extra,
    }
    response = env.client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    # The datasets are zeros compressed ~1000 times: past the default inflation ratio, which
    # these tests lift (for the API and the workers) to reach the worker's memory bound.
    # A lease of 15 s, not FAST_RECOVERY's 3: a worker process past its memory bound
    # thrashes, and its last write (the job's out_of_memory end) must land before the
    # reconciler takes the lease for a dead worker's (seen at 3 s on 2 loaded cores).
    deployment = Env(
        tmp_path,
        **{**FAST_RECOVERY, "lease_s": 15.0},
        job_stop_grace_s=2.0,
        max_attempts=3,
        max_inflation_ratio=100_000,
    )
    yield deployment
    deployment.close()


def stop_phases(env: Env, job_id: str, worker_log: str) -> list[str]:
    """Where the worker saw the cancel and where the job stopped (its logs)."""
    text = "\n".join(e["message"] for e in env.events(job_id)) + worker_log
    return re.findall(r"(?:cancel requested|stopped) while ([a-z ]+)", text)


def wait_status(env: Env, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = env.job(job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {statuses}: {env.job(job_id)}")


WIDE = 256  # floats per example of the hungry job's data: ~1.3 KB in a shuffle buffer


def wide_model_and_data(env: Env, rows: int) -> tuple[str, str]:
    x = tf.keras.Input((WIDE,), name="x")
    model = tf.keras.Model(x, tf.keras.layers.Dense(1, name="y")(x))
    model.compile(optimizer="sgd", loss="mse")
    h5 = keras_models.save_h5(model, env.root / "wide.h5")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((rows, WIDE), "float32"), y=np.zeros(rows, "float32"))
    return (
        env.upload("/models", "wide.h5", h5.read_bytes()),
        env.upload("/datasets", "wide.npz", buffer.getvalue()),
    )


@pytest.mark.parametrize(
    "shuffle_buffer",
    [
        # ~1.1 GB of examples held: past the bound, the job is stopped while its first
        # step fills the buffer (or, on a loaded machine, killed as below).
        850_000,
        # ~1.3 GB, within seconds: past 1.25 times the bound the watchdog records
        # out_of_memory and kills the process (as for an allocation in C++); Celery's
        # pool replaces it and the redelivered task finds the job ended.
        1_000_000,
    ],
)
def test_job_past_its_memory_bound_ends_out_of_memory_and_worker_takes_next(
    env: Env, shuffle_buffer: int
) -> None:
    model, big = wide_model_and_data(env, 1_000_000)
    env.settings = env.settings.model_copy(update={"job_memory_bytes": SMALL_BOUND})
    worker = env.worker()
    spec = {
        "keras_model_path": model,
        "train": {"dataset": big, "max_steps": 20, "shuffle_buffer": shuffle_buffer},
    }
    response = env.client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    hungry = response.json()
    small = env.submit(max_steps=30)
    started = time.monotonic()
    ended = wait_for_job(env.client, hungry["id"], timeout=240)
    print(f"\nout_of_memory job ended after {time.monotonic() - started:.1f} s")
    assert ended["status"] == "failed", ended
    assert ended["error"]["reason"] == "out_of_memory", ended["error"]
    assert "K2E_JOB_MEMORY_BYTES" in ended["error"]["message"]
    done = wait_for_job(env.client, small["id"], timeout=240)
    assert done["status"] == "succeeded", done
    # Never retried into the same wall: one attempt, still failed after a reconcile round.
    time.sleep(3 * FAST_RECOVERY["reconcile_interval_s"])
    again = env.job(hungry["id"])
    assert again["status"] == "failed", again
    assert again["attempts"] == 1, again
    assert env.running_events(hungry["id"]) == 1
    path = "killed" if "ending the job and this worker process" in worker.log else "interrupted"
    peak = re.findall(r"peak worker memory (\d+) bytes", worker.log)
    print(f"the job was {path}; bound {SMALL_BOUND} bytes; peaks seen {peak}")


def test_cancel_while_filling_a_large_shuffle_buffer_ends_cancelled(env: Env) -> None:
    # 12M rows (~1.8 GB, streamed); the first step waits for 1M examples to shuffle.
    big = env.upload("/datasets", "huge.npz", big_npz(12_000_000))
    worker = env.worker()
    job = submit_on(env, big, shuffle_buffer=1_000_000)
    wait_status(env, job["id"], ("running",))
    time.sleep(0.5)
    asked = time.monotonic()
    response = env.client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code in (200, 202), response.text
    ended = wait_for_job(env.client, job["id"], timeout=120)
    took = time.monotonic() - asked
    phase = stop_phases(env, job["id"], worker.log)
    print(f"\ncancel while {phase}: ended {ended['status']} {took:.1f} s after the request")
    assert ended["status"] == "cancelled", ended
    assert took < 60, took


def test_cancel_during_evaluation_or_export_ends_cancelled(env: Env) -> None:
    """Cancelled once training has ended: evaluation over 400k rows (a few seconds) stops
    at its next step (StopHook), or the phase check after it or the check before the
    export is published ends the job cancelled."""
    slow_eval = env.upload("/datasets", "eval.npz", big_npz(400_000))
    worker = env.worker()
    spec_eval = {"dataset": slow_eval, "batch_size": 16}
    job = submit_on(env, env.data, max_steps=40, eval=spec_eval)
    wait_status(env, job["id"], ("running",))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        # TensorFlow logs this as training ends (the job's logs flush every heartbeat).
        if any("Loss for final step" in e["message"] for e in env.events(job["id"])):
            break
        time.sleep(0.1)
    current = env.job(job["id"])
    assert current["status"] == "running", current
    response = env.client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code in (200, 202), response.text
    ended = wait_for_job(env.client, job["id"], timeout=120)
    phase = stop_phases(env, job["id"], worker.log)
    print(f"\ncancelled while {phase}: ended {ended['status']}")
    assert ended["status"] == "cancelled", ended
    assert "training" not in phase, phase


def deep_model_h5(path: Path, depth: int = 100) -> bytes:
    """A plain MLP ``depth`` layers deep: small, but each graph the Estimator builds for it
    (training, export) takes seconds, which gives a cancel time to reach the export."""
    x = tf.keras.Input((4,), name="x")
    hidden = x
    for _ in range(depth):
        hidden = tf.keras.layers.Dense(8, activation="relu")(hidden)
    model = tf.keras.Model(x, tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile("sgd", "mse")
    model.save(path, save_format="h5")
    return path.read_bytes()


def test_cancel_during_export_ends_cancelled_with_no_export(env: Env, tmp_path: Path) -> None:
    """The cancel is sent as soon as the worker logs that the job is exporting (a 100-layer
    model's export takes a few seconds here); the heartbeat sees it within 0.5 s. The job
    ends cancelled, publishes no SavedModel and leaves no staging folder behind, and the
    worker takes the next job."""
    model = env.upload("/models", "deep.h5", deep_model_h5(tmp_path / "deep.h5"))
    arrays = {"x": np.zeros((64, 4), "float32"), "y": np.zeros((64, 1), "float32")}
    data = env.upload("/datasets", "deep.npz", keras_models.npz_bytes(arrays))
    worker = env.worker()
    spec = {"keras_model_path": model, "train": {"dataset": data, "max_steps": 2, "batch_size": 16}}
    response = env.client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    marker = f"job {job_id}: exporting"
    deadline = time.monotonic() + 300
    while marker not in worker.log:
        assert time.monotonic() < deadline, f"the job never started exporting: {env.job(job_id)}"
        assert env.job(job_id)["status"] in ("queued", "running"), env.job(job_id)
        time.sleep(0.05)
    asked = time.monotonic()
    response = env.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    ended = wait_for_job(env.client, job_id, timeout=120)
    took = time.monotonic() - asked
    phases = stop_phases(env, job_id, worker.log)
    print(f"\ncancelled while {phases}: ended {ended['status']} {took:.1f} s after the request")
    assert ended["status"] == "cancelled", ended
    assert phases, "the worker logged neither the cancel nor where the job stopped"
    assert set(phases) <= {"exporting", "verifying the export"}, phases
    assert env.exports(ended) == []
    assert not (env.model_dir(ended) / "export-staging").exists()
    assert env.client.get(f"/jobs/{job_id}/savedmodel").status_code == 404
    assert ended["progress"]["global_step"] == 2
    following = env.submit(max_steps=5)
    done = wait_for_job(env.client, following["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert len(env.exports(done)) == 1
