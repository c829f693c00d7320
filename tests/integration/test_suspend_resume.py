"""Suspend, resume and preemption with a real worker process, real Redis and real
TensorFlow: a job suspended in any phase gives its worker back and, resumed, ends at
exactly its max_steps from the checkpoint it saved when it stopped (no step trained
twice); a preempted job is queued again, counted, and goes on the same way; a worker
killed while suspending loses nothing and runs nothing twice.

The phase tests hold a job at the start of a phase with the test plugin's PausePoint
(tests/integration/phase_plugin.py, mode ``yielding``) until the worker has heard of
the suspend.
"""

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from k2e.jobs.job_store import JobStore
from k2e.tables import jobs
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.integration.test_job_phases import PhaseEnv  # noqa: E402  (needs TensorFlow)
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESTORING = re.compile(r"Restoring parameters from (.+)-(\d+)\s*$")
SUSPENDED_AT = re.compile(r"^suspended at step (\d+)$")
PREEMPTED_AT = re.compile(r"^preempted: queued again, it resumes from step (\d+)$")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhaseEnv]:
    """One worker that loads the test plugin; yield requests are seen within a heartbeat
    (0.5 s). The stop grace stays long: a job saving its checkpoint is not interrupted."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        env = PhaseEnv(
            tmp_path_factory.mktemp("suspend"),
            monkeypatch,
            lease_s=5.0,
            heartbeat_s=0.5,
            reconcile_interval_s=1.0,
        )
        try:
            env.env.worker()
            yield env
        finally:
            env.env.close()


def _status(env: Env, job_id: str, wanted: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = env.job(job_id)
        if job["status"] == wanted:
            return job
        assert job["status"] not in ("succeeded", "failed", "cancelled"), job
        assert time.monotonic() < deadline, f"job {job_id} never {wanted}: {job}"
        time.sleep(0.1)


def _checkpoints(env: Env, job_id: str) -> list[int]:
    return [c["step"] for c in env.client.get(f"/jobs/{job_id}/checkpoints").json()]


def _newest_checkpoint(env: Env, job: dict) -> int:
    path = tf.train.latest_checkpoint(str(env.model_dir(job)))
    return int(path.rsplit("-", 1)[1]) if path else 0


def _restored_after(env: Env, job_id: str, start: int) -> list[int]:
    """The steps TensorFlow restored after the job's ``start``-th `running` event."""
    events = env.events(job_id)
    starts = [i for i, e in enumerate(events) if e["kind"] == "running"]
    assert len(starts) > start, [e for e in events if e["kind"] != "log"]
    return [
        int(m.group(2))
        for e in events[starts[start] :]
        if e["kind"] == "log" and (m := RESTORING.search(e["message"]))
    ]


def _loss_steps(job: dict) -> list[int]:
    return [point["step"] for point in job["metrics"]["train"]]


