"""`make run` (``python -m k2e.launcher``) supervises what it starts: its embedded Redis,
SIGKILLed while jobs are queued, comes back on the same port from its append-only file
and every job still finishes; SIGTERM stops the whole stack within a bound."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from k2e.launcher.embedded_redis import free_port
from tests.support.api_keys import ADMIN
from tests.support.checkout import ROOT
from tests.support.child_processes import die_with_the_suite, stop_group

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_LINE = re.compile(r"embedded Redis on redis://127\.0\.0\.1:(\d+)/0")
STOP_BOUND_S = 40.0


def children_of(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (from /proc), sessions of their own included."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def redis_pid(launcher: int, port: int) -> int | None:
    for pid in children_of(launcher):
        line = cmdline(pid)
        if "redis-server" in line and str(port) in line:
            return pid
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_make_run_restarts_its_redis_and_stops_within_a_bound(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "K2E_REDIS_URL", "DATABASE_URL", "K2E_DATABASE_URL")
    }
    env.update(
        K2E_DATA_DIR=str(tmp_path / "data"),
        K2E_API_PORT=str(port),
        K2E_RECONCILE_INTERVAL_S="2",
        PYTHONUNBUFFERED="1",
    )
    assert env.get("K2E_ADMIN_KEY"), "tests/conftest.py sets the suite's admin key"
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log:
        launcher = subprocess.Popen(
            die_with_the_suite([sys.executable, "-m", "k2e.launcher"]),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        redis_port = int(
            wait_for(lambda: REDIS_LINE.search(log_path.read_text()), 60, "Redis").group(1)
        )
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=30)

        def api_up() -> bool:
            try:
                return api.get("/healthz").status_code < 500
            except httpx.HTTPError:
                return False

        wait_for(api_up, 120, "the API")
        wait_for(
            lambda: "worker process ready: TensorFlow loaded" in log_path.read_text(),
            240,
            "the worker",
        )
        h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
        model = api.post("/models", files={"file": ("seed.h5", h5.read_bytes())})
        assert model.status_code == 201, model.text
        data = api.post(
            "/datasets",
            files={
                "file": ("d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data(n=256)))
            },
        )
        assert data.status_code == 201, data.text
        spec = {
            "keras_model_path": model.json()["id"],
            "train": {"dataset": data.json()["id"], "max_steps": 40, "batch_size": 32},
        }
        jobs = []
        for _ in range(4):
            response = api.post("/convert", json=spec)
            assert response.status_code == 202, response.text
            jobs.append(response.json()["id"])

        old = redis_pid(launcher.pid, redis_port)
        assert old is not None, "the launcher's redis-server"
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()

        def back() -> bool:
            new = redis_pid(launcher.pid, redis_port)
            if new is None or new == old:
                return False
            try:
                return bool(redis.Redis(port=redis_port, socket_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_for(back, 30, "Redis back on its port")
        print(f"\nRedis back on port {redis_port} {time.monotonic() - killed:.1f} s after SIGKILL")

        def all_ended() -> list[dict] | None:
            states = [api.get(f"/jobs/{job_id}").json() for job_id in jobs]
            ended = all(s["status"] in ("succeeded", "failed", "cancelled") for s in states)
            return states if ended else None

        states = wait_for(all_ended, 600, "every job to end")
        print(f"all {len(jobs)} jobs ended {time.monotonic() - killed:.1f} s after the kill")
        assert [s["status"] for s in states] == ["succeeded"] * len(jobs), states

        stack = children_of(launcher.pid)
        assert stack, "the launcher's children"
        launcher.send_signal(signal.SIGTERM)
        started = time.monotonic()
        launcher.wait(STOP_BOUND_S)
        wait_for(lambda: not any(alive(p) for p in stack), 15, "every child to exit")
        took = time.monotonic() - started
        print(f"SIGTERM stopped the stack ({len(stack)} processes) in {took:.1f} s")
        assert took < STOP_BOUND_S
    finally:
        # The launcher stops its stack on SIGTERM; whatever it left (its servers run in
        # sessions of their own) is killed here.
        leftovers = children_of(launcher.pid)
        stop_group(launcher, grace_s=STOP_BOUND_S)
        for pid in leftovers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in children_of(launcher.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(log_path.read_text()[-3000:] if log_path.exists() else "")


def test_make_run_starts_local_workers_with_one_slot_each(tmp_path: Path) -> None:
    """K2E_LOCAL_WORKERS=2: two worker processes, each its own Celery node with one job
    slot; the queue counts both, a cluster larger than that is refused, and SIGTERM stops
    them all."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "K2E_REDIS_URL", "DATABASE_URL", "K2E_DATABASE_URL")
    }
    env.update(
        K2E_DATA_DIR=str(tmp_path / "data"),
        K2E_API_PORT=str(port),
        K2E_LOCAL_WORKERS="2",
        K2E_WORKER_HEARTBEAT_S="1",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log:
        launcher = subprocess.Popen(
            die_with_the_suite([sys.executable, "-m", "k2e.launcher"]),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=30)

        def cpu_slots() -> int:
            try:
                queues = api.get("/queues").json()
            except (httpx.HTTPError, ValueError):
                return 0
            return sum(q["slots"] for q in queues if q["name"] == "cpu")

        wait_for(lambda: cpu_slots() == 2, 300, "two live workers of one slot each")
        nodes = sorted(
            m.group(1)
            for pid in children_of(launcher.pid)
            if (m := re.search(r"celery .*-n (k2e-\d+@%h)", cmdline(pid)))
            and "--concurrency 1" in cmdline(pid)
        )
        # Each node's main process (its pool child has the same command line).
        assert sorted(set(nodes)) == ["k2e-1@%h", "k2e-2@%h"], nodes
        assert "2 worker processes (one job slot each)" in log_path.read_text()

        h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
        model = api.post("/models", files={"file": ("seed.h5", h5.read_bytes())})
        data = api.post(
            "/datasets",
            files={"file": ("d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data()))},
        )
        assert model.status_code == data.status_code == 201, (model.text, data.text)
        spec = {
            "keras_model_path": model.json()["id"],
            "train": {"dataset": data.json()["id"], "max_steps": 10},
            "distribution": {"workers": 2, "parameter_servers": 1},
        }
        refused = api.post("/convert", json=spec)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["distribution"]
        assert "the live workers of queue 'cpu' have 2" in refused.json()["detail"]

        stack = children_of(launcher.pid)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(STOP_BOUND_S)
        wait_for(lambda: not any(alive(p) for p in stack), 15, "every child to exit")
    finally:
        leftovers = children_of(launcher.pid)
        stop_group(launcher, grace_s=STOP_BOUND_S)
        for pid in leftovers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        print(log_path.read_text()[-3000:] if log_path.exists() else "")
