"""The job lifecycle under faults, with real processes and real signals.

Each test here runs its own Redis (with AOF, so it can be restarted), its own
job store and its own worker processes, with short leases so that recovery
happens within seconds. The figures they print are the recovery bounds
docs/operations.md quotes.
"""

import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from k2e.launcher.embedded_redis import free_port
from k2e.launcher.stack import api_command
from tests.support.api_keys import ADMIN
from tests.support.checkout import ROOT
from tests.support.child_processes import die_with_the_suite, stop_group
from tests.support.job_polling import wait_for_job
from tests.support.postgres import fresh_postgres_database
from tests.support.worker_process import worker_env

tf = pytest.importorskip("tensorflow")
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402  (needs TensorFlow)

# Each test once on SQLite and once on a fresh PostgreSQL database (docker compose's store).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.stores("sqlite", "postgres")]

# What a loaded 2-core machine may add to a bound made of the settings above: a reconcile
# round's own queries, a thread scheduled late.
SCHEDULING_SLACK_S = 1.5
# TensorFlow's Saver, as captured into the job's logs: the checkpoint an attempt resumes from.
RESTORING = re.compile(r"Restoring parameters from (.+)-(\d+)\s*$")


@pytest.fixture
def database_url(store_backend: str) -> Iterator[str | None]:
    """The job store of the test's deployment: None (SQLite in its data folder) or a
    fresh PostgreSQL database."""
    if store_backend == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def env(tmp_path: Path, database_url: str | None) -> Iterator[Env]:
    deployment = Env(tmp_path, database_url, **FAST_RECOVERY)
    try:
        yield deployment
    finally:
        deployment.close()


def latest_checkpoint_step(model_dir: str) -> int:
    """The step of the checkpoint the `checkpoint` state file names (what a restart
    restores), 0 when there is none."""
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else 0


@pytest.mark.parametrize("kill_at", [600, 1800])
def test_kill_9_mid_training_resumes_on_a_new_worker(env: Env, kill_at: int) -> None:
    # Two workers: the job runs on one, the other is idle; its reconciler hands the job
    # back to the queue once the dead worker's lease has run out, and it runs it.
    workers = [env.worker(), env.worker()]
    job = env.submit(max_steps=3000)
    seen = env.wait_step(job["id"], kill_at)
    assert seen["status"] == "running", seen
    [owner] = env.owners(job["id"])
    group = os.getpgid(int(owner.rsplit(":", 2)[1]))
    [first] = [w for w in workers if w.process is not None and w.process.pid == group]
    # The newest complete checkpoint at the kill: the state file is replaced atomically
    # after a checkpoint's files are written, and only ever moves forward.
    saved_before_kill = latest_checkpoint_step(str(env.model_dir(seen)))
    first.kill_hard()
    killed_at = datetime.now(UTC)
    assert saved_before_kill > 0, "the first attempt should have checkpointed by now"
    done = wait_for_job(env.client, job["id"], timeout=300)
    recovered = (datetime.now(UTC) - killed_at).total_seconds()
    print(f"\nkill -9 at step {seen['progress']['global_step']}: succeeded {recovered:.1f}s later")
    # Recovery within the lease and a reconcile round: the lease ran out lease_s after the
    # dead worker's last heartbeat, and the live worker's reconciler requeued the job at
    # its next round (every reconcile_interval_s), not before the lease had run out.
    [requeued] = [e for e in env.events(job["id"]) if e["message"] == "requeued: worker_lost"]
    after = (datetime.fromisoformat(requeued["at"]) - killed_at).total_seconds()
    lease, interval = FAST_RECOVERY["lease_s"], FAST_RECOVERY["reconcile_interval_s"]
    print(f"requeued {after:.2f}s after the kill (lease {lease}s, reconcile every {interval}s)")
    assert lease / 2 <= after <= lease + interval + SCHEDULING_SLACK_S, after
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["global_step"] == 3000
    assert done["metrics"]["eval"]["global_step"] == 3000
    assert done["attempts"] == 2
    assert len(env.exports(done)) == 1
    steps = [c["step"] for c in env.client.get(f"/jobs/{job['id']}/checkpoints").json()]
    assert steps[-1] == 3000
    # The second attempt restored the newest checkpoint the first one wrote (or a newer
    # one it finished writing as it died), not step 0 or an older checkpoint: the first
    # checkpoint TensorFlow restores after the second `running` event is training's.
    events = env.events(job["id"])
    starts = [i for i, e in enumerate(events) if e["kind"] == "running"]
    assert len(starts) == 2, [e for e in events if e["kind"] != "log"]
    restored = [
        (m.group(1), int(m.group(2)))
        for e in events[starts[1] :]
        if e["kind"] == "log" and (m := RESTORING.search(e["message"]))
    ]
    assert restored, "the second attempt restored no checkpoint:\n" + "\n".join(
        e["message"] for e in events[starts[1] :]
    )
    prefix, resumed_from = restored[0]
    print(f"checkpoint at the kill: {saved_before_kill}; resumed from: {resumed_from}")
    assert Path(prefix) == env.model_dir(done) / "model.ckpt", prefix
    assert saved_before_kill <= resumed_from < 3000, (saved_before_kill, resumed_from)


