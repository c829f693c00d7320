"""Preemption and borrowing decided by the scheduler, with real worker processes, real
Redis and real TensorFlow: a `high` job takes the only worker from a running `low` job at
a checkpoint the low job saves as it stops, and the low job goes on from exactly there
to its max_steps; a tenant submitting within its share takes back the slot another
tenant borrowed, not the one within that tenant's share; a worker killed while a
preemption is asked for loses nothing and runs nothing twice.

Run with ``-s`` to see the preemption's timeline from the event streams.
"""

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator

import pytest

from k2e.client.sse import iter_events
from k2e.jobs.job_store import JobStore
from k2e.tenancy.scope import ANY_TENANT
from tests.support.api_keys import ADMIN, bearer, new_tenant
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Long enough that no job is preempted twice while a test runs.
COOLDOWN_S = 600.0
REGISTRY_BEAT_S = 2.0
INTERVAL = 200  # save_checkpoints_steps
RESTORING = re.compile(r"Restoring parameters from (.+)-(\d+)\s*$")
PREEMPTED_AT = re.compile(r"^preempted: queued again, it resumes from step (\d+)$")
# What the timeline shows of the log lines (and the checkpoint a preemption saved).
TIMELINE_LOGS = re.compile(r"asked to yield|Restoring parameters")