def _ends_whole(env: Env, job_id: str, max_steps: int) -> dict:
    """Resumed: it succeeds at exactly max_steps, evaluated and exported once, with its
    checkpoints and loss curve in step order."""
    done = wait_for_job(env.client, job_id, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["global_step"] == max_steps
    assert done["metrics"]["eval"]["global_step"] == max_steps
    assert len(env.exports(done)) == 1
    steps = _checkpoints(env, job_id)
    assert steps == sorted(steps), steps
    assert steps[-1] == max_steps, steps
    curve = _loss_steps(done)
    assert curve == sorted(set(curve)), curve
    assert curve[-1] <= max_steps, curve
    return done


@pytest.mark.parametrize("phase", ["building the model", "loading the training data", "evaluating"])
def test_a_suspend_in_a_phase_suspends_there_and_resume_ends_at_max_steps(
    deployment: PhaseEnv, phase: str
) -> None:
    env = deployment.env
    deployment.pause(phase, "yielding")
    job_id = deployment.submit()
    assert deployment.wait_paused(job_id) == phase
    response = env.client.post(f"/jobs/{job_id}/suspend")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"
    suspended = _status(env, job_id, "suspended")
    logs = deployment.log_text(job_id)
    assert f"asked to yield (suspend) while {phase}" in logs, logs
    assert f"stopped while {phase}" in logs, logs
    [note] = [e["message"] for e in env.events(job_id) if e["kind"] == "suspended"]
    at = int(SUSPENDED_AT.match(note).group(1))  # type: ignore[union-attr]
    trained = 5 if phase == "evaluating" else 0
    assert at == suspended["progress"]["global_step"] == trained
    assert suspended["metrics"]["eval"] == {}
    deployment.no_export(suspended)
    # The worker is free: nothing of the job is in the broker or on it.
    assert env.broker_queue("cpu") == []
    resumed = env.client.post(f"/jobs/{job_id}/resume")
    assert resumed.status_code == 202, resumed.text
    done = _ends_whole(env, job_id, 5)
    assert done["attempts"] == 1  # the yielded attempt was given back
    if phase == "evaluating":
        # Trained to the end before the suspend: the resumed attempt trains nothing.
        assert "the model_dir is at step 5: no training" in deployment.log_text(job_id)


def test_a_job_suspended_in_the_broker_is_suspended_as_its_worker_takes_it(
    tmp_path: Path,
) -> None:
    """With no live worker for its queue the scheduler hands a job to the broker, where
    it waits; suspended there, it is suspended by the first worker that takes it, before
    that worker loads or builds anything."""
    env = Env(tmp_path, **FAST_RECOVERY)
    try:
        waiting = _long_job(env, 50)
        assert env.job(waiting)["status"] == "queued"
        assert len(env.broker_queue("cpu")) == 1  # handed over: no worker is live yet
        response = env.client.post(f"/jobs/{waiting}/suspend")
        assert response.status_code == 202
        assert response.json()["status"] == "queued"  # the worker has it to do
        env.worker()
        suspended = _status(env, waiting, "suspended")
        assert suspended["progress"]["global_step"] == 0
        assert env.broker_queue("cpu") == []
        messages = [e["message"] for e in env.events(waiting) if e["kind"] == "log"]
        assert not [m for m in messages if "loading" in m or "building" in m], messages
        assert env.client.post(f"/jobs/{waiting}/resume").status_code == 202
        assert _ends_whole(env, waiting, 50)["attempts"] == 1
    finally:
        env.close()


def _long_job(env: Env, max_steps: int) -> str:
    spec = {
        "keras_model_path": env.model,
        "config": {"save_checkpoints_steps": 200, "log_step_count_steps": 50},
        "train": {"dataset": env.data, "max_steps": max_steps, "batch_size": 64},
        "eval": {"dataset": env.data, "steps": 2},
    }
    response = env.client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture
def training(tmp_path: Path) -> Iterator[Env]:
    """A deployment of its own with the seed model: training long enough to be caught
    between two interval checkpoints."""
    env = Env(tmp_path, **FAST_RECOVERY)
    try:
        env.worker()
        yield env
    finally:
        env.close()


def test_a_suspend_while_training_checkpoints_at_the_step_it_stopped(training: Env) -> None:
    """Then Redis restarts; resumed, the job restores exactly that step."""
    env = training
    job_id = _long_job(env, 1500)
    seen = env.wait_step(job_id, 300)
    assert seen["status"] == "running", seen
    assert env.client.post(f"/jobs/{job_id}/suspend").status_code == 202
    suspended = _status(env, job_id, "suspended")
    at = suspended["progress"]["global_step"]
    # A checkpoint of its own at the step it stopped, whatever the interval (200).
    assert _newest_checkpoint(env, suspended) == at
    print(f"\nsuspended at step {at}; checkpoints {_checkpoints(env, job_id)}")
    assert 300 <= at < 1500
    assert env.transitions(job_id)[-1] == "suspended"
    before = _loss_steps(suspended)
    # Redis restarted while it is suspended: nothing of it is in the broker to lose.
    assert not any(job_id.encode() in m for m in env.broker_queue("cpu"))
    env.redis.stop()
    env.redis.start()
    assert env.broker_queue("cpu") == []
    assert env.client.post(f"/jobs/{job_id}/resume").status_code == 202
    done = _ends_whole(env, job_id, 1500)
    # Steps redone: 0. The second attempt restored exactly the step it stopped at.
    assert _restored_after(env, job_id, 1)[0] == at
    assert _loss_steps(done)[: len(before)] == before


def test_a_preempted_job_is_queued_again_and_goes_on_from_where_it_stopped(
    training: Env,
) -> None:
    """The scheduler's decision, made by hand: ``yield_request = 'preempt'`` on the row."""
    env = training
    job_id = _long_job(env, 1500)
    assert env.wait_step(job_id, 300)["status"] == "running"
    store = JobStore(env.settings.sqlalchemy_url)
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(yield_request="preempt"))
    store.engine.dispose()
    done = _ends_whole(env, job_id, 1500)
    assert done["preemptions"] == 1
    assert done["attempts"] == 1
    events = env.events(job_id)
    [note] = [e["message"] for e in events if PREEMPTED_AT.match(e["message"])]
    at = int(PREEMPTED_AT.match(note).group(1))  # type: ignore[union-attr]
    assert 300 <= at < 1500
    kinds = [e["kind"] for e in events if e["kind"] != "log"]
    assert kinds == ["queued", "running", "queued", "running", "succeeded"], kinds
    # Steps redone: 0. It never names who it yielded to.
    assert _restored_after(env, job_id, 1)[0] == at
    print(f"\npreempted at step {at}, restored from {at}: {kinds}")
    assert "tenant" not in note
    assert "job" not in note


def test_a_worker_killed_while_suspending_leaves_the_job_suspended_once(tmp_path: Path) -> None:
    """Two workers; the one running the job is killed right after the suspend: the job
    is suspended (by its worker, or by the other's reconciler once the lease ran out),
    never lost, never run twice; resumed, it ends at exactly max_steps."""
    env = Env(tmp_path, **FAST_RECOVERY)
    try:
        workers = [env.worker(), env.worker()]
        job_id = _long_job(env, 1500)
        assert env.wait_step(job_id, 300)["status"] == "running"
        [owner] = env.owners(job_id)
        group = os.getpgid(int(owner.rsplit(":", 2)[1]))
        [running] = [w for w in workers if w.process is not None and w.process.pid == group]
        assert env.client.post(f"/jobs/{job_id}/suspend").status_code == 202
        running.kill_hard()
        suspended = _status(env, job_id, "suspended", timeout=60)
        time.sleep(2 * FAST_RECOVERY["lease_s"])  # any later round changes nothing
        assert env.job(job_id)["status"] == "suspended"
        checkpoint = _newest_checkpoint(env, suspended)
        assert env.client.post(f"/jobs/{job_id}/resume").status_code == 202
        done = _ends_whole(env, job_id, 1500)
        restored = _restored_after(env, job_id, 1)[0]
        assert restored == checkpoint  # the newest checkpoint the killed worker left
        assert len(env.owners(job_id)) == 2  # one attempt before, one after: no copy
        print(f"\nkilled while suspending: {env.transitions(job_id)}; resumed from {restored}")
        assert done["progress"]["global_step"] == 1500
    finally:
        env.close()
