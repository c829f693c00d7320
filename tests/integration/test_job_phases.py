"""What a job promises in each of its phases, with a real worker process, real Redis and
real TensorFlow: a cancel in any phase ends the job cancelled there, a cancel that
reaches the store before the end wins over `succeeded`, a verification mismatch fails
the job `export_mismatch` and publishes nothing, and a queued job whose broker message
was lost is sent again by the reconciler.

The jobs use the test-only plugin tests/integration/phase_plugin.py (through
K2E_PLUGINS, as an operator's plugin): its PausePoint layer holds a job at the start of a
chosen phase until the test has cancelled it, and its Jitter layer makes the Estimator's
predictions and the exported SavedModel's differ.
"""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.integration.phase_plugin import Jitter, PausePoint  # noqa: E402
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.fault_deployment import Env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLUGIN = Path(__file__).with_name("phase_plugin.json")
# worker/phases.py's phases, in the order a job with training, evaluation and an export
# goes through them.
PHASES = [
    "building the model",
    "loading the training data",
    "training",
    "loading the evaluation data",
    "evaluating",
    "exporting",
    "verifying the export",
]


class PhaseEnv:
    """A deployment (tests/integration/test_faults.py's Env) whose worker loads the
    test plugin, with a small model holding a PausePoint or a Jitter layer."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, **tunables: float) -> None:
        self.pause_dir = root / "pause"
        self.pause_dir.mkdir()
        monkeypatch.setenv("K2E_PLUGINS", str(PLUGIN))  # the worker process's settings
        monkeypatch.setenv("K2E_TEST_PAUSE_DIR", str(self.pause_dir))
        self.env = Env(root, plugins=str(PLUGIN), **tunables)
        self.models = {name: self._model(name, layer) for name, layer in LAYERS.items()}
        arrays = {"x": np.random.default_rng(0).normal(size=(64, 4)).astype("float32")}
        arrays["y"] = arrays["x"].sum(axis=1, keepdims=True)
        self.data = self.env.upload("/datasets", "xy.npz", keras_models.npz_bytes(arrays))

    def _model(self, name: str, layer: type) -> str:
        x = tf.keras.Input((4,), name="x")
        model = tf.keras.Model(x, tf.keras.layers.Dense(1, name="y")(layer(name="mid")(x)))
        model.compile("sgd", "mse")
        path = self.env.root / f"{name}.h5"
        with tf.keras.utils.custom_object_scope({name: layer}):
            model.save(path, save_format="h5")
        return self.env.upload("/models", f"{name}.h5", path.read_bytes())

    def submit(self, layer: str = "PausePoint") -> str:
        spec = {
            "keras_model_path": self.models[layer],
            "custom_objects": {layer: REGISTRY[layer]},
            "train": {"dataset": self.data, "max_steps": 5, "batch_size": 16},
            "eval": {"dataset": self.data, "steps": 1, "batch_size": 16},
        }
        response = self.env.client.post("/convert", json=spec)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def pause(self, phase: str, until: str) -> None:
        (self.pause_dir / "pause").write_text(f"{phase}\n{until}")

    def wait_paused(self, job_id: str, timeout: float = 240) -> str:
        """The phase the job is held in, once it is."""
        paused = self.pause_dir / "paused"
        deadline = time.monotonic() + timeout
        while not paused.exists():
            job = self.env.job(job_id)
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, f"job {job_id} never paused: {job}"
            time.sleep(0.05)
        seen_id, phase = paused.read_text().split(" ", 1)
        paused.unlink()
        assert seen_id == job_id
        return phase

    def log_text(self, job_id: str) -> str:
        return "\n".join(e["message"] for e in self.env.events(job_id))

    def no_export(self, job: dict) -> None:
        """Nothing published: no SavedModel folder, no recorded check, downloads 404."""
        assert self.env.exports(job) == []
        assert not (self.env.model_dir(job) / "export-staging").exists()
        assert job["export"] is None
        download = self.env.client.get(f"/jobs/{job['id']}/savedmodel")
        assert download.status_code == 404, download.text


LAYERS = {"PausePoint": PausePoint, "Jitter": Jitter}
REGISTRY = {"PausePoint": "k2e_test_pause", "Jitter": "k2e_test_jitter"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhaseEnv]:
    """Cancels are seen within a heartbeat (0.5 s); a job not stopped half a second
    later is interrupted."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        deployment = PhaseEnv(
            tmp_path_factory.mktemp("phases"),
            monkeypatch,
            lease_s=5.0,
            heartbeat_s=0.5,
            reconcile_interval_s=1.0,
            job_stop_grace_s=0.5,
        )
        try:
            deployment.env.worker()
            yield deployment
        finally:
            deployment.env.close()