def test_a_poison_job_ends_failed_with_max_attempts(
    tmp_path: Path, database_url: str | None
) -> None:
    env = Env(tmp_path, database_url, max_attempts=1, **FAST_RECOVERY)
    try:
        first = env.worker()
        job = env.submit(max_steps=3000)
        env.wait_step(job["id"], 200)
        first.kill_hard()
        env.worker()
        done = wait_for_job(env.client, job["id"], timeout=120)
        assert done["status"] == "failed"
        assert done["error"]["reason"] == "max_attempts"
        assert done["attempts"] == 1
    finally:
        env.close()


def test_a_job_outliving_the_visibility_timeout_runs_once(
    tmp_path: Path, database_url: str | None
) -> None:
    env = Env(tmp_path, database_url, visibility_timeout_s=2, **FAST_RECOVERY)
    try:
        env.worker()
        env.worker()  # an idle second worker that would take a redelivered message
        job = env.submit(max_steps=6000)
        done = wait_for_job(env.client, job["id"], timeout=300)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 1
        assert env.running_events(job["id"]) == 1
        assert len(env.exports(done)) == 1
        skipped = sum(w.log.count("leased by a live worker") for w in env.workers)
        print(f"\nredelivered copies refused by the lease: {skipped}")
        assert skipped >= 1, "the visibility timeout should have redelivered the message"
    finally:
        env.close()