class Caller:
    """A key of one tenant, with its own model and dataset uploaded."""

    def __init__(self, env: Env, headers: dict[str, str]) -> None:
        self.env, self.headers = env, headers
        h5 = env.root / "seed.h5"
        self.model = self._upload("/models", "seed.h5", h5.read_bytes())
        npz = keras_models.npz_bytes(keras_models.seed_multi_io_data(n=512))
        self.data = self._upload("/datasets", "d.npz", npz)

    def _upload(self, path: str, name: str, content: bytes) -> str:
        response = self.env.client.post(path, files={"file": (name, content)}, headers=self.headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def submit(self, max_steps: int, priority: str) -> str:
        spec = {
            "keras_model_path": self.model,
            "priority": priority,
            "config": {"save_checkpoints_steps": INTERVAL, "log_step_count_steps": 50},
            "train": {"dataset": self.data, "max_steps": max_steps, "batch_size": 64},
            "eval": {"dataset": self.data, "steps": 2},
            "export": False,
        }
        response = self.env.client.post("/convert", json=spec, headers=self.headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict:
        response = self.env.client.get(f"/jobs/{job_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_status(self, job_id: str, wanted: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] == wanted:
                return job
            assert job["status"] not in ("succeeded", "failed", "cancelled"), job
            assert time.monotonic() < deadline, f"job {job_id} never {wanted}: {job}"
            time.sleep(0.05)

    def wait_step(self, job_id: str, step: int, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] == "running" and job["progress"]["global_step"] >= step:
                return job
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, f"job {job_id} never reached step {step}: {job}"
            time.sleep(0.05)

    def stream(self, job_id: str) -> list[tuple[str, dict]]:
        """GET /jobs/{id}/events of an ended job: its whole history, then `end`."""
        response = self.env.client.get(
            f"/jobs/{job_id}/events", headers={**self.headers, "Accept": "text/event-stream"}
        )
        assert response.status_code == 200, response.text
        return [(e.event, json.loads(e.data)) for e in iter_events([response.text])]

    def checkpoints(self, job_id: str) -> list[int]:
        response = self.env.client.get(f"/jobs/{job_id}/checkpoints", headers=self.headers)
        assert response.status_code == 200, response.text
        return [c["step"] for c in response.json()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One worker process with one job slot (the borrowing test adds one); yield
    requests are seen within a heartbeat (0.5 s), a preempted job may not be preempted
    again within the module, and a killed worker's slot stops counting after 6 s."""
    root = tmp_path_factory.mktemp("preemption")
    with pytest.MonkeyPatch.context() as monkeypatch:
        # The workers' settings (through their environment) and the API's.
        monkeypatch.setenv("K2E_PREEMPT_COOLDOWN_S", str(COOLDOWN_S))
        monkeypatch.setenv("K2E_WORKER_HEARTBEAT_S", str(REGISTRY_BEAT_S))
        env = Env(
            root,
            preempt_cooldown_s=COOLDOWN_S,
            worker_heartbeat_s=REGISTRY_BEAT_S,
            **FAST_RECOVERY,
        )
        try:
            env.worker()
            yield env
        finally:
            env.close()


def _running_starts(stream: list[tuple[str, dict]]) -> list[int]:
    return [i for i, (kind, data) in enumerate(stream) if _status(kind, data) == "running"]


def _status(kind: str, data: dict) -> str | None:
    return str(data["status"]) if kind == "status" else None


def _started(stream: list[tuple[str, dict]]) -> list[str]:
    return [str(d["at"]) for k, d in stream if _status(k, d) == "running"]


def _ended(stream: list[tuple[str, dict]]) -> str:
    [at] = [str(d["at"]) for k, d in stream if _status(k, d) == "succeeded"]
    return at


def _transitions(stream: list[tuple[str, dict]]) -> list[str]:
    return [data["status"] for kind, data in stream if kind == "status"]


def _restored(stream: list[tuple[str, dict]]) -> list[int]:
    return [
        int(m.group(2))
        for kind, data in stream
        if kind == "log" and (m := RESTORING.search(data["message"]))
    ]


def _progress_steps(stream: list[tuple[str, dict]]) -> list[int]:
    return [int(data["global_step"]) for kind, data in stream if kind == "progress"]


def _timeline(streams: dict[str, list[tuple[str, dict]]], saved: int) -> str:
    """The jobs' status events, the log lines about yielding and restoring, the save of
    the checkpoint at step ``saved``, and every fifth progress event, in time order."""
    logs = re.compile(rf"{TIMELINE_LOGS.pattern}|Saving checkpoints for {saved} ")
    rows: list[tuple[str, str, str]] = []
    for name, stream in streams.items():
        progress = 0
        for kind, data in stream:
            if kind == "status":
                rows.append((data["at"], name, f"status {data['status']}: {data['message']}"))
            elif kind == "log" and logs.search(data["message"]):
                message = re.sub(r"/\S*/(model\.ckpt)", r"…/\1", data["message"])
                rows.append((data["at"], name, f"log    {message[:110]}"))
            elif kind == "progress":
                progress += 1
                if progress % 5 == 1:
                    rows.append((data["at"], name, f"progress step {data['global_step']}"))
    rows.sort(key=lambda row: row[0])  # stable: a batch of log lines keeps its order
    return "\n".join(f"{at[11:23]}  {name:<6} {text}" for at, name, text in rows)


def _ends_whole(caller: Caller, job_id: str, max_steps: int) -> dict:
    done = wait_for_job(caller.env.client, job_id, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["global_step"] == max_steps
    assert done["metrics"]["eval"]["global_step"] == max_steps
    steps = caller.checkpoints(job_id)
    assert steps == sorted(set(steps)), steps
    assert steps[-1] == max_steps, steps
    return done


LOW_STEPS, HIGH_STEPS = 4000, 300


@pytest.mark.parametrize("owner", ["same tenant", "another tenant"])
def test_a_high_job_preempts_a_low_one_at_a_checkpoint_and_the_low_one_ends_whole(
    cluster: Env, owner: str
) -> None:
    env = cluster
    low_caller = Caller(env, ADMIN)
    if owner == "same tenant":
        high_caller = low_caller
    else:  # a tenant of share 0: the low job's slot is beyond its tenant's share
        high_caller = Caller(env, bearer(new_tenant(env.client, "urgent")))
    low = low_caller.submit(LOW_STEPS, "low")
    before = low_caller.wait_step(low, 2 * INTERVAL + 50)
    assert before["preemptions"] == 0
    assert low_caller.checkpoints(low)  # an interval checkpoint exists already
    high = high_caller.submit(HIGH_STEPS, "high")
    waiting = high_caller.job(high)
    if waiting["status"] == "queued" and waiting["scheduling"]["waiting_for"] != "pickup":
        assert waiting["scheduling"] == {"position": 1, "priority": "high", "waiting_for": "slot"}

    preempted = low_caller.wait_status(low, "queued", timeout=60)
    assert preempted["preemptions"] == 1
    assert preempted["scheduling"]["priority"] == "low"
    at = preempted["progress"]["global_step"]
    assert 2 * INTERVAL < at < LOW_STEPS
    # The preemption saved a checkpoint of its own at the step the job stopped.
    assert low_caller.checkpoints(low)[-1] == at

    high_done = _ends_whole(high_caller, high, HIGH_STEPS)
    assert high_done["preemptions"] == 0
    # Resumed, within the cool-down: another high job waits for it rather than preempt
    # it again.
    low_caller.wait_step(low, at + 100)
    second = high_caller.submit(HIGH_STEPS, "high")
    low_done = _ends_whole(low_caller, low, LOW_STEPS)
    assert low_done["preemptions"] == 1
    _ends_whole(high_caller, second, HIGH_STEPS)

    low_stream, high_stream = low_caller.stream(low), high_caller.stream(high)
    second_stream = high_caller.stream(second)
    print(f"\n-- preemption timeline ({owner}): low {low}, high {high}, high2 {second}")
    print(_timeline({"low": low_stream, "high": high_stream, "high2": second_stream}, at))
    assert _transitions(low_stream) == ["queued", "running", "queued", "running", "succeeded"]
    assert _transitions(high_stream) == ["queued", "running", "succeeded"]
    notes = [data["message"] for kind, data in low_stream if kind == "status"]
    [note] = [n for n in notes if PREEMPTED_AT.match(n)]
    assert int(PREEMPTED_AT.match(note).group(1)) == at  # type: ignore[union-attr]
    # It names no other job nor tenant.
    assert high not in note
    assert "urgent" not in note
    assert "tenant" not in note
    # The high job started only after the low one had yielded; the second high job only
    # after the low one had ended.
    yielded = next(d["at"] for k, d in low_stream if k == "status" and d["message"] == note)
    assert yielded <= _started(high_stream)[0]
    assert _ended(low_stream) <= _started(second_stream)[0]
    # Steps redone: 0. The second attempt restored exactly the step the first stopped at.
    resumed = _running_starts(low_stream)[1]
    assert _restored(low_stream[resumed:])[0] == at
    steps = _progress_steps(low_stream)
    assert steps == sorted(steps), steps
    assert steps[-1] == LOW_STEPS
    curve = [point["step"] for point in low_done["metrics"]["train"]]
    assert curve == sorted(set(curve)), curve


def test_a_worker_killed_while_its_job_is_preempted_loses_nothing_and_runs_nothing_twice(
    cluster: Env,
) -> None:
    """The worker is frozen (SIGSTOP) before the high job's submission asks its job to
    yield, then killed (SIGKILL): the request is never seen, nothing is released. A new
    worker's reconciler queues the job again once its lease ran out; it resumes from its
    newest checkpoint, and both jobs end succeeded, each run by one attempt at a time."""
    env = cluster
    caller = Caller(env, ADMIN)
    [frozen] = [w for w in env.workers if w.process is not None and w.process.poll() is None]
    low = caller.submit(LOW_STEPS, "low")
    caller.wait_step(low, 2 * INTERVAL + 50)
    assert frozen.process is not None
    _freeze(frozen.process.pid, env.settings.sqlalchemy_url)
    try:
        high = caller.submit(HIGH_STEPS, "high")
        store = JobStore(env.settings.sqlalchemy_url)
        try:
            asked = store.get(low, ANY_TENANT)
        finally:
            store.engine.dispose()
        assert asked.status.value == "running"
        assert asked.yield_request == "preempt"
    finally:
        frozen.kill_hard()
    left = caller.checkpoints(low)[-1]  # what the killed attempt saved last
    reported = caller.job(low)["progress"]["global_step"]
    env.worker()

    low_done = _ends_whole(caller, low, LOW_STEPS)
    high_done = _ends_whole(caller, high, HIGH_STEPS)
    assert high_done["preemptions"] == 0
    assert low_done["preemptions"] == 1
    low_stream = caller.stream(low)
    print(f"\n-- killed while preempted: {_transitions(low_stream)}; resumed from {left}")
    assert _transitions(low_stream) == ["queued", "running", "queued", "running", "succeeded"]
    assert "preempted: queued again (worker_lost)" in [
        d["message"] for k, d in low_stream if k == "status"
    ]
    assert _transitions(caller.stream(high)) == ["queued", "running", "succeeded"]
    # Two attempts of the low job, one after the other, by different workers.
    owners = [d["message"] for k, d in low_stream if _status(k, d) == "running"]
    assert len(set(owners)) == 2, owners
    # The new attempt went on from the newest checkpoint the killed one left: it redid
    # at most the steps since then (less than a checkpoint interval).
    resumed = _running_starts(low_stream)[1]
    assert _restored(low_stream[resumed:])[0] == left
    assert reported - left < INTERVAL
    # Its loss curve has one point per step, in step order, the steps trained again
    # included once.
    curve = [point["step"] for point in low_done["metrics"]["train"]]
    assert curve == sorted(set(curve)), curve


def _freeze(group: int, url: str) -> None:
    """SIGSTOP the worker's processes at a moment none of them holds the store's write
    lock (SQLite): a frozen writer would lock the API out."""
    path = url.removeprefix("sqlite:///")
    for _ in range(100):
        os.killpg(group, signal.SIGSTOP)
        probe = sqlite3.connect(path, timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            os.killpg(group, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the worker always held the store's write lock")


def _new_tenant(env: Env, name: str) -> Caller:
    """A tenant guaranteed one slot of the cpu queue that may borrow more."""
    body = {"name": name, "quotas": {"share": {"cpu": 1}, "borrow": True}}
    created = env.client.post("/tenants", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["quotas"]["share"] == {"cpu": 1, "gpu": 0}
    key = env.client.post(f"/tenants/{name}/keys", json={"name": f"{name} member"})
    assert key.status_code == 201, key.text
    return Caller(env, bearer(key.json()["key"]))


def _cpu_queue(env: Env) -> dict:
    [cpu] = [q for q in env.client.get("/queues").json() if q["name"] == "cpu"]
    return dict(cpu)


def test_a_tenant_within_its_share_takes_back_the_borrowed_slot_not_the_guaranteed_one(
    cluster: Env,
) -> None:
    env = cluster
    env.worker()  # two workers of one slot each: two cpu slots
    deadline = time.monotonic() + 30
    while _cpu_queue(env)["slots"] != 2:
        assert time.monotonic() < deadline, _cpu_queue(env)
        time.sleep(0.2)
    a, b = _new_tenant(env, "team-a"), _new_tenant(env, "team-b")
    first, second = a.submit(LOW_STEPS, "normal"), a.submit(LOW_STEPS, "normal")
    for job_id in (first, second):
        a.wait_step(job_id, INTERVAL + 50, timeout=180)
    cpu = _cpu_queue(env)
    assert (cpu["running"], cpu["borrowed"]) == (2, 1), cpu
    # The slot A took last is the borrowed one: the one given back.
    started = {job_id: a.job(job_id)["started_at"] for job_id in (first, second)}
    guaranteed, borrowed = sorted(started, key=lambda job_id: started[job_id])

    theirs = b.submit(HIGH_STEPS, "normal")
    reclaimed = a.wait_status(borrowed, "queued", timeout=60)
    assert reclaimed["preemptions"] == 1
    assert a.job(guaranteed)["status"] == "running"
    b_done = _ends_whole(b, theirs, HIGH_STEPS)
    assert b_done["preemptions"] == 0
    kept = _ends_whole(a, guaranteed, LOW_STEPS)
    assert kept["preemptions"] == 0
    assert _transitions(a.stream(guaranteed)) == ["queued", "running", "succeeded"]
    given_back = _ends_whole(a, borrowed, LOW_STEPS)
    assert given_back["preemptions"] == 1
    stream = a.stream(borrowed)
    assert _transitions(stream) == ["queued", "running", "queued", "running", "succeeded"]
    [note] = [d["message"] for k, d in stream if k == "status" and PREEMPTED_AT.match(d["message"])]
    assert "team-b" not in note
    assert theirs not in note
    at = int(PREEMPTED_AT.match(note).group(1))  # type: ignore[union-attr]
    assert _restored(stream[_running_starts(stream)[1] :])[0] == at
    steps = _progress_steps(stream)
    assert steps == sorted(steps), steps
    # B's job took the slot A gave back, not a third one.
    assert _started(b.stream(theirs))[0] >= next(
        d["at"] for k, d in stream if k == "status" and d["message"] == note
    )