@pytest.mark.parametrize("phase", PHASES)
def test_a_cancel_in_each_phase_ends_the_job_cancelled_in_that_phase(
    quick: PhaseEnv, phase: str
) -> None:
    quick.pause(phase, "interrupted")
    job_id = quick.submit()
    assert quick.wait_paused(job_id) == phase
    response = quick.env.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelling"
    ended = wait_for_job(quick.env.client, job_id, timeout=120)
    assert ended["status"] == "cancelled", ended
    logs = quick.log_text(job_id)
    assert f"cancel requested while {phase}" in logs, logs
    assert f"stopped while {phase}" in logs, logs
    quick.no_export(ended)


def test_a_verification_mismatch_fails_the_job_and_publishes_nothing(quick: PhaseEnv) -> None:
    job_id = quick.submit("Jitter")
    ended = wait_for_job(quick.env.client, job_id, timeout=240)
    assert ended["status"] == "failed", ended
    assert ended["error"]["reason"] == "export_mismatch", ended["error"]
    assert ended["error"]["type"] == "ExportMismatch"
    assert "K2E_EXPORT_TOLERANCE" in ended["error"]["message"]
    # Up to 1.0 of noise on 16 evaluation examples, against a tolerance of 1e-4.
    differs = re.search(
        r"differ from the model's by up to (\S+) on (\d+) eval", ended["error"]["message"]
    )
    assert differs is not None, ended["error"]["message"]
    assert float(differs.group(1)) > 1e-2
    assert differs.group(2) == "16"  # the evaluation's batch: the export was run
    assert ended["progress"]["global_step"] == 5
    quick.no_export(ended)


@pytest.fixture(scope="module")
def slow_beat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PhaseEnv, str]]:
    """A worker whose heartbeat does not beat during a job (every 120 s) and that does not
    read its job's row between beats: only the job store knows of a cancel until the job
    ends. Before the worker starts, one job's
    broker message is lost (its queue deleted from Redis); the reconciler sends a queued
    job again once it has waited past the visibility timeout (3 s here)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        deployment = PhaseEnv(
            tmp_path_factory.mktemp("slow-beat"),
            monkeypatch,
            lease_s=300.0,
            heartbeat_s=120.0,
            control_poll_s=120.0,  # no reads of the job's row between the renewals
            reconcile_interval_s=1.0,
            visibility_timeout_s=3,
        )
        try:
            lost = deployment.submit()
            broker = redis.Redis.from_url(deployment.env.redis.url)
            waiting = broker.lrange("cpu", 0, -1)
            assert [lost.encode() in m for m in waiting] == [True], waiting
            assert broker.delete("cpu") == 1
            broker.close()
            deployment.env.worker()
            yield deployment, lost
        finally:
            deployment.env.close()


def test_the_reconciler_sends_a_queued_job_whose_message_was_lost(
    slow_beat: tuple[PhaseEnv, str],
) -> None:
    deployment, lost = slow_beat
    # Sent again at the worker's first reconcile round, a second after it started.
    done = wait_for_job(deployment.env.client, lost, timeout=90)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1
    [worker] = deployment.env.workers
    assert f"job {lost}: queued for long; sending it again" in worker.log


def test_a_cancel_that_reaches_the_store_before_the_end_wins_over_succeeded(
    slow_beat: tuple[PhaseEnv, str],
) -> None:
    """Held at "verifying the export" until the store says cancelling: the worker itself
    never hears of the cancel (no heartbeat, no training step after it), passes every
    later check and would end `succeeded`; the store's cancel wins."""
    deployment, lost = slow_beat
    wait_for_job(deployment.env.client, lost, timeout=240)  # the worker is free
    deployment.pause("verifying the export", "cancelling")
    job_id = deployment.submit()
    assert deployment.wait_paused(job_id) == "verifying the export"
    response = deployment.env.client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    ended = wait_for_job(deployment.env.client, job_id, timeout=120)
    assert ended["status"] == "cancelled", ended
    logs = deployment.log_text(job_id)
    assert "cancel requested while" not in logs, logs
    assert "stopped while" not in logs, logs
    assert ended["progress"]["global_step"] == 5