def test_cancel_while_queued_never_runs(env: Env) -> None:
    job = env.submit(max_steps=100, accelerator="gpu")  # nobody consumes `gpu` yet
    assert job["queue"] == "gpu"
    cancelled = env.client.post(f"/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    worker = env.worker(queues="gpu")
    deadline = time.monotonic() + 30
    while f"job {job['id']} is cancelled: not running it" not in worker.log:
        assert time.monotonic() < deadline, "the worker never received the cancelled job"
        time.sleep(0.2)
    final = env.job(job["id"])
    assert final["status"] == "cancelled"
    assert final["attempts"] == 0


def test_cancel_while_running_stops_saves_and_the_worker_goes_on(env: Env) -> None:
    worker = env.worker()
    job = env.submit(max_steps=1_000_000)
    env.wait_step(job["id"], 300)
    asked = time.monotonic()
    response = env.client.post(f"/jobs/{job['id']}/cancel")
    assert response.json()["status"] in ("cancelling", "cancelled")
    done = wait_for_job(env.client, job["id"], timeout=60)
    took = time.monotonic() - asked
    print(f"\ncancel to cancelled: {took:.2f}s")
    assert done["status"] == "cancelled"
    assert took < 10
    final_step = done["progress"]["global_step"]
    assert 300 <= final_step < 1_000_000
    checkpoints = env.client.get(f"/jobs/{job['id']}/checkpoints").json()
    assert checkpoints[-1]["step"] == final_step, "a final checkpoint is saved on cancel"
    # The same worker process takes the next job.
    pid = worker.process.pid
    nxt = wait_for_job(env.client, env.submit(max_steps=50)["id"], timeout=120)
    assert nxt["status"] == "succeeded"
    assert worker.process.poll() is None
    assert worker.process.pid == pid


def test_timeout_ends_failed_timed_out_with_a_checkpoint(env: Env) -> None:
    env.worker()
    job = env.submit(max_steps=1_000_000, timeout_s=4)
    done = wait_for_job(env.client, job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["reason"] == "timed_out"
    checkpoints = env.client.get(f"/jobs/{job['id']}/checkpoints").json()
    assert checkpoints
    assert checkpoints[-1]["step"] == done["progress"]["global_step"] > 0


def test_gpu_jobs_route_to_the_gpu_queue_and_run_there(env: Env) -> None:
    cpu = env.worker(queues="cpu")
    gpu_job = env.submit(max_steps=30, accelerator="gpu")
    assert gpu_job["queue"] == "gpu"
    # A cpu job sent after it runs to the end on the idle cpu worker, while the gpu job
    # stays queued, its message still in the broker's `gpu` list: a cpu worker that
    # took from `gpu` (it waits on its queues while idle) or a gpu job sent to `cpu`
    # (served first in first out) would have run the gpu job first.
    cpu_job = env.submit(max_steps=30)
    assert cpu_job["queue"] == "cpu"
    first = wait_for_job(env.client, cpu_job["id"], timeout=120)
    assert first["status"] == "succeeded", first["error"]
    waiting = env.job(gpu_job["id"])
    assert waiting["status"] == "queued", "a cpu-only worker must not take it"
    assert waiting["attempts"] == 0
    assert env.transitions(gpu_job["id"]) == ["queued"]
    assert [gpu_job["id"].encode() in m for m in env.broker_queue("gpu")] == [True]
    assert gpu_job["id"] not in cpu.log

    gpu = env.worker(queues="gpu")
    done = wait_for_job(env.client, gpu_job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["queue"] == "gpu"
    assert done["attempts"] == 1
    # Which worker ran each job: the lease owner (host:pid:nonce) of its `running` event
    # is a pool process of that worker (its own process group: start_new_session), and
    # that worker, alone, logged the attempt in its own log file.
    for job_id, ran, other in ((gpu_job["id"], gpu, cpu), (cpu_job["id"], cpu, gpu)):
        [owner] = env.owners(job_id)
        pid = int(owner.rsplit(":", 2)[1])
        assert ran.process is not None
        assert other.process is not None
        assert os.getpgid(pid) == ran.process.pid != other.process.pid, (job_id, owner)
        assert f"job {job_id}: attempt 1 as {owner}" in ran.log
        assert job_id not in other.log


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_redis_restart_mid_queue_loses_no_accepted_job(env: Env, stop: str) -> None:
    # Submitted before any worker is live, the first two jobs (K = 2) go to the broker, as
    # the scheduler does for a queue without a live worker; the third waits in the store.
    jobs = [env.submit(max_steps=400) for _ in range(3)]
    env.worker()
    env.wait_step(jobs[0]["id"], 50)
    # Mid-queue: the first job runs (prefetch 1), the others wait; the next one's message
    # exists only in Redis, so its surviving the restart is what this test checks.
    assert [env.job(j["id"])["status"] for j in jobs] == ["running", "queued", "queued"]
    waiting = env.broker_queue("cpu")
    assert any(jobs[1]["id"].encode() in m for m in waiting), waiting
    if stop == "sigterm":
        env.redis.stop()  # Redis flushes its AOF and exits
    else:
        env.kill_redis_hard()
    time.sleep(2)
    env.redis.start()  # same port, same folder: it reloads its AOF
    restarted = time.monotonic()
    finished = [wait_for_job(env.client, j["id"], timeout=180) for j in jobs]
    print(f"\nall {len(jobs)} jobs finished {time.monotonic() - restarted:.1f}s after restart")
    assert [j["status"] for j in finished] == ["succeeded"] * 3, [j["error"] for j in finished]
    assert all(j["progress"]["global_step"] == 400 for j in finished)
    # Each job ran exactly once: one attempt, one `running` transition, no requeue (the
    # queued ones ran from the messages Redis kept: the reconciler resends a queued
    # job only after the visibility timeout, an hour here), and one export.
    for job in finished:
        assert job["attempts"] == 1, job
        assert env.transitions(job["id"]) == ["queued", "running", "succeeded"]
        assert len(env.exports(job)) == 1, env.exports(job)


def test_post_convert_with_redis_down_is_503_and_keeps_nothing(env: Env) -> None:
    env.redis.stop()
    try:
        started = time.monotonic()
        spec = {"keras_model_path": env.model, "train": {"dataset": env.data, "max_steps": 5}}
        response = env.client.post("/convert", json=spec)
        took = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert took < 15
        assert env.client.get("/readyz").status_code == 503
        assert env.client.get("/jobs").json()["items"] == []
    finally:
        env.redis.start()
    assert env.client.get("/readyz").status_code == 200


def test_api_restart_mid_job_loses_nothing(env: Env) -> None:
    env.worker()
    port = free_port()

    started: list[subprocess.Popen[bytes]] = []

    def api() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            die_with_the_suite(api_command("127.0.0.1", port)),
            cwd=ROOT,
            env=worker_env(env.settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return process
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the API did not start")

    try:
        first = api()
        spec = {"keras_model_path": env.model, "train": {"dataset": env.data, "max_steps": 3000}}
        job = httpx.post(f"http://127.0.0.1:{port}/convert", json=spec, headers=ADMIN).json()
        first.kill()
        first.wait()
        api()
        deadline = time.monotonic() + 300
        while True:
            final = httpx.get(f"http://127.0.0.1:{port}/jobs/{job['id']}", headers=ADMIN).json()
            if final["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert final["status"] == "succeeded", final["error"]
        assert final["progress"]["global_step"] == 3000
    finally:
        for process in started:
            stop_group(process)
